//! `PeerAuthentication` (security.istio.io): which mutual-TLS mode a workload's inbound side accepts.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::WorkloadSelector;
use crate::{FieldPath, Issues, Validate, status::Status};

/// How strictly inbound connections must use mutual TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    /// Plain text only.
    Disable,
    /// Mutual TLS and plain text are both accepted.
    Permissive,
    /// Only mutual TLS is accepted.
    Strict,
}

/// The mutual-TLS setting of one scope or port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationMutualTls {
    /// The mode; unset inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Mutual-TLS requirements for the workloads it selects (or the whole namespace, or the mesh when in
/// the root namespace).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    namespaced,
    status = "Status",
    shortname = "pa",
    category = "istio-io",
    category = "security-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true").message("portLevelMtls requires selector"))]
pub struct PeerAuthenticationSpec {
    /// Workloads this applies to; all of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for every port not listed in `portLevelMtls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerAuthenticationMutualTls>,
    /// Per-port overrides, keyed by the workload's port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1))]
    #[x_kube(validation = kube::core::cel::Rule::new("self.all(key, 0 < int(key) && int(key) <= 65535)").message("port must be between 1-65535"))]
    pub port_level_mtls: Option<BTreeMap<String, PeerAuthenticationMutualTls>>,
}

impl Validate for PeerAuthenticationSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        self.selector.validate(&path.key("selector"), issues);
        if let Some(ports) = &self.port_level_mtls {
            let at = path.key("portLevelMtls");
            if ports.is_empty() {
                issues.error(&at, "portLevelMtls must name at least one port");
            }
            for key in ports.keys() {
                if !key.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                    issues.error(&at.key(key), format!("port {key:?} must be a number between 1-65535"));
                }
            }
            let has_labels =
                self.selector.as_ref().and_then(|s| s.match_labels.as_ref()).is_some_and(|l| !l.is_empty());
            if !has_labels {
                issues.error(&at, "portLevelMtls requires a selector with matchLabels");
            }
        }
    }
}
