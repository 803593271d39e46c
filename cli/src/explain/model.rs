//! What `trellis explain` found, as data: printed as text by `render`, or as JSON with `-o json`.
//!
//! Route, cluster and policy parts reuse the `ProxyConfig` types, so the JSON reads like the config the
//! proxy holds.

use std::collections::BTreeMap;

use serde::Serialize;
use trellis_api::proxy_config::{Cluster, Fault, HeaderOps, Mirror, Protocol, ProxyMode, RetryPolicy, RouteMatch};

/// The whole answer for one request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub request: RequestView,
    pub proxy: ProxyView,
    pub outcome: Outcome,
    /// What the proxy answers itself, when it does (no route, refusal, redirect, direct response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_response: Option<LocalResponse>,
    /// The gateway listener the request arrived on (gateways only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<u16>,
    /// The ports the gateway listens on, when the request's port is not one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<VirtualHostView>,
    /// The routes of the virtual host, in the order they are tried, when none matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes_tried: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteView>,
    /// Weighted clusters of an opaque (TCP or TLS) connection.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<Destination>,
    /// Every cluster the request may reach (destinations, then mirrors), as the proxy holds it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    /// The AuthorizationPolicy verdict at the workload behind the first destination (offline, or with
    /// the YAML given beside `--control-plane`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<super::authz::AuthorizationView>,
    /// What translate left out of this proxy's config (invalid or unsupported policy), as
    /// `Kind namespace/name: field: reason`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// What happens to the request, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// An HTTP route matched: the request is forwarded, redirected or answered directly.
    Routed,
    /// The destination port is opaque (TCP, or TLS by SNI): the connection goes to the weighted clusters.
    Tcp,
    /// A virtual host matched but none of its routes did: 404.
    NoRoute,
    /// No virtual host: a sidecar forwards to the original destination unchanged (ALLOW_ANY).
    Passthrough,
    /// No virtual host: a sidecar refuses destinations outside the registry (REGISTRY_ONLY), 502.
    Refused,
    /// No virtual host at a gateway: 404.
    NoVirtualHost,
    /// The gateway does not listen on the request's port.
    NoListener,
}

impl Outcome {
    /// Whether a virtual host and a route (or TCP clusters) took the request.
    pub fn is_routed(self) -> bool {
        matches!(self, Outcome::Routed | Outcome::Tcp)
    }
}

/// A response the proxy generates itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalResponse {
    pub status: u16,
    pub reason: String,
}

/// The request as routing reads it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    pub method: String,
    pub url: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Header names (lower case) and values, `Host` included.
    pub headers: BTreeMap<String, String>,
}

/// The proxy whose config routed the request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyView {
    pub id: String,
    pub mode: ProxyMode,
    pub namespace: String,
    pub identity: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The config's version, as the control plane would push it.
    pub config_version: String,
}

/// The virtual host that took the request, and how the request's host found it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHostView {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub matched_by: MatchedBy,
}

/// How the request's host named the virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum MatchedBy {
    /// The virtual host's own (fully qualified) name.
    Name,
    /// One of the names clients use for it (`reviews`, `reviews.shop`), or a gateway host.
    Domain(String),
    /// A service address (ClusterIP or ServiceEntry address).
    Address(String),
    /// A wildcard domain (`*.example.com`, `*`).
    Wildcard(String),
}

/// One matched route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    /// The route's name in the config (`namespace/virtualservice#rule`).
    pub name: String,
    pub origin: Origin,
    /// Which match block of the route (in the proxy's config) matched; `None` for a route without blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_block: Option<usize>,
    /// The conditions of that block.
    #[serde(skip_serializing_if = "Option::is_none", rename = "match")]
    pub matched: Option<RouteMatch>,
    /// How many match blocks the route has (0: it matches every request).
    pub blocks: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<Destination>,
    /// The path the upstream sees when the route rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_path: Option<String>,
    /// The `Host` the upstream sees when the route rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_authority: Option<String>,
    /// The `Location` of a redirect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// The body of a direct response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_body: Option<String>,
    /// Go-style duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

impl RouteView {
    /// Forgets what only applies to forwarded requests (timeout, retries, mirrors), for a route the proxy
    /// answers itself.
    pub fn drop_upstream_settings(&mut self) {
        self.timeout = None;
        self.retries = None;
        self.mirrors.clear();
    }
}

/// Where a route comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Origin {
    /// Rule `spec.http[rule]` of a VirtualService. `rule` is `None` when the rule has a name and the
    /// VirtualService itself is not at hand (config fetched from a control plane).
    #[serde(rename_all = "camelCase")]
    VirtualService {
        namespace: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule_name: Option<String>,
    },
    /// Istio's default route of a service no VirtualService routes.
    #[serde(rename_all = "camelCase")]
    Default { host: String },
    /// The HTTPS redirect of a Gateway server with `tls.httpsRedirect`.
    #[serde(rename_all = "camelCase")]
    HttpsRedirect { namespace: String, name: String, server: usize },
    /// A name this version of explain cannot trace back.
    Unknown,
}

/// A weighted destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub cluster: String,
    pub weight: u32,
    /// Share of requests (or connections), 0 to 100.
    pub percent: f64,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}
