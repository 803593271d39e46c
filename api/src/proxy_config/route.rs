//! Outbound and gateway routing: virtual hosts, routes, matches and what a route does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Protocol, duration_text};

/// Outbound traffic of the local workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    /// Destinations the mesh knows, by name and port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// What happens to traffic for destinations the mesh does not know.
    #[serde(default)]
    pub unknown_destinations: UnknownDestinations,
}

/// Treatment of traffic to destinations outside the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UnknownDestinations {
    /// Forwarded to the original destination unchanged (Istio's ALLOW_ANY).
    #[default]
    Passthrough,
    /// Refused: 502 for HTTP, connection reset for TCP (Istio's REGISTRY_ONLY).
    Refuse,
}

/// A gateway port with the virtual hosts bound to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayListener {
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A destination as clients name it, and the routes for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHost {
    /// Fully qualified service name, e.g. `shipping-service.default.svc.cluster.local`.
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// Every name (and address) clients use for it, matched against `Host`/`:authority` without port,
    /// and the service addresses matched against the original destination IP. `*` matches anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// HTTP routes; the first whose match succeeds wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Weighted clusters for opaque TCP traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<WeightedCluster>,
}

/// One HTTP route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// `namespace/name` of the VirtualService and the route's name or index, for logs and explain.
    pub name: String,
    /// Any one must match; empty matches everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// Conditions on a request; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatcher>,
    /// Header name (lower case) to matcher; [`StringMatcher::Present`] checks presence only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatcher>,
    /// Headers that must not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatcher>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Labels the calling workload must carry (resolved by the control plane for sidecars).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
}

/// How a string is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, matched against the whole value.
    Regex(String),
    /// The value exists, whatever it is.
    Present,
}

/// What a route does with a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RouteAction {
    /// Send to one of the clusters, chosen by relative weight.
    Forward {
        clusters: Vec<WeightedCluster>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rewrite: Option<Rewrite>,
    },
    /// Answer with a redirect.
    Redirect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        status: u16,
    },
    /// Answer directly.
    DirectResponse {
        status: u16,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        body: String,
    },
}

/// A cluster and its relative weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// Path and authority rewrites before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the part of the path matched by the route's prefix (or the whole path for exact matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Regex rewrite of the path: (pattern, replacement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Header operations, applied as Envoy does: remove, then set, then add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Retries of one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub per_try_timeout: Option<Duration>,
    /// Envoy-style conditions (`5xx`, `gateway-error`, `connect-failure`, `retriable-4xx`, `reset`, status codes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Base interval of the exponential back-off (Envoy's 25 ms when absent).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub backoff: Option<Duration>,
    /// Retries may go back to endpoints already tried (Istio's `retryIgnorePreviousHosts: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_previous_hosts: bool,
    /// Istio's `retryRemoteLocalities`. Without locality-aware balancing every attempt may pick an
    /// endpoint in any locality, so it changes nothing yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote_localities: bool,
}

/// Retries Istio gives a route whose rule sets no `retries`.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Conditions of Istio's default retry policy (its retriable status code is 503).
pub const DEFAULT_RETRY_ON: &[&str] = &["connect-failure", "refused-stream", "unavailable", "cancelled", "503"];

impl RetryPolicy {
    /// Istio's default policy, which every route whose rule sets no `retries` carries: two retries on
    /// connection failures, refused streams, gRPC `unavailable`/`cancelled` and 503, no timeout.
    pub fn istio_default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            per_try_timeout: None,
            retry_on: DEFAULT_RETRY_ON.iter().map(|s| (*s).to_owned()).collect(),
            backoff: None,
            allow_previous_hosts: false,
            remote_localities: false,
        }
    }
}

/// Fault injection of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A delay added to a share of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(with = "duration_text::required")]
    pub fixed_delay: Duration,
    pub percentage: f64,
}

/// gRPC status names, each at the index of its code (`UNAVAILABLE` is 14).
pub const GRPC_STATUS_NAMES: [&str; 17] = [
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

/// An error returned for a share of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    pub percentage: f64,
}

/// A copy of traffic sent to another cluster, its response ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    pub percentage: f64,
}
