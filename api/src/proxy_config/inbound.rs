//! The inbound side of a sidecar: the workload's ports, their mutual-TLS mode, authorization, JWT and
//! local rate limits.

use serde::{Deserialize, Serialize};

use super::{Protocol, duration_text};
use crate::istio::authorization_policy::Rule;

/// Mutual-TLS mode of an inbound port, after PeerAuthentication precedence was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InboundMtls {
    #[default]
    Permissive,
    Strict,
    Disable,
}

/// One port of the local workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundListener {
    /// Port the application listens on; the inbound capture forwards to it.
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mtls: InboundMtls,
    /// Authorization policies in evaluation order (CUSTOM, DENY, ALLOW semantics as Istio's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthorizationRule>,
    /// JWT issuers whose tokens are validated on this port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtProvider>,
    /// Local rate limits (RateLimitPolicy rules) in evaluation order: the first that matches applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
}

/// One local rate limit: a token bucket and the requests (or connections) it counts.
///
/// Every listener a rule applies to carries it whole; the proxy keeps one bucket per `policy` and `rule`,
/// so the ports of a workload share the rule's budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// `namespace/name` of the RateLimitPolicy, for metrics and logs.
    pub policy: String,
    /// Index of the rule in the policy.
    pub rule: u32,
    /// Paths in Istio's forms (exact, `prefix*`, `*suffix`, `*`); any path when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods; any method when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Workload ports; any port when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Most tokens the bucket holds, and what it starts with.
    pub max_tokens: u32,
    /// Tokens added every `fill_interval`.
    pub tokens_per_fill: u32,
    #[serde(with = "duration_text::required")]
    pub fill_interval: std::time::Duration,
    /// One bucket per source identity (SPIFFE ID under mutual TLS, else IP address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_source: bool,
    /// Status of a limited request.
    pub status_code: u16,
    /// Whether allowed and limited responses carry the `x-ratelimit-*` quota headers (off by default, as
    /// in Envoy: they cost every allowed response an encoding here and a decoding at the caller).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quota_headers: bool,
}

impl RateLimit {
    /// Whether the rule looks at HTTP requests only (it names paths or methods); other rules also limit
    /// opaque TCP connections.
    pub fn is_http_only(&self) -> bool {
        !self.paths.is_empty() || !self.methods.is_empty()
    }
}

/// A compiled authorization policy: its action and the rules of which any one must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// `namespace/name` of the policy, for logs and `trellis explain`.
    pub policy: String,
    pub action: AuthorizationAction,
    /// The policy's rules in Istio's own shape (`from`, `to`, `when`); any one matching is a match.
    /// Empty with ALLOW means "allow nothing".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// What a matching authorization policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorizationAction {
    Allow,
    Deny,
    Audit,
}

/// A JWT issuer and where its keys come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProvider {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Inline JWKS, or fetched from `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Where the control plane fetches the keys: the rule's `jwksUri`, or, for a rule with neither
    /// `jwks` nor `jwksUri`, its issuer's OpenID configuration (whose `jwks_uri` is followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies a token is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Keep the token in the request sent to the application (it is removed otherwise).
    #[serde(default)]
    pub forward_original_token: bool,
    /// Header that receives the verified payload, base64url-encoded (as Envoy's `forward_payload_header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Claims of a verified token copied into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<JwtClaimToHeader>,
    /// Claims whose string value is a space-separated list, beyond `scope` and `permission`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// A claim of a verified token copied into a request header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtClaimToHeader {
    /// The header to set (lower case).
    pub header: String,
    /// The claim to copy; nested claims are written `a.b`.
    pub claim: String,
}

/// A header a JWT is read from, with the prefix to strip (`Bearer `).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}
