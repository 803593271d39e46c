//! Types several Istio kinds share, with the validation Istio applies to them.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues, Validate};

/// CEL rule Istio puts on every duration field; the API server enforces it, [`Issues::duration`] mirrors it.
pub const DURATION_RULE: &str = "duration(self) >= duration('1ms')";
/// Message of [`DURATION_RULE`].
pub const DURATION_MESSAGE: &str = "must be a valid duration greater than 1ms";
/// CEL rule for a port number field.
pub const PORT_RULE: &str = "0 < self && self <= 65535";
/// Message of [`PORT_RULE`].
pub const PORT_MESSAGE: &str = "port must be between 1-65535";

/// CEL rule of the security kinds: at most one of `selector`, `targetRef`, `targetRefs`.
pub const TARGETING_RULE: &str =
    "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1";
/// Message of [`TARGETING_RULE`], also used by [`validate_targeting`].
pub const TARGETING_MESSAGE: &str = "only one of targetRefs or selector can be set";

/// Pattern Istio (and the Gateway API) puts on `targetRef.group`: empty, or a DNS subdomain.
pub const TARGET_GROUP_PATTERN: &str = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern Istio (and the Gateway API) puts on `targetRef.kind`.
pub const TARGET_KIND_PATTERN: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";

/// Labels as Kubernetes writes them.
pub type Labels = BTreeMap<String, String>;

/// Match on a string: exactly one of `exact`, `prefix` or `regex` (RE2 syntax).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.regex) ? 1 : 0) <= 1").message("only one of exact, prefix or regex can be set"))]
pub struct StringMatch {
    /// The whole string equals this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The string starts with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole string matches this RE2 regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl Validate for StringMatch {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let set = [&self.exact, &self.prefix, &self.regex].iter().filter(|v| v.is_some()).count();
        if set > 1 {
            issues.error(path, "only one of exact, prefix or regex can be set");
        }
        issues.regex(&path.key("regex"), self.regex.as_deref());
    }
}

/// A percentage, `0.0` to `100.0`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

impl Validate for Percent {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(value) = self.value
            && !(0.0..=100.0).contains(&value)
        {
            issues.error(&path.key("value"), format!("percentage {value} must be between 0 and 100"));
        }
    }
}

/// Selects workloads by their pod labels (security kinds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry (all of them) to be selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new("self.all(key, !key.contains('*'))").message("wildcard not allowed in label key match"))]
    #[x_kube(validation = kube::core::cel::Rule::new("self.all(key, key.size() != 0)").message("key must not be empty"))]
    #[schemars(extend(
        "maxProperties" = 4096,
        "additionalProperties" = {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{"rule": "!self.contains('*')", "message": "wildcard not allowed in label value match"}]
        }
    ))]
    pub match_labels: Option<Labels>,
}

impl Validate for WorkloadSelector {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        issues.selector_labels(&path.key("matchLabels"), self.match_labels.as_ref());
    }
}

/// A reference to the Kubernetes object a policy attaches to (Gateway API style).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target; empty for the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = TARGET_GROUP_PATTERN))]
    pub group: Option<String>,
    /// Kind of the target, such as `Service` or `Gateway`.
    #[schemars(length(min = 1, max = 63), regex(pattern = TARGET_KIND_PATTERN))]
    pub kind: String,
    /// Name of the target.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the target; must be the policy's own (empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new("self.size() == 0").message("cross namespace referencing is not currently supported"))]
    pub namespace: Option<String>,
}

impl Validate for PolicyTargetReference {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(group) = self.group.as_deref()
            && !is_target_group(group)
        {
            let message =
                format!("group {group:?} must be empty or a DNS subdomain (lower-case letters, digits, '-', '.')");
            issues.error(&path.key("group"), message);
        }
        if self.kind.is_empty() {
            issues.error(&path.key("kind"), "kind must not be empty");
        } else if !is_target_kind(&self.kind) {
            let message =
                format!("kind {:?} must start with a letter and hold only letters, digits and inner '-'", self.kind);
            issues.error(&path.key("kind"), message);
        }
        if self.name.is_empty() {
            issues.error(&path.key("name"), "name must not be empty");
        }
        if self.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
            issues.error(&path.key("namespace"), "cross namespace referencing is not currently supported");
        }
    }
}

/// Whether `group` matches [`TARGET_GROUP_PATTERN`].
fn is_target_group(group: &str) -> bool {
    let label = |l: &str| {
        let bytes = l.as_bytes();
        !bytes.is_empty()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-')
    };
    group.is_empty() || group.split('.').all(label)
}

/// Whether `kind` matches [`TARGET_KIND_PATTERN`].
fn is_target_kind(kind: &str) -> bool {
    let bytes = kind.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// Checks the `selector` / `targetRef` / `targetRefs` trio that the security kinds share: at most one.
pub fn validate_targeting(
    path: &FieldPath,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: Option<&Vec<PolicyTargetReference>>,
    issues: &mut Issues,
) {
    let set = [selector.is_some(), target_ref.is_some(), target_refs.is_some()].iter().filter(|s| **s).count();
    if set > 1 {
        issues.error(path, TARGETING_MESSAGE);
    }
    if let Some(refs) = target_refs
        && refs.len() > 16
    {
        issues.error(&path.key("targetRefs"), "at most 16 targetRefs can be set");
    }
    selector.validate(&path.key("selector"), issues);
    target_ref.validate(&path.key("targetRef"), issues);
    if let Some(refs) = target_refs {
        refs.validate(&path.key("targetRefs"), issues);
    }
}

impl<T: Validate> Validate for &T {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        (*self).validate(path, issues);
    }
}
