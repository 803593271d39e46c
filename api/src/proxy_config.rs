//! `ProxyConfig`: everything one proxy needs to serve, and the contract between `trellisd` and
//! `trellis-proxy`.
//!
//! The control plane's translate function produces it (one per proxy, from the index of policy and
//! workloads); the proxy compiles it into lookup tables once per update and swaps them in whole. It is
//! plain data: no policy semantics are left for the proxy to resolve, names are already fully
//! qualified, and every duration is Go-style text (`1.5s`) so the JSON reads like the YAML it came from.
//!
//! The schema is versioned by [`PROXY_CONFIG_SCHEMA`]; a proxy refuses a config of another schema.
//! `version` is the control plane's opaque version of this particular config, which proxies acknowledge.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues};

/// The schema identifier every `ProxyConfig` carries.
pub const PROXY_CONFIG_SCHEMA: &str = "trellis.dev/proxyconfig/v1alpha1";

/// The whole configuration of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Always [`PROXY_CONFIG_SCHEMA`].
    pub schema: String,
    /// Opaque version assigned by the control plane; acknowledged by the proxy.
    pub version: String,
    /// Who this proxy serves.
    pub node: Node,
    /// Sidecar or gateway.
    pub mode: ProxyMode,
    /// Ports of the local workload, as seen by the inbound capture (sidecar mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<InboundListener>,
    /// Where the local workload's outbound traffic goes (sidecar mode).
    #[serde(default)]
    pub outbound: Outbound,
    /// Ports a gateway listens on (gateway mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_listeners: Vec<GatewayListener>,
    /// Upstream clusters that routes send to, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    /// Access logs, metrics and tracing.
    #[serde(default)]
    pub telemetry: Telemetry,
}

/// The workload a proxy runs beside.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Unique id of the proxy (pod name and namespace, or a local name).
    pub id: String,
    pub namespace: String,
    pub service_account: String,
    /// SPIFFE identity, `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.
    pub identity: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a proxy is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProxyMode {
    #[default]
    Sidecar,
    Gateway,
}

/// The application protocol of a port or connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// Sniffed per connection.
    #[default]
    Detect,
    Http,
    Http2,
    Grpc,
    Tls,
    Tcp,
}

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
}

/// A compiled authorization policy: its action and the rules of which any one must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// `namespace/name` of the policy, for logs and `trellis explain`.
    pub policy: String,
    pub action: AuthorizationAction,
    /// Empty with ALLOW means "allow nothing".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<serde_json::Value>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub forward_original_token: bool,
}

/// A header a JWT is read from, with the prefix to strip (`Bearer `).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

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

/// Header operations, applied in the order set, add, remove.
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
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub per_try_timeout: Option<Duration>,
    /// Envoy-style conditions (`5xx`, `gateway-error`, `connect-failure`, `retriable-4xx`, `reset`, status codes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub backoff: Option<Duration>,
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

/// A set of endpoints that traffic is balanced over: a service port, or one subset of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Istio-style name: `outbound|<port>|<subset>|<fqdn>`.
    pub name: String,
    /// Fully qualified service name.
    pub service: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: UpstreamTls,
}

/// One backend instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub address: SocketAddr,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// SPIFFE identity the endpoint must present under mutual TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
    /// Relative weight; 1 when absent.
    #[serde(default = "one")]
    pub weight: u32,
    /// Whether a Trellis proxy fronts the endpoint (so mTLS and HTTP/2 multiplexing apply).
    #[serde(default)]
    pub meshed: bool,
}

fn one() -> u32 {
    1
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    /// Latency-aware: peak-EWMA with power of two choices (the default, as linkerd2-proxy).
    #[default]
    PeakEwma,
    RoundRobin,
    Random,
    LeastRequest,
    /// Consistent hash of a request property.
    ConsistentHash(HashKey),
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    Header(String),
    Cookie {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
        ttl: Option<Duration>,
    },
    SourceIp,
    QueryParameter(String),
}

/// Limits on connections and requests to a cluster (circuit breaking).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text")]
    pub idle_timeout: Option<Duration>,
}

/// Ejection of misbehaving endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(with = "duration_text::required")]
    pub interval: Duration,
    #[serde(with = "duration_text::required")]
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    #[serde(default)]
    pub min_health_percent: u32,
}

/// How the proxy talks to a cluster's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamTls {
    /// Mutual TLS with mesh identities to meshed endpoints, plain text to the others (Istio's auto mTLS).
    #[default]
    Auto,
    /// Mesh mutual TLS always.
    IstioMutual,
    /// Plain text.
    Disable,
    /// TLS to an external server, verified against system roots or `ca_certificates`.
    Simple { sni: Option<String>, ca_certificates: Option<String> },
}

/// Telemetry settings of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default)]
    pub access_log: bool,
    #[serde(default)]
    pub access_log_json: bool,
    #[serde(default)]
    pub tracing_sampling_percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin_endpoint: Option<String>,
    #[serde(default)]
    pub istio_metric_names: bool,
}

impl ProxyConfig {
    /// An empty configuration of the current schema for `node`.
    pub fn new(version: impl Into<String>, node: Node, mode: ProxyMode) -> Self {
        Self {
            schema: PROXY_CONFIG_SCHEMA.to_owned(),
            version: version.into(),
            node,
            mode,
            inbound: Vec::new(),
            outbound: Outbound::default(),
            gateway_listeners: Vec::new(),
            clusters: Vec::new(),
            telemetry: Telemetry::default(),
        }
    }

    /// Consistency checks a proxy runs before accepting a config: the schema is ours, every route
    /// names a cluster that exists, weights are not all zero, and names are unique.
    pub fn check(&self) -> Issues {
        let mut issues = Issues::default();
        if self.schema != PROXY_CONFIG_SCHEMA {
            let message = format!("schema {:?} is not {PROXY_CONFIG_SCHEMA:?}", self.schema);
            issues.error(&FieldPath::of("schema"), message);
        }
        let mut clusters = BTreeSet::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            if !clusters.insert(cluster.name.as_str()) {
                issues.error(
                    &FieldPath::of("clusters").index(i).key("name"),
                    format!("cluster {:?} is defined twice", cluster.name),
                );
            }
        }
        let outbound = self
            .outbound
            .virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, vh)| (FieldPath::of("outbound").key("virtualHosts").index(i), vh));
        let gateway = self.gateway_listeners.iter().enumerate().flat_map(|(l, listener)| {
            listener
                .virtual_hosts
                .iter()
                .enumerate()
                .map(move |(i, vh)| (FieldPath::of("gatewayListeners").index(l).key("virtualHosts").index(i), vh))
        });
        for (path, vhost) in outbound.chain(gateway) {
            check_weighted(&path.key("tcp"), &vhost.tcp, &clusters, &mut issues);
            for (r, route) in vhost.routes.iter().enumerate() {
                let at = path.key("routes").index(r);
                if let RouteAction::Forward { clusters: targets, .. } = &route.action {
                    check_weighted(&at.key("action").key("clusters"), targets, &clusters, &mut issues);
                }
                for (m, mirror) in route.mirrors.iter().enumerate() {
                    if !clusters.contains(mirror.cluster.as_str()) {
                        issues.error(&at.key("mirrors").index(m), format!("unknown cluster {:?}", mirror.cluster));
                    }
                }
            }
        }
        issues
    }
}

fn check_weighted(path: &FieldPath, targets: &[WeightedCluster], clusters: &BTreeSet<&str>, issues: &mut Issues) {
    for (i, target) in targets.iter().enumerate() {
        if !clusters.contains(target.cluster.as_str()) {
            issues.error(&path.index(i).key("cluster"), format!("unknown cluster {:?}", target.cluster));
        }
    }
    if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
        issues.error(path, "all weights are zero");
    }
}

/// Serde for `Option<Duration>` as Go-style text (`1.5s`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&crate::duration::format(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| crate::duration::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// The same for a `Duration` that must be present.
    pub mod required {
        use super::*;

        pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&crate::duration::format(*value))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
            let text = String::deserialize(deserializer)?;
            crate::duration::parse(&text).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests;
