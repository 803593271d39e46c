//! `RateLimitPolicy` (trellis.dev): local rate limits on the inbound side of the workloads it selects.
//!
//! Istio has no first-class API for local rate limiting (its users write an EnvoyFilter for Envoy's
//! `local_ratelimit` filter); this kind says the same thing in a few lines. Each rule is a token bucket
//! as Envoy's `TokenBucket` has it (`maxTokens` is the burst and the initial fill, `tokensPerFill` are
//! added every `fillInterval`), with an optional match on the request (paths in Istio's exact,
//! `prefix*` and `*suffix` forms, methods, ports). The first rule that matches a request decides; a
//! request finding its bucket empty is answered `429` (or `statusCode`) with `retry-after`, and with the
//! `x-ratelimit-*` quota headers (on allowed responses too) only when the rule sets `quotaHeaders`. Scope is
//! that of the Istio security kinds: a selector picks workloads of the policy's namespace, no selector
//! means all of them, and a policy in the root namespace applies to the whole mesh.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::istio::common::WorkloadSelector;
use crate::{FieldPath, Issues, Validate, duration, status::Status};

#[cfg(test)]
mod tests;

/// Status of a limited request when a rule names none (Envoy's default, Too Many Requests).
pub const DEFAULT_STATUS_CODE: u16 = 429;
/// Tokens added per fill when a rule names none (Envoy's default).
pub const DEFAULT_TOKENS_PER_FILL: u32 = 1;
/// Shortest fill interval Envoy's local rate limit accepts.
pub const MIN_FILL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// CEL rule on `fillInterval`, mirroring [`MIN_FILL_INTERVAL`].
pub const FILL_INTERVAL_RULE: &str = "duration(self) >= duration('50ms')";
/// Message of [`FILL_INTERVAL_RULE`].
pub const FILL_INTERVAL_MESSAGE: &str = "fillInterval must be a valid duration of at least 50ms";

/// A token bucket, as Envoy's `type.v3.TokenBucket`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBucket {
    /// Most tokens the bucket holds: the burst, and what the bucket starts with.
    #[schemars(range(min = 1))]
    pub max_tokens: u32,
    /// Tokens added at every fill interval; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_fill: Option<u32>,
    /// How often tokens are added, as a duration (`1s`, `100ms`); at least 50ms.
    #[x_kube(validation = kube::core::cel::Rule::new(FILL_INTERVAL_RULE).message(FILL_INTERVAL_MESSAGE))]
    pub fill_interval: String,
}

/// Which requests a rule limits; every field set must match (AND), any value of one field may match (OR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitMatch {
    /// Request paths (without the query): exact, `prefix*`, `*suffix`, or `*` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// HTTP methods, such as `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Workload ports. A rule matching on ports alone also limits new TCP connections to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 1, max = 65535)))]
    pub ports: Option<Vec<u32>>,
}

/// One limit: what it applies to and its bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitRule {
    /// The requests limited; every request (and connection) when absent.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<RateLimitMatch>,
    /// The bucket.
    pub token_bucket: TokenBucket,
    /// One bucket per source (the peer's SPIFFE identity under mutual TLS, else its IP address) instead
    /// of one for all; the least recently seen sources are forgotten when there are very many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_source: Option<bool>,
    /// HTTP status of a limited request (400-599); 429 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub status_code: Option<u32>,
    /// Whether responses carry the quota headers `x-ratelimit-limit`, `x-ratelimit-remaining` and
    /// `x-ratelimit-reset` (IETF draft 03, as Envoy's `enable_x_ratelimit_headers: DRAFT_VERSION_03`),
    /// on requests the rule lets through as well as on limited ones; false when absent, Envoy's default.
    /// Without them a limited request still gets its status, body and `retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_headers: Option<bool>,
}

/// Local rate limits for the workloads it selects (or the whole namespace, or the mesh when in the root
/// namespace). Rules are tried in order; the first whose match fits the request applies.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "trellis.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    plural = "ratelimitpolicies",
    namespaced,
    status = "Status",
    shortname = "rlp",
    category = "trellis",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// Workloads this applies to; all of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The limits, tried in order.
    #[schemars(extend("minItems" = 1))]
    pub rules: Vec<RateLimitRule>,
}

impl Validate for RateLimitPolicySpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        self.selector.validate(&path.key("selector"), issues);
        if self.rules.is_empty() {
            issues.error(&path.key("rules"), "rules must hold at least one rule");
        }
        self.rules.validate(&path.key("rules"), issues);
    }
}

impl Validate for RateLimitRule {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        self.match_.validate(&path.key("match"), issues);
        self.token_bucket.validate(&path.key("tokenBucket"), issues);
        if let Some(code) = self.status_code
            && !(400..=599).contains(&code)
        {
            issues.error(&path.key("statusCode"), format!("status code {code} must be between 400 and 599"));
        }
    }
}

impl Validate for TokenBucket {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.max_tokens == 0 {
            issues.error(&path.key("maxTokens"), "maxTokens must be at least 1");
        }
        if self.tokens_per_fill == Some(0) {
            issues.error(&path.key("tokensPerFill"), "tokensPerFill must be at least 1");
        }
        let at = path.key("fillInterval");
        match duration::parse(&self.fill_interval) {
            Ok(interval) if interval < MIN_FILL_INTERVAL => {
                issues.error(&at, format!("fillInterval {:?} must be at least 50ms", self.fill_interval))
            }
            Ok(_) => {}
            Err(err) => issues.error(&at, err.to_string()),
        }
        if let Some(per_fill) = self.tokens_per_fill
            && self.max_tokens > 0
            && per_fill > self.max_tokens
        {
            let message = format!(
                "tokensPerFill {per_fill} is more than maxTokens {}; the bucket never holds more than maxTokens",
                self.max_tokens
            );
            issues.warn(&path.key("tokensPerFill"), message);
        }
    }
}

impl Validate for RateLimitMatch {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        for (field, values) in [("paths", &self.paths), ("methods", &self.methods)] {
            if values.as_ref().is_some_and(Vec::is_empty) {
                issues
                    .error(&path.key(field), format!("{field} must not be an empty list (leave it out to match all)"));
            }
        }
        for (i, p) in self.paths.iter().flatten().enumerate() {
            if let Some(reason) = path_problem(p) {
                issues.error(&path.key("paths").index(i), format!("path {p:?} {reason}"));
            }
        }
        for (i, method) in self.methods.iter().flatten().enumerate() {
            let token =
                !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !token {
                issues.error(&path.key("methods").index(i), format!("method {method:?} is not an HTTP method name"));
            } else if method.bytes().any(|b| b.is_ascii_lowercase()) {
                let message = format!(
                    "methods are case-sensitive; {method:?} matches no standard method (write it in upper case)"
                );
                issues.warn(&path.key("methods").index(i), message);
            }
        }
        if self.ports.as_ref().is_some_and(Vec::is_empty) {
            issues.error(&path.key("ports"), "ports must not be an empty list (leave it out to match all)");
        }
        for (i, port) in self.ports.iter().flatten().enumerate() {
            issues.port(&path.key("ports").index(i), Some(*port));
        }
    }
}

/// Why `path` is not one of Istio's path forms (exact, `prefix*`, `*suffix`, `*`), if it is not.
pub fn path_problem(path: &str) -> Option<&'static str> {
    let stars = path.matches('*').count();
    if path.is_empty() {
        Some("must not be empty")
    } else if path == "*" {
        None
    } else if stars > 1 || (stars == 1 && !path.starts_with('*') && !path.ends_with('*')) {
        Some("may hold one `*`, only at its start (suffix match) or end (prefix match)")
    } else if !path.starts_with('/') && !path.starts_with('*') {
        Some("must start with `/`")
    } else if path.contains('?') {
        Some("is matched without the query; remove the `?...`")
    } else {
        None
    }
}
