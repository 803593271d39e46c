//! `AuthorizationPolicy` (security.istio.io): which requests a workload allows, denies, audits or hands to an
//! external authorizer.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PolicyTargetReference, TARGETING_MESSAGE, TARGETING_RULE, WorkloadSelector};
use crate::status::Status;

mod validate;

pub(super) use validate::values::non_empty_entries;

/// What happens to a request that matches a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Let matching requests through (the default); once any ALLOW policy selects a workload, others are denied.
    #[default]
    Allow,
    /// Reject matching requests.
    Deny,
    /// Log matching requests for audit; does not change the decision.
    Audit,
    /// Ask the external authorizer named by `provider` about matching requests.
    Custom,
}

/// The external authorizer a CUSTOM policy delegates to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Name of an extension provider declared in the mesh configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who sent a request; every field set must match (AND), any value of one field may match (OR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true").message("Cannot set serviceAccounts with namespaces or principals"))]
pub struct Source {
    /// Peer identities (mutual TLS), such as `cluster.local/ns/default/sa/sleep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    /// Peer identities that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_principals: Option<Vec<String>>,
    /// JWT principals, `<issuer>/<subject>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_principals: Option<Vec<String>>,
    /// JWT principals that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_request_principals: Option<Vec<String>>,
    /// Namespaces of the peer (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces of the peer that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_namespaces: Option<Vec<String>>,
    /// Peer service accounts, `serviceAccount` or `namespace/serviceAccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16), inner(length(max = 320)))]
    pub service_accounts: Option<Vec<String>>,
    /// Peer service accounts that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16), inner(length(max = 320)))]
    pub not_service_accounts: Option<Vec<String>>,
    /// Source IPs or CIDR ranges of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_blocks: Option<Vec<String>>,
    /// Source IPs or CIDR ranges that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ip_blocks: Option<Vec<String>>,
    /// Original client IPs or CIDR ranges (X-Forwarded-For or PROXY protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_blocks: Option<Vec<String>>,
    /// Original client IPs or CIDR ranges that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_remote_ip_blocks: Option<Vec<String>>,
    /// Trust domains of the peer identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domains: Option<Vec<String>>,
    /// Trust domains of the peer identity that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_trust_domains: Option<Vec<String>>,
}

/// What a request asks for; every field set must match (AND), any value of one field may match (OR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (`:authority`), `*` prefix or suffix wildcards allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Hosts that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_hosts: Option<Vec<String>>,
    /// Destination ports, as decimal strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    /// Destination ports that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ports: Option<Vec<String>>,
    /// HTTP methods (`GET`), or gRPC's `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// HTTP methods that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_methods: Option<Vec<String>>,
    /// Paths: exact, `*` prefix or suffix wildcards, or `{*}` / `{**}` path templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Paths that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_paths: Option<Vec<String>>,
}

/// One `from` entry of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One `to` entry of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// An extra condition on a request attribute (see Istio's list of condition keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute, such as `request.headers[User-Agent]` or `source.ip`.
    pub key: String,
    /// Values of which one must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Values none of which may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_values: Option<Vec<String>>,
}

/// A request matches a rule when it matches any `from`, any `to` and every `when` (absent lists match all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources, any of which may match; all sources when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 512))]
    pub from: Option<Vec<RuleFrom>>,
    /// Operations, any of which may match; all operations when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    /// Conditions, all of which must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<Condition>>,
}

/// Access control for the workloads it selects (or the whole namespace, or the mesh in the root namespace).
///
/// An ALLOW policy whose `rules` is present but empty (`rules: []`) is valid and matches no request,
/// so it denies everything on the workloads it selects; a policy with `rules` absent matches nothing
/// either, and `rules: [{}]` matches every request.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    namespaced,
    status = "Status",
    shortname = "ap",
    category = "istio-io",
    category = "security-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new(TARGETING_RULE).message(TARGETING_MESSAGE))]
pub struct AuthorizationPolicySpec {
    /// Workloads this applies to; all of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The object (such as a Gateway) this applies to; deprecated in favour of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The objects (such as Gateways or Services) this applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16))]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// The rules; a request matching any of them gets `action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 512))]
    // `self::` because the schema derive brings kube's CEL `Rule` into scope.
    pub rules: Option<Vec<self::Rule>>,
    /// What to do with matching requests; ALLOW when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The external authorizer; only with the CUSTOM action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// The action in force: `action`, or ALLOW when absent.
    pub fn effective_action(&self) -> Action {
        self.action.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
