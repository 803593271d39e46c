//! `VirtualService` (networking.istio.io): how requests for a set of hosts are matched, changed and routed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_MESSAGE, DURATION_RULE, Labels, Percent, StringMatch};
use crate::{FieldPath, Issues, Validate, duration, status::Status};

/// The gateway name that stands for every sidecar of the mesh.
const MESH_GATEWAY: &str = "mesh";

/// Longest regular expression Istio accepts (Envoy's RE2 program size, approximated by length).
const MAX_REGEX_LEN: usize = 1024;
/// Largest direct response body Istio accepts.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Direct response bodies above this size draw a warning.
const LARGE_BODY_BYTES: usize = 100 * 1024;

/// HTTP methods a CORS policy may allow.
const CORS_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"];

/// `retryOn` policies Envoy understands (besides HTTP status codes).
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names a fault abort may return.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

// ---------------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------------

/// Routing rules for a set of hosts: HTTP rules, TLS rules matched by SNI, and plain TCP rules.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    status = "Status",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Hosts the rules apply to: DNS names (a leading `*.` wildcard allowed) or IP addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Gateways (`<namespace>/<name>`, or `mesh` for the sidecars) the rules apply to; the sidecars when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// HTTP rules, tried in order; the first that matches wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRoute>>,
    /// Rules for TLS and HTTPS passthrough traffic, matched by SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<TlsRoute>>,
    /// Rules for opaque TCP traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Vec<TcpRoute>>,
    /// Namespaces this is visible to (`.` its own, `*` all); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
}

/// One HTTP rule: the requests it matches and what happens to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Name of the rule, used in logs and stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects the rule (each condition's fields must all hold); all requests when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Vec<HttpMatchRequest>>,
    /// Destinations to forward to, split by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<HttpRouteDestination>>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the matched requests to the rules of another virtual service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite the path or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Time limit for the whole request, such as `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Faults (delays, aborts) to inject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// A destination that also receives a copy of the traffic (deprecated for `mirrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Destinations that also receive a copy of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Vec<HttpMirrorPolicy>>,
    /// Whole percent of traffic `mirror` copies (deprecated for `mirrorPercentage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub mirror_percent: Option<u32>,
    /// The same as `mirrorPercent`, in the snake_case spelling Istio also accepts.
    #[serde(default, rename = "mirror_percent", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub legacy_mirror_percent: Option<u32>,
    /// Percentage of traffic `mirror` copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Cross-origin resource sharing policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header changes for requests and responses of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Conditions on an HTTP request; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name of the condition, appended to the rule's name in logs and stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match on the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Match on the scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// Match on the method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Match on the authority (Host header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Match on headers, keyed by lower-case name (or `@request.auth.claims.<claim>` on gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, StringMatch>>,
    /// Match on the port the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub port: Option<u32>,
    /// Match on the labels of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Labels>,
    /// Gateways this condition applies to, overriding the service's `gateways`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// Match on query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<BTreeMap<String, StringMatch>>,
    /// Compare `uri` case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must not match (a `regex` of `*` means the header must be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_headers: Option<BTreeMap<String, StringMatch>>,
    /// Match on the namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Prefix for the stats of requests this condition matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A destination of an HTTP rule, its share of traffic and its own header changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the traffic.
    pub destination: Destination,
    /// Relative share of the rule's traffic; an omitted weight counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Header changes for traffic to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A destination of a TLS or TCP rule and its share of traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the traffic.
    pub destination: Destination,
    /// Relative share of the rule's traffic; an omitted weight counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// A service (and optionally a subset and port of it) that traffic is sent to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service name from the registry: a short name, an FQDN, or a ServiceEntry host.
    pub host: String,
    /// Subset of the service, as a DestinationRule names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port of the service; needed when it exposes more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A port of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub number: Option<u32>,
}

/// A virtual service (with no hosts) whose HTTP rules take over the matched requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Name of the delegate virtual service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the delegate virtual service; this one's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Header changes for requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Changes to the request before it is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Changes to the response before it is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Headers to set, append or remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Headers to set, replacing any present value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, String>>,
    /// Headers to append a value to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<BTreeMap<String, String>>,
    /// Names of headers to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

/// A redirect response sent instead of forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.port) ? 1 : 0) + (has(self.derivePort) ? 1 : 0) <= 1").message("only one of port or derivePort can be set"))]
pub struct HttpRedirect {
    /// Replace the whole path with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the matched prefix of the path with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Replace the authority (host) with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replace the port with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub port: Option<u32>,
    /// Choose the port from the scheme's default or the request's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replace the scheme with this (`http` or `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status code of the redirect (3xx); 301 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub redirect_code: Option<u32>,
}

/// How a redirect picks its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port of the request.
    FromRequestPort,
}

/// A fixed response sent instead of forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Status code of the response.
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub status: u32,
    /// Body of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A response body, as text or as base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.string) ? 1 : 0) + (has(self.bytes) ? 1 : 0) <= 1").message("only one of string or bytes can be set"))]
pub struct HttpBody {
    /// The body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// The body as base64-encoded bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub bytes: Option<String>,
}

/// Path and authority rewrites applied before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replace the matched prefix (or the whole path, for exact matches) with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority (host) with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Rewrite the path with a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regular-expression substitution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 expression to find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    /// Replacement; `\1` and so on refer to capture groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

/// When and how often a failed request is retried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries; 0 disables them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Time limit of each attempt, such as `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions that trigger a retry (`5xx`, `connect-failure`, status codes, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Whether retries may go to other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Whether retries avoid hosts already tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the exponential back-off between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub backoff: Option<String>,
}

/// Cross-origin resource sharing policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Allowed origins, exact (deprecated for `allowOrigins`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origin: Option<Vec<String>>,
    /// Allowed origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<StringMatch>>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    /// Response headers the browser may expose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    /// How long preflight results may be cached, in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub max_age: Option<String>,
    /// Whether requests may carry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// What to do with preflight requests from origins that are not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// What happens to a preflight request whose origin is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// The default: forward.
    Unspecified,
    /// Forward it to the destination.
    Forward,
    /// Answer it without CORS headers.
    Ignore,
}

/// Faults injected into the traffic of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay some requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HttpFaultInjectionDelay>,
    /// Fail some requests instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<HttpFaultInjectionAbort>,
}

/// A delay injected before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.fixedDelay) ? 1 : 0) + (has(self.exponentialDelay) ? 1 : 0) <= 1").message("only one of fixedDelay or exponentialDelay can be set"))]
pub struct HttpFaultInjectionDelay {
    /// Fixed delay, such as `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub fixed_delay: Option<String>,
    /// Exponential delay (Istio rejects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub exponential_delay: Option<String>,
    /// Whole percent of requests delayed (deprecated for `percentage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// Percentage of requests delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// An error returned instead of forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.httpStatus) ? 1 : 0) + (has(self.grpcStatus) ? 1 : 0) + (has(self.http2Error) ? 1 : 0) <= 1").message("only one of httpStatus, grpcStatus or http2Error can be set"))]
pub struct HttpFaultInjectionAbort {
    /// HTTP status to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// gRPC status name to return, such as `UNAVAILABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// HTTP/2 error to return (Istio rejects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// Percentage of requests aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A destination that receives a copy of the traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where the copies go.
    pub destination: Destination,
    /// Percentage of traffic copied; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// One TLS rule: the connections it matches by SNI and where they go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions, any of which selects the rule.
    pub r#match: Vec<TlsMatchAttributes>,
    /// Destinations to forward to, split by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
}

/// Conditions on a TLS connection; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI names to match (wildcards allowed); each must fall under one of the service's hosts.
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDR ranges to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_subnets: Option<Vec<String>>,
    /// Destination port to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub port: Option<u32>,
    /// Labels of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Labels>,
    /// Gateways this condition applies to, overriding the service's `gateways`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// Namespace of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// One TCP rule: the connections it matches and where they go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions, any of which selects the rule; all connections when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Vec<L4MatchAttributes>>,
    /// Destinations to forward to, split by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
}

/// Conditions on a TCP connection; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDR ranges to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_subnets: Option<Vec<String>>,
    /// Destination port to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub port: Option<u32>,
    /// Source IP or CIDR range to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    /// Labels of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Labels>,
    /// Gateways this condition applies to, overriding the service's `gateways`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// Namespace of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

// ---------------------------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------------------------

/// What the checks of nested fields need to know about the whole virtual service.
#[derive(Debug)]
struct Scope<'a> {
    /// The service's hosts.
    hosts: &'a [String],
    /// Bound only to gateways, not to the mesh's sidecars.
    gateway_only: bool,
    /// Some TLS condition names SNI hosts.
    has_sni: bool,
}

impl Validate for VirtualServiceSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let hosts = self.hosts.as_deref().unwrap_or_default();
        let gateways = self.gateways.as_deref().unwrap_or_default();
        let tls = self.tls.as_deref().unwrap_or_default();
        let scope = Scope {
            hosts,
            gateway_only: !gateways.is_empty() && !gateways.iter().any(|g| g == MESH_GATEWAY),
            has_sni: tls.iter().any(|route| route.r#match.iter().any(|m| !m.sni_hosts.is_empty())),
        };

        check_hosts(&path.key("hosts"), &scope, issues);
        check_gateway_names(&path.key("gateways"), gateways, issues);

        let http = self.http.as_deref().unwrap_or_default();
        let tcp = self.tcp.as_deref().unwrap_or_default();
        if http.is_empty() && tcp.is_empty() && tls.is_empty() {
            issues.error(path, "at least one of http, tcp or tls routes is required");
        }
        for (i, route) in http.iter().enumerate() {
            route.check(&path.key("http").index(i), &scope, issues);
        }
        for (i, route) in tls.iter().enumerate() {
            route.check(&path.key("tls").index(i), &scope, issues);
        }
        for (i, route) in tcp.iter().enumerate() {
            route.check(&path.key("tcp").index(i), issues);
        }
        check_export_to(&path.key("exportTo"), self.export_to.as_deref().unwrap_or_default(), issues);
    }
}

/// The service's hosts: present, well formed, `*` only on gateways, no two overlapping.
fn check_hosts(path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
    let hosts = scope.hosts;
    if hosts.is_empty() {
        // Istio accepts a VirtualService without hosts as the target of another one's `delegate`.
        issues.warn(path, "no hosts: usable only as a delegate target, which Trellis does not act on yet");
        return;
    }
    let mut all_valid = true;
    for (i, host) in hosts.iter().enumerate() {
        let at = path.index(i);
        if let Some(problem) = domain_problem(host, scope.gateway_only && scope.has_sni) {
            if host.parse::<IpAddr>().is_err() {
                issues.error(&at, problem);
                all_valid = false;
            }
        } else if !scope.gateway_only && host == "*" {
            issues.error(&at, "host \"*\" is only allowed when the virtual service is bound to gateways, not the mesh");
            all_valid = false;
        }
    }
    if all_valid {
        for (i, first) in hosts.iter().enumerate() {
            for (j, second) in hosts.iter().enumerate().skip(i + 1) {
                if hosts_overlap(first, second) {
                    issues.error(&path.index(j), format!("host {second:?} duplicates or overlaps host {first:?}"));
                }
            }
        }
    }
}

impl HttpRoute {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        self.check_actions(path, issues);
        for (j, condition) in self.r#match.iter().flatten().enumerate() {
            condition.check(&path.key("match").index(j), scope, issues);
        }
        self.headers.validate(&path.key("headers"), issues);
        check_authority_rewrites(path, self.rewrite.as_ref(), self.headers.as_ref(), issues);
        self.cors_policy.validate(&path.key("corsPolicy"), issues);
        self.fault.validate(&path.key("fault"), issues);

        for (key, value) in [("mirrorPercent", self.mirror_percent), ("mirror_percent", self.legacy_mirror_percent)] {
            if let Some(value) = value {
                let at = path.key(key);
                if value > 100 {
                    issues.error(&at, format!("mirror percent {value} must be at most 100"));
                }
                issues.warn(&at, format!("{key} is deprecated; use mirrorPercentage"));
            }
        }
        if self.mirror_percent.is_some() && self.legacy_mirror_percent.is_some() {
            issues.error(&path.key("mirror_percent"), "only one of mirrorPercent or mirror_percent can be set");
        }
        self.mirror_percentage.validate(&path.key("mirrorPercentage"), issues);
        self.mirror.validate(&path.key("mirror"), issues);
        for (k, mirror) in self.mirrors.iter().flatten().enumerate() {
            let at = path.key("mirrors").index(k);
            mirror.destination.validate(&at.key("destination"), issues);
            mirror.percentage.validate(&at.key("percentage"), issues);
        }

        self.redirect.validate(&path.key("redirect"), issues);
        self.direct_response.validate(&path.key("directResponse"), issues);
        self.retries.validate(&path.key("retries"), issues);
        self.rewrite.validate(&path.key("rewrite"), issues);
        if let Some(delegate) = &self.delegate
            && delegate.name.as_deref().is_none_or(str::is_empty)
        {
            issues.warn(&path.key("delegate").key("name"), "delegate has no name, so it hands requests to nothing");
        }

        let route = self.route.as_deref().unwrap_or_default();
        for (k, destination) in route.iter().enumerate() {
            let at = path.key("route").index(k);
            destination.destination.validate(&at.key("destination"), issues);
            destination.headers.validate(&at.key("headers"), issues);
        }
        check_weights(&path.key("route"), &route.iter().map(|d| d.weight).collect::<Vec<_>>(), issues);
        check_duration(&path.key("timeout"), self.timeout.as_deref(), Precision::Millisecond, issues);
    }

    /// Exactly one way of answering: forward (`route`), `redirect`, `directResponse` or `delegate`.
    fn check_actions(&self, path: &FieldPath, issues: &mut Issues) {
        let has_route = self.route.as_ref().is_some_and(|route| !route.is_empty());
        if self.delegate.is_some() {
            let at = path.key("delegate");
            if has_route {
                issues.error(&at, "delegate cannot be combined with route");
            }
            if self.redirect.is_some() {
                issues.error(&at, "delegate cannot be combined with redirect");
            }
        } else if self.redirect.is_some() {
            if has_route {
                issues.error(&path.key("redirect"), "redirect cannot be combined with route");
            }
            if self.fault.is_some() {
                issues.error(&path.key("fault"), "fault cannot be combined with redirect");
            }
            if self.rewrite.is_some() {
                issues.error(&path.key("rewrite"), "rewrite cannot be combined with redirect");
            }
            if self.direct_response.is_some() {
                issues.error(&path.key("directResponse"), "directResponse cannot be combined with redirect");
            }
        } else if self.direct_response.is_some() {
            if has_route {
                issues.error(&path.key("directResponse"), "directResponse cannot be combined with route");
            }
            if self.fault.is_some() {
                issues.error(&path.key("fault"), "fault cannot be combined with directResponse");
            }
            if self.rewrite.is_some() {
                issues.error(&path.key("rewrite"), "rewrite cannot be combined with directResponse");
            }
        } else if !has_route {
            issues.error(path, "one of route, redirect, directResponse or delegate is required");
        }
        if self.mirror.is_some() && self.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
            issues.error(&path.key("mirrors"), "mirror and mirrors cannot both be set");
        }
    }
}

impl HttpMatchRequest {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        // Envoy allows an empty path prefix, but not an empty prefix for the other string matches.
        check_string_match(
            &path.key("uri"),
            self.uri.as_ref(),
            MatchRules { empty_prefix: true, ..MatchRules::default() },
            issues,
        );
        check_string_match(&path.key("scheme"), self.scheme.as_ref(), MatchRules::default(), issues);
        check_string_match(&path.key("method"), self.method.as_ref(), MatchRules::default(), issues);
        check_string_match(&path.key("authority"), self.authority.as_ref(), MatchRules::default(), issues);
        for (field, headers, rules) in [
            ("headers", &self.headers, MatchRules::default()),
            ("withoutHeaders", &self.without_headers, MatchRules { star_means_present: true, ..MatchRules::default() }),
        ] {
            for (name, value) in headers.iter().flatten() {
                let at = path.key(field).key(name);
                check_header_match_name(&at, name, scope, issues);
                check_string_match(&at, Some(value), rules, issues);
            }
        }
        for (name, value) in self.query_params.iter().flatten() {
            check_string_match(&path.key("queryParams").key(name), Some(value), MatchRules::default(), issues);
        }
        check_match_port(&path.key("port"), self.port, issues);
        check_labels(&path.key("sourceLabels"), self.source_labels.as_ref(), issues);
        check_gateway_names(&path.key("gateways"), self.gateways.as_deref().unwrap_or_default(), issues);
        if let Some(namespace) = self.source_namespace.as_deref()
            && !namespace.is_empty()
            && !is_dns1123_label(namespace)
        {
            issues.error(
                &path.key("sourceNamespace"),
                format!("sourceNamespace {namespace:?} is not a valid namespace name"),
            );
        }
    }
}

impl TlsRoute {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        if self.r#match.is_empty() {
            issues.error(&path.key("match"), "a tls route needs at least one match");
        }
        for (j, condition) in self.r#match.iter().enumerate() {
            condition.check(&path.key("match").index(j), scope, issues);
        }
        check_route_destinations(&path.key("route"), self.route.as_deref().unwrap_or_default(), "tls", issues);
    }
}

impl TlsMatchAttributes {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        let at = path.key("sniHosts");
        if self.sni_hosts.is_empty() {
            issues.error(&at, "a tls match needs at least one sniHost");
        }
        for (k, sni) in self.sni_hosts.iter().enumerate() {
            let at = at.index(k);
            if let Some(problem) = domain_problem(sni, scope.gateway_only) {
                if sni.parse::<IpAddr>().is_ok() {
                    issues
                        .warn(&at, format!("sni host {sni:?} is an IP address, which most clients never send as SNI"));
                } else {
                    issues.error(&at, problem);
                }
                continue;
            }
            if !scope.hosts.iter().any(|host| host_subset_of(sni, host)) {
                issues.error(&at, format!("sni host {sni:?} is not covered by any host of the virtual service"));
            }
        }
        check_subnets(&path.key("destinationSubnets"), self.destination_subnets.as_deref(), issues);
        check_match_port(&path.key("port"), self.port, issues);
        check_labels(&path.key("sourceLabels"), self.source_labels.as_ref(), issues);
        check_gateway_names(&path.key("gateways"), self.gateways.as_deref().unwrap_or_default(), issues);
    }
}

impl TcpRoute {
    fn check(&self, path: &FieldPath, issues: &mut Issues) {
        for (j, condition) in self.r#match.iter().flatten().enumerate() {
            let at = path.key("match").index(j);
            check_subnets(&at.key("destinationSubnets"), condition.destination_subnets.as_deref(), issues);
            check_match_port(&at.key("port"), condition.port, issues);
            check_labels(&at.key("sourceLabels"), condition.source_labels.as_ref(), issues);
            check_gateway_names(&at.key("gateways"), condition.gateways.as_deref().unwrap_or_default(), issues);
        }
        check_route_destinations(&path.key("route"), self.route.as_deref().unwrap_or_default(), "tcp", issues);
    }
}

/// The destinations of a TLS or TCP rule: at least one, each valid, weights sensible.
fn check_route_destinations(path: &FieldPath, route: &[RouteDestination], kind: &str, issues: &mut Issues) {
    if route.is_empty() {
        issues.error(path, format!("a {kind} route needs at least one route destination"));
    }
    for (k, destination) in route.iter().enumerate() {
        destination.destination.validate(&path.index(k).key("destination"), issues);
    }
    check_weights(path, &route.iter().map(|d| d.weight).collect::<Vec<_>>(), issues);
}

/// Weights are relative: none negative, and not all zero (an omitted weight counts as 0).
fn check_weights(path: &FieldPath, weights: &[Option<i32>], issues: &mut Issues) {
    let mut total = 0i64;
    for (k, weight) in weights.iter().enumerate() {
        if let Some(weight) = *weight {
            if weight < 0 {
                issues.error(&path.index(k).key("weight"), format!("weight {weight} must not be negative"));
            }
            total += i64::from(weight);
        }
    }
    if weights.len() > 1 && total == 0 {
        if weights.iter().any(Option::is_none) {
            issues.error(path, "all route weights are zero (an omitted weight counts as 0)");
        } else {
            issues.error(path, "all route weights are zero");
        }
    } else if weights == [Some(0)] {
        issues.error(path, "all route weights are zero");
    }
}

impl Validate for Destination {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at = path.key("host");
        if self.host.is_empty() {
            issues.error(&at, "destination host is required");
        } else if self.host == "*" {
            issues.error(&at, "destination host cannot be \"*\"");
        } else if let Some(problem) = domain_problem(&self.host, false) {
            issues.error(&at, problem);
        }
        if let Some(subset) = self.subset.as_deref()
            && !subset.is_empty()
            && !is_dns1123_label(subset)
        {
            issues.error(&path.key("subset"), format!("subset name {subset:?} must be a DNS-1123 label"));
        }
        self.port.validate(&path.key("port"), issues);
    }
}

impl Validate for PortSelector {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at = path.key("number");
        match self.number {
            None | Some(0) => issues.error(&at, "port number is required and must be between 1-65535"),
            Some(number) => issues.port(&at, Some(number)),
        }
    }
}

impl Validate for Headers {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(request) = &self.request {
            request.check(&path.key("request"), true, issues);
        }
        if let Some(response) = &self.response {
            response.check(&path.key("response"), false, issues);
        }
    }
}

impl HeaderOperations {
    /// Names must be non-empty and not pseudo-headers; on requests, `set`/`add` may change the authority.
    fn check(&self, path: &FieldPath, request: bool, issues: &mut Issues) {
        for (field, headers) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in headers.iter().flatten() {
                let at = path.key(field).key(name);
                if let Some(problem) = header_operation_problem(name, request) {
                    issues.error(&at, problem);
                }
                if let Some(problem) = header_value_problem(value) {
                    issues.error(&at, problem);
                }
            }
        }
        for (k, name) in self.remove.iter().flatten().enumerate() {
            if let Some(problem) = header_operation_problem(name, false) {
                issues.error(&path.key("remove").index(k), problem);
            }
        }
    }
}

/// `rewrite.authority`, and request headers `:authority`/`host` set or added, may change the authority once.
fn check_authority_rewrites(
    path: &FieldPath,
    rewrite: Option<&HttpRewrite>,
    headers: Option<&Headers>,
    issues: &mut Issues,
) {
    let mut count = usize::from(rewrite.and_then(|r| r.authority.as_deref()).is_some_and(|a| !a.is_empty()));
    if let Some(request) = headers.and_then(|h| h.request.as_ref()) {
        for map in [&request.set, &request.add] {
            count += map.iter().flatten().filter(|(name, _)| is_authority_header(name)).count();
        }
    }
    if count > 1 {
        issues.error(
            &path.key("headers").key("request"),
            "the authority is rewritten more than once (rewrite.authority, :authority or host)",
        );
    }
}

impl Validate for CorsPolicy {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        for (k, origin) in self.allow_origins.iter().flatten().enumerate() {
            let at = path.key("allowOrigins").index(k);
            let values: Vec<&String> = [&origin.exact, &origin.prefix, &origin.regex].into_iter().flatten().collect();
            if values.len() > 1 {
                issues.error(&at, "only one of exact, prefix or regex can be set");
            } else if values.first().is_none_or(|v| v.is_empty()) {
                issues.error(&at, "an allowed origin needs a non-empty exact, prefix or regex");
            }
            if let Some(regex) = origin.regex.as_deref().filter(|r| !r.is_empty()) {
                check_regex(&at.key("regex"), regex, issues);
            }
        }
        for (k, method) in self.allow_methods.iter().flatten().enumerate() {
            if !CORS_METHODS.contains(&method.as_str()) {
                issues.error(&path.key("allowMethods").index(k), format!("{method:?} is not a supported HTTP method"));
            }
        }
        for field in ["allowHeaders", "exposeHeaders"] {
            let names = if field == "allowHeaders" { &self.allow_headers } else { &self.expose_headers };
            for (k, name) in names.iter().flatten().enumerate() {
                let at = path.key(field).index(k);
                if name.is_empty() {
                    issues.error(&at, "header name must not be empty");
                } else if name != "*" && !is_header_token(name) {
                    issues.error(&at, format!("{name:?} is not a valid header name"));
                }
            }
        }
        check_duration(&path.key("maxAge"), self.max_age.as_deref(), Precision::Second, issues);
    }
}

impl Validate for HttpFaultInjection {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.delay.is_none() && self.abort.is_none() {
            issues.error(path, "fault needs an abort, a delay or both");
        }
        self.delay.validate(&path.key("delay"), issues);
        self.abort.validate(&path.key("abort"), issues);
    }
}

impl Validate for HttpFaultInjectionDelay {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.fixed_delay.is_some() && self.exponential_delay.is_some() {
            issues.error(path, "only one of fixedDelay or exponentialDelay can be set");
        }
        check_duration(&path.key("fixedDelay"), self.fixed_delay.as_deref(), Precision::Millisecond, issues);
        let exponential = path.key("exponentialDelay");
        check_duration(&exponential, self.exponential_delay.as_deref(), Precision::Millisecond, issues);
        if self.exponential_delay.is_some() {
            issues.error(&exponential, "exponentialDelay is rejected by Istio; use fixedDelay");
        }
        if let Some(percent) = self.percent
            && !(0..=100).contains(&percent)
        {
            issues.error(&path.key("percent"), format!("percent {percent} must be between 0 and 100"));
        }
        if let Some(percentage) = &self.percentage {
            check_fault_percentage(&path.key("percentage"), percentage, issues);
        }
    }
}

impl Validate for HttpFaultInjectionAbort {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let kinds = [self.http_status.is_some(), self.grpc_status.is_some(), self.http2_error.is_some()];
        let set = kinds.iter().filter(|k| **k).count();
        if set > 1 {
            issues.error(path, "only one of httpStatus, grpcStatus or http2Error can be set");
        } else if set == 0 {
            issues.warn(path, "abort sets none of httpStatus, grpcStatus or http2Error, so it aborts nothing");
        }
        if let Some(status) = self.http_status
            && !(200..=599).contains(&status)
        {
            issues.error(&path.key("httpStatus"), format!("http status {status} must be between 200 and 599"));
        }
        if let Some(status) = self.grpc_status.as_deref()
            && !GRPC_STATUSES.contains(&status)
        {
            issues.error(
                &path.key("grpcStatus"),
                format!("grpc status {status:?} is not a gRPC status name such as UNAVAILABLE or NOT_FOUND"),
            );
        }
        if self.http2_error.is_some() {
            issues.error(
                &path.key("http2Error"),
                "http2Error aborts are rejected by Istio; use httpStatus or grpcStatus",
            );
        }
        if let Some(percentage) = &self.percentage {
            check_fault_percentage(&path.key("percentage"), percentage, issues);
        }
    }
}

/// Fault percentages are 0, or between 0.0001 and 100 (Envoy's resolution).
fn check_fault_percentage(path: &FieldPath, percentage: &Percent, issues: &mut Issues) {
    percentage.validate(path, issues);
    if let Some(value) = percentage.value
        && value > 0.0
        && value < 0.0001
    {
        issues.error(&path.key("value"), format!("percentage {value} must be 0 or at least 0.0001"));
    }
}

impl Validate for HttpRetry {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let attempts = self.attempts.unwrap_or(0);
        if attempts < 0 {
            issues.error(&path.key("attempts"), format!("attempts {attempts} must not be negative"));
        }
        let retry_on = self.retry_on.as_deref().unwrap_or_default();
        if attempts == 0
            && (self.per_try_timeout.is_some() || !retry_on.is_empty() || self.retry_remote_localities.is_some())
        {
            issues.error(
                &path.key("attempts"),
                "retry settings are given but attempts is 0 or unset, which disables retries",
            );
        }
        check_duration(&path.key("perTryTimeout"), self.per_try_timeout.as_deref(), Precision::Millisecond, issues);
        check_duration(&path.key("backoff"), self.backoff.as_deref(), Precision::Millisecond, issues);
        if !retry_on.is_empty() {
            for policy in retry_on.split(',') {
                if !RETRY_ON_POLICIES.contains(&policy) && !is_known_http_status(policy) {
                    issues.error(&path.key("retryOn"), format!("{policy:?} is not a valid retryOn policy"));
                }
            }
        }
    }
}

impl Validate for HttpRedirect {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.port.is_some() && self.derive_port.is_some() {
            issues.error(path, "only one of port or derivePort can be set");
        }
        let uri = is_set(&self.uri);
        let prefix_rewrite = is_set(&self.prefix_rewrite);
        if !(uri || prefix_rewrite || is_set(&self.authority) || is_set(&self.scheme))
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            issues.error(
                path,
                "redirect needs at least one of uri, prefixRewrite, authority, scheme, port or derivePort",
            );
        }
        if uri && prefix_rewrite {
            issues.error(&path.key("prefixRewrite"), "only one of uri or prefixRewrite can be set");
        }
        if let Some(code) = self.redirect_code
            && code != 0
            && !(300..=399).contains(&code)
        {
            issues.error(&path.key("redirectCode"), format!("redirect code {code} must be between 300 and 399"));
        }
        if let Some(scheme) = self.scheme.as_deref()
            && !scheme.is_empty()
            && scheme != "http"
            && scheme != "https"
        {
            issues.error(&path.key("scheme"), format!("redirect scheme {scheme:?} must be http or https"));
        }
        if let Some(port) = self.port
            && port > 0
        {
            issues.port(&path.key("port"), Some(port));
        }
    }
}

impl Validate for HttpDirectResponse {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if !(200..=599).contains(&self.status) {
            issues.error(&path.key("status"), format!("status {} must be between 200 and 599", self.status));
        }
        let Some(body) = &self.body else { return };
        let at = path.key("body");
        if body.string.is_some() && body.bytes.is_some() {
            issues.error(&at, "only one of string or bytes can be set");
        }
        let mut size = body.string.as_ref().map_or(0, String::len);
        if let Some(bytes) = body.bytes.as_deref() {
            match base64_decoded_len(bytes) {
                Some(len) => size = size.max(len),
                None => issues.error(&at.key("bytes"), "bytes must be base64-encoded"),
            }
        }
        if size > MAX_BODY_BYTES {
            issues.error(&at, format!("a direct response body of {size} bytes is too large; the limit is 1MB"));
        } else if size > LARGE_BODY_BYTES {
            issues.warn(&at, format!("a direct response body of {size} bytes may slow down the control plane"));
        }
    }
}

impl Validate for HttpRewrite {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let uri = is_set(&self.uri);
        if uri && self.uri_regex_rewrite.is_some() {
            issues.error(&path.key("uriRegexRewrite"), "only one of uri or uriRegexRewrite can be set");
        }
        if !uri && self.uri_regex_rewrite.is_none() && !is_set(&self.authority) {
            issues.error(path, "rewrite needs at least one of uri, uriRegexRewrite or authority");
        }
        if let Some(regex_rewrite) = &self.uri_regex_rewrite {
            let at = path.key("uriRegexRewrite");
            match regex_rewrite.r#match.as_deref().filter(|m| !m.is_empty()) {
                Some(pattern) => check_regex(&at.key("match"), pattern, issues),
                None => issues.error(&at.key("match"), "uriRegexRewrite needs both match and rewrite"),
            }
            if !is_set(&regex_rewrite.rewrite) {
                issues.error(&at.key("rewrite"), "uriRegexRewrite needs both match and rewrite");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Field-level helpers
// ---------------------------------------------------------------------------------------------------------------

/// How a [`StringMatch`] field is checked.
#[derive(Debug, Clone, Copy, Default)]
struct MatchRules {
    /// An empty `prefix` is allowed (paths).
    empty_prefix: bool,
    /// A `regex` of `*` means "present" rather than a regular expression (`withoutHeaders`).
    star_means_present: bool,
}

/// At most one of exact/prefix/regex, prefix non-empty where Envoy needs it, regex compiles.
fn check_string_match(path: &FieldPath, value: Option<&StringMatch>, rules: MatchRules, issues: &mut Issues) {
    let Some(value) = value else { return };
    let set = [&value.exact, &value.prefix, &value.regex].iter().filter(|v| v.is_some()).count();
    if set > 1 {
        issues.error(path, "only one of exact, prefix or regex can be set");
    }
    if value.prefix.as_deref().is_some_and(str::is_empty) && !rules.empty_prefix {
        issues.error(&path.key("prefix"), "prefix must not be empty");
    }
    if let Some(regex) = value.regex.as_deref()
        && !(rules.star_means_present && regex == "*")
    {
        check_regex(&path.key("regex"), regex, issues);
    }
}

/// A regular expression: non-empty, at most 1024 characters, and valid.
fn check_regex(path: &FieldPath, pattern: &str, issues: &mut Issues) {
    if pattern.is_empty() {
        issues.error(path, "regex must not be empty");
    } else if pattern.len() > MAX_REGEX_LEN {
        issues.error(path, format!("regex is {} characters long; the limit is {MAX_REGEX_LEN}", pattern.len()));
    } else {
        issues.regex(path, Some(pattern));
    }
}

/// A header name in a match: a token, or a JWT claim (`@request.auth.claims.<name>`), which needs a gateway.
fn check_header_match_name(path: &FieldPath, name: &str, scope: &Scope<'_>, issues: &mut Issues) {
    if name.is_empty() {
        issues.error(path, "header name must not be empty");
    } else if name.starts_with("@request.auth.claims.") || name.starts_with("@request.auth.claims[") {
        if !scope.gateway_only {
            issues.error(path, format!("JWT claim routing ({name}) only works on gateways, not the mesh"));
        }
    } else if !is_header_token(name) {
        issues.error(path, format!("{name:?} is not a valid header name"));
    }
}

/// Which of the proxy's headers a route may set, add or remove.
fn header_operation_problem(name: &str, may_set_authority: bool) -> Option<String> {
    if name.is_empty() {
        return Some("header name must not be empty".to_owned());
    }
    if may_set_authority && is_authority_header(name) {
        return None;
    }
    if name.eq_ignore_ascii_case("host") {
        return Some(format!("header {name:?} cannot be changed here"));
    }
    if name.starts_with(':') {
        return Some(format!("pseudo-header {name:?} cannot be changed"));
    }
    None
}

/// A header value: no control characters but tab, and Envoy's `%VARIABLE%` syntax (`%%` for a literal `%`).
fn header_value_problem(value: &str) -> Option<String> {
    if value.chars().any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}')) {
        return Some(format!("header value {value:?} contains a control character"));
    }
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        if let Some(escaped) = after.strip_prefix('%') {
            rest = escaped;
            continue;
        }
        match after.find('%') {
            Some(end) => rest = &after[end + 1..],
            None => {
                return Some(format!("header value {value:?} has an unterminated %; write a literal percent as %%"));
            }
        }
    }
    None
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Header names Istio accepts in matches and CORS lists: letters, digits, `-` and `_`.
fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Durations Envoy can represent: valid, at least 1ms, and a whole number of the given unit.
#[derive(Debug, Clone, Copy)]
enum Precision {
    Millisecond,
    Second,
}

fn check_duration(path: &FieldPath, value: Option<&str>, precision: Precision, issues: &mut Issues) {
    let Some(text) = value else { return };
    issues.duration(path, Some(text));
    let (step, unit) = match precision {
        Precision::Millisecond => (Duration::from_millis(1), "millisecond"),
        Precision::Second => (Duration::from_secs(1), "second"),
    };
    if let Ok(parsed) = duration::parse(text)
        && parsed >= Duration::from_millis(1)
        && parsed.as_nanos() % step.as_nanos() != 0
    {
        issues.error(path, format!("duration {text:?} must be a whole number of {unit}s"));
    }
}

/// A port in a match: 0 means unset, otherwise 1-65535.
fn check_match_port(path: &FieldPath, port: Option<u32>, issues: &mut Issues) {
    issues.port(path, port.filter(|p| *p != 0));
}

/// Source labels as Istio checks them: Kubernetes label keys and values.
fn check_labels(path: &FieldPath, labels: Option<&Labels>, issues: &mut Issues) {
    for (key, value) in labels.into_iter().flatten() {
        let at = path.key(key);
        if !is_label_key(key) {
            issues.error(&at, format!("label key {key:?} is invalid"));
        }
        if !value.is_empty() && !is_qualified_name(value) {
            issues.error(&at, format!("label value {value:?} is invalid"));
        }
    }
}

fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns1123_label));
    prefix_ok && name.len() <= 63 && is_qualified_name(name)
}

/// Kubernetes "qualified name": alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn is_qualified_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Destination subnets: IP addresses or CIDR blocks.
fn check_subnets(path: &FieldPath, subnets: Option<&[String]>, issues: &mut Issues) {
    for (k, subnet) in subnets.unwrap_or_default().iter().enumerate() {
        if !is_ip_or_cidr(subnet) {
            issues.error(&path.index(k), format!("{subnet:?} is not a valid IP address or CIDR block"));
        }
    }
}

fn is_ip_or_cidr(text: &str) -> bool {
    match text.split_once('/') {
        None => text.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) && bits.parse::<u32>().is_ok_and(|b| b <= max)
        }
    }
}

/// Gateway references: `<namespace>/<name>`, or a bare name such as `mesh` (a dotted `name.namespace` is legacy).
fn check_gateway_names(path: &FieldPath, names: &[String], issues: &mut Issues) {
    for (i, name) in names.iter().enumerate() {
        let at = path.index(i);
        match name.split_once('/') {
            Some((namespace, gateway)) => {
                if namespace.is_empty() || gateway.is_empty() {
                    issues.error(&at, format!("gateway {name:?} must be <namespace>/<name> with both parts set"));
                    continue;
                }
                if !is_dns1123_label(namespace) {
                    issues.error(&at, format!("gateway {name:?} has an invalid namespace {namespace:?}"));
                }
                if !is_dns1123_label(gateway) {
                    issues.error(&at, format!("gateway {name:?} has an invalid name {gateway:?}"));
                }
            }
            None => {
                if let Some(problem) = fqdn_problem(name) {
                    issues.error(&at, problem);
                } else if let Some((gateway, rest)) = name.split_once('.') {
                    let namespace = rest.split('.').next().unwrap_or_default();
                    issues.warn(&at, format!("gateway {name:?} uses the legacy format; prefer {namespace}/{gateway}"));
                }
            }
        }
    }
}

/// `exportTo`: `.`, `*` or namespace names, no duplicates, `*` alone.
fn check_export_to(path: &FieldPath, entries: &[String], issues: &mut Issues) {
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        if !seen.insert(entry.as_str()) {
            issues.error(&at, format!("duplicate exportTo entry {entry:?}"));
            continue;
        }
        match entry.as_str() {
            "." | "*" => {}
            "~" => issues.error(&at, "exportTo \"~\" (visible to no one) is only allowed on ServiceEntry"),
            _ if !is_dns1123_label(entry) => {
                issues.error(&at, format!("exportTo entry {entry:?} must be \".\", \"*\" or a namespace name"));
            }
            _ => {}
        }
    }
    if entries.len() > 1 && entries.iter().any(|e| e == "*") {
        issues.error(path, "exportTo \"*\" cannot be combined with other entries");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Host names
// ---------------------------------------------------------------------------------------------------------------

/// A DNS-1123 label as Istio checks it (either letter case).
fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// Why a host name (whose first label may be `*`) is invalid, if it is. With `auto_sni`, also accepts the
/// `outbound_.<port>_._.<host>` names the proxy generates for AUTO_PASSTHROUGH gateways.
fn domain_problem(host: &str, auto_sni: bool) -> Option<String> {
    if host.is_empty() {
        return Some("host must not be empty".to_owned());
    }
    if host.len() > 255 {
        return Some(format!("host {host:?} is longer than 255 characters"));
    }
    if auto_sni && host.starts_with("outbound_") {
        return auto_sni_problem(host);
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if first != "*" && !is_dns1123_label(first) {
        return Some(label_problem(host, first));
    }
    rest.and_then(|rest| labels_problem(host, rest))
}

/// Why a dotted name with no wildcard is invalid, if it is.
fn fqdn_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name must not be empty".to_owned());
    }
    if name.len() > 255 {
        return Some(format!("name {name:?} is longer than 255 characters"));
    }
    labels_problem(name, name)
}

/// Checks the labels of `domain` (a suffix of `whole`): DNS-1123 labels, a trailing dot allowed, and a
/// top-level label that is not all digits.
fn labels_problem(whole: &str, domain: &str) -> Option<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if top.parse::<i64>().is_ok() {
        return Some(format!("{whole:?} is invalid: top-level domain {top:?} cannot be all digits"));
    }
    for (i, label) in labels.iter().enumerate() {
        if i + 1 == labels.len() && label.is_empty() {
            return None;
        }
        if !is_dns1123_label(label) {
            return Some(label_problem(whole, label));
        }
    }
    None
}

fn label_problem(whole: &str, label: &str) -> String {
    if label.contains('*') {
        format!("{whole:?} is invalid: \"*\" is only allowed as the whole first label (\"*.example.com\" or \"*\")")
    } else {
        format!("{whole:?} is invalid: label {label:?} is not a DNS-1123 label")
    }
}

/// `outbound_.<port>_._.<host>`: a port with a digit and a host with a letter.
fn auto_sni_problem(host: &str) -> Option<String> {
    let parts: Vec<&str> = host.split('_').collect();
    let port = parts.get(1).map(|p| p.trim_matches('.')).unwrap_or_default();
    let name = parts.get(3).map(|p| p.trim_matches('.')).unwrap_or_default();
    let valid =
        parts.len() >= 4 && port.bytes().any(|b| b.is_ascii_digit()) && name.bytes().any(|b| b.is_ascii_alphabetic());
    (!valid).then(|| format!("{host:?} is invalid: generated SNI names have the form outbound_.<port>_._.<hostname>"))
}

/// Whether two hosts (either may start with `*`) match some name in common, as Istio's duplicate check sees it.
fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a), Some(b)) => {
            if a.len() < b.len() {
                b.ends_with(a)
            } else {
                a.ends_with(b)
            }
        }
        (Some(a), None) => b.ends_with(a),
        (None, Some(b)) => a.ends_with(b),
        (None, None) => a == b,
    }
}

/// Whether every name `inner` matches is also matched by `outer`.
fn host_subset_of(inner: &str, outer: &str) -> bool {
    match (inner.strip_prefix('*'), outer.strip_prefix('*')) {
        (Some(inner), Some(outer)) => inner.len() >= outer.len() && inner.ends_with(outer),
        (Some(_), None) => false,
        (None, Some(outer)) => inner.ends_with(outer),
        (None, None) => inner == outer,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------------

/// A string field that is present and non-empty (protobuf treats `""` as unset).
fn is_set(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

/// Status codes Go's `net/http` knows, which Istio accepts in `retryOn`.
fn is_known_http_status(text: &str) -> bool {
    let Ok(code) = text.parse::<u32>() else { return false };
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

/// Length of the bytes a standard (padded) base64 text decodes to, or `None` when it is not base64.
fn base64_decoded_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return None;
    }
    let body = &bytes[..bytes.len() - padding];
    if !body.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/') {
        return None;
    }
    Some(bytes.len() / 4 * 3 - padding)
}

#[cfg(test)]
mod tests;
