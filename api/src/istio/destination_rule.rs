//! `DestinationRule` (networking.istio.io): what happens to traffic for a host once routing has picked
//! it: load balancing, connection pools, outlier detection, upstream TLS, and named subsets.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_MESSAGE, DURATION_RULE, Labels, WorkloadSelector};
use crate::{FieldPath, Issues, Validate, duration, status::Status};

/// Largest `maglev.tableSize` Istio accepts (exclusive).
const MAGLEV_TABLE_SIZE_LIMIT: u64 = 5_000_011;
/// Largest ring size Envoy accepts for a ring-hash balancer.
const RING_SIZE_MAX: u64 = 8_388_608;
/// Topology labels that `failover` already implies, so they cannot also be listed in `failoverPriority`.
const TOPOLOGY_LABELS: [&str; 3] =
    ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"];

/// Policy for traffic to a host, with optional named subsets of its endpoints.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    status = "Status",
    shortname = "dr",
    category = "istio-io",
    category = "networking-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service this applies to, as a registry name (short names resolve in the rule's namespace).
    pub host: String,
    /// Policy for all traffic to the host; subsets and ports can override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of the host's endpoints, selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Vec<Subset>>,
    /// Namespaces that see this rule (`.` own, `*` all); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
    /// Workloads whose outbound traffic this applies to; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// Policy for traffic to a host or subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// How endpoints are chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of endpoints that keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Overrides for single destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 4096))]
    pub port_level_settings: Option<Vec<PortTrafficPolicy>>,
    /// Tunnel the connection through a proxy (HTTP CONNECT or POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Caps the share of requests that may be retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Policy for one destination port; the port-scoped subset of [`TrafficPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The destination port this applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// How endpoints are chosen on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier ejection on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// A port by number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub number: Option<u32>,
}

/// A named group of the host's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Name that routes refer to.
    pub name: String,
    /// Endpoint labels that select the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// Policy for this subset, overriding the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// A standard load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Let the proxy pick its default.
    Unspecified,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// A random healthy endpoint.
    Random,
    /// Forward to the original destination address.
    Passthrough,
    /// Endpoints in turn.
    RoundRobin,
    /// The fewer of two random endpoints' outstanding requests.
    LeastRequest,
}

/// How endpoints are chosen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.simple) ? 1 : 0) + (has(self.consistentHash) ? 1 : 0) + (has(self.backendUtilization) ? 1 : 0) <= 1").message("only one of simple, consistentHash or backendUtilization can be set"))]
pub struct LoadBalancerSettings {
    /// A standard algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Sticky choice by a hash of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Weights from endpoint-reported utilization (ORCA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<BackendUtilizationLb>,
    /// Locality-aware weighting and failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Zone-aware routing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    /// Slow-start window for new endpoints (older form of `warmup.duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub warmup_duration_secs: Option<String>,
    /// Slow start for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Sticky load balancing by a hash of part of the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.httpHeaderName) ? 1 : 0) + (has(self.httpCookie) ? 1 : 0) + (has(self.useSourceIp) ? 1 : 0) + (has(self.httpQueryParameterName) ? 1 : 0) <= 1").message("only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set"))]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.ringHash) ? 1 : 0) + (has(self.maglev) ? 1 : 0) <= 1").message("only one of ringHash or maglev can be set"))]
pub struct ConsistentHashLb {
    /// Hash this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash this cookie, creating it when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash the client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Use a ring hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Use Maglev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: minimum ring size; use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// A cookie to hash, generated by the proxy when the request lacks it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Path of a generated cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie; `0s` makes it a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Extra attributes of a generated cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<CookieAttribute>>,
}

/// One attribute of a generated cookie.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Ring-hash settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum number of ring entries; the proxy's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size; a prime below 5000011.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Weights from utilization the endpoints report (ORCA).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendUtilizationLb {
    /// Time without a report after which an endpoint's weight is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_expiration_period: Option<String>,
    /// Time after the first report before its weight is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_stabilization_period: Option<String>,
    /// How often weights are recomputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_update_period: Option<String>,
    /// Penalty multiplier for the endpoint's error rate, as a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub error_utilization_penalty_percent: Option<u32>,
    /// Named metrics used as utilization when CPU utilization is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_names_for_computing_utilization: Option<Vec<String>>,
}

/// Locality-aware load balancing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Explicit traffic shares from source localities to destination localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute: Option<Vec<LocalityDistribute>>,
    /// Region to fail over to when a region has no healthy endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<LocalityFailover>>,
    /// Labels, in order, that rank endpoints for failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<Vec<String>>,
    /// Turns locality load balancing on or off; mesh default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic shares for clients in one locality.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Source locality (`region/zone/subzone`, trailing `*` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination locality to weight (percent); weights sum to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("additionalProperties" = {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 4294967295u32}))]
    pub to: Option<BTreeMap<String, u32>>,
}

/// A region to fail over from and the region to fail over to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Region that fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Region that takes its traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Zone-aware routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLbSetting {
    /// Turns zone-aware routing on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Region to fail over to when a region has no healthy endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<LocalityFailover>>,
    /// Labels, in order, that rank endpoints for failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<Vec<String>>,
    /// Fewest endpoints for zone-aware routing to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub min_cluster_size: Option<u32>,
}

/// Slow start: new endpoints get a share of traffic that grows over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Length of the window.
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub duration: String,
    /// Share of its full weight an endpoint starts with, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub minimum_percent: Option<f64>,
    /// Curve of the increase; 1 is linear, higher ramps faster early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub aggression: Option<f64>,
}

/// Whether HTTP/1.1 connections are upgraded to HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Mesh default.
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Upgrade.
    Upgrade,
}

/// Limits on connections and requests to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// Limits common to HTTP and TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// TCP connection limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Most connections to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// Connect timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub connect_timeout: Option<String>,
    /// TCP keepalive probes on upstream sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Longest lifetime of a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub max_connection_duration: Option<String>,
    /// Idle time after which a connection is closed; `0s` disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// TCP keepalive settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub time: Option<String>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: Option<String>,
}

/// HTTP request limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Most requests queued while waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Most active requests to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Most requests per connection; 0 is unlimited, 1 disables keepalive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Most retries in flight to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Idle time after which a connection is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub idle_timeout: Option<String>,
    /// Whether HTTP/1.1 connections are upgraded to HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's HTTP version towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Most concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 PING keepalive on upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// HTTP/2 PING keepalive settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    /// Time between PINGs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: Option<String>,
    /// Time to wait for a PING reply before closing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
}

/// Ejection of endpoints that keep failing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Count local-origin failures (resets, timeouts) apart from upstream errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Consecutive local-origin failures before ejection (needs the split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive 502/503/504s before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xx responses before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub consecutive_5xx_errors: Option<u32>,
    /// Response codes that count as errors for ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub outlier_detection_http_error_codes: Option<Vec<u32>>,
    /// Deprecated: consecutive gateway errors; use `consecutiveGatewayErrors` or `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Time between ejection sweeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: Option<String>,
    /// Base ejection time, multiplied by the number of ejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub base_ejection_time: Option<String>,
    /// Most endpoints that may be ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Ejection stops when fewer endpoints than this percentage are healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
}

/// The TLS mode towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text.
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// Mutual TLS with the given client certificate.
    Mutual,
    /// Mutual TLS with the mesh's own certificates.
    IstioMutual,
}

/// TLS towards the upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// The mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// File of the client certificate (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// File of the client's private key (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// File of the CA bundle that verifies the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding the certificates instead of files (SIMPLE, MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Identities the server certificate must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
    /// Server name sent in the TLS handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verifying the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// File of the certificate revocation list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// Tunnel the connection through a proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host the tunnel leads to (FQDN or IP).
    pub target_host: String,
    /// Port the tunnel leads to.
    #[schemars(range(max = 4294967295u32))]
    pub target_port: u32,
}

/// PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProxyProtocolVersion {
    /// Human-readable header.
    V1,
    /// Binary header.
    V2,
}

/// Send a PROXY protocol header to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// The header version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// Cap on the share of requests that may be retries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Most retries as a percentage of active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub min_retry_concurrency: Option<u32>,
    /// Window over which the budget is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl Validate for DestinationRuleSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let host = path.key("host");
        if self.host.is_empty() {
            issues.error(&host, "host is required");
        } else if let Err(reason) = wildcard_domain(&self.host) {
            issues.error(&host, reason);
        }
        self.traffic_policy.validate(&path.key("trafficPolicy"), issues);

        let mut names = BTreeSet::new();
        for (i, subset) in self.subsets.iter().flatten().enumerate() {
            let at = path.key("subsets").index(i);
            if !subset.name.is_empty() && !names.insert(subset.name.as_str()) {
                issues.error(&at.key("name"), format!("duplicate subset name {:?}", subset.name));
            }
            subset.validate(&at, issues);
        }

        validate_export_to(path, self.export_to.as_deref(), self.workload_selector.is_some(), issues);

        if let Some(selector) = &self.workload_selector {
            let at = path.key("workloadSelector");
            selector.validate(&at, issues);
            if selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty) {
                issues.warn(&at, "workload selector has no labels, so it selects every workload in the namespace");
            }
        }
    }
}

impl Validate for Subset {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let name = path.key("name");
        if self.name.is_empty() {
            issues.error(&name, "subset name must not be empty");
        } else if !is_dns1123_label(&self.name) {
            issues.error(&name, format!("subset name {:?} must be a DNS label (letters, digits, '-')", self.name));
        }
        let labels = path.key("labels");
        match &self.labels {
            Some(labels_map) if !labels_map.is_empty() => {
                for (key, value) in labels_map {
                    if let Err(reason) = label_key(key) {
                        issues.error(&labels.key(key), reason);
                    }
                    if !is_label_value(value) {
                        issues.error(&labels.key(key), format!("invalid label value {value:?}"));
                    }
                }
            }
            _ => issues.warn(
                &labels,
                format!(
                    "subset {:?} has no labels; unless the host is a ServiceEntry it selects every endpoint",
                    self.name
                ),
            ),
        }
        self.traffic_policy.validate(&path.key("trafficPolicy"), issues);
    }
}

impl Validate for TrafficPolicy {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let empty = self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_none()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none();
        if empty {
            issues.error(path, "traffic policy must set at least one field");
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            issues.error(path, "tunnel and proxyProtocol must not be set together");
        }
        self.outlier_detection.validate(&path.key("outlierDetection"), issues);
        self.connection_pool.validate(&path.key("connectionPool"), issues);
        if let Some(lb) = &self.load_balancer {
            lb.validate_with(&path.key("loadBalancer"), self.outlier_detection.is_some(), issues);
        }
        self.tls.validate(&path.key("tls"), issues);
        if let Some(ports) = &self.port_level_settings {
            validate_port_level_settings(&path.key("portLevelSettings"), ports, issues);
        }
        self.tunnel.validate(&path.key("tunnel"), issues);
        self.retry_budget.validate(&path.key("retryBudget"), issues);
    }
}

fn validate_port_level_settings(path: &FieldPath, ports: &[PortTrafficPolicy], issues: &mut Issues) {
    if ports.len() > 4096 {
        issues.error(path, format!("at most 4096 port level settings are allowed, found {}", ports.len()));
    }
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = path.index(i);
        match port.port.as_ref().and_then(|p| p.number) {
            None => issues.error(&at.key("port"), "port level setting needs port.number"),
            Some(number) => {
                let number_at = at.key("port").key("number");
                if !(1..=65535).contains(&number) {
                    issues.error(&number_at, format!("port {number} is out of range 1-65535"));
                } else if !seen.insert(number) {
                    issues.error(&number_at, format!("port {number} has more than one port level setting"));
                }
            }
        }
        port.validate(&at, issues);
    }
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
        {
            issues.error(path, "port level setting must set at least one field besides port");
        }
        self.outlier_detection.validate(&path.key("outlierDetection"), issues);
        self.connection_pool.validate(&path.key("connectionPool"), issues);
        if let Some(lb) = &self.load_balancer {
            lb.validate_with(&path.key("loadBalancer"), self.outlier_detection.is_some(), issues);
        }
        self.tls.validate(&path.key("tls"), issues);
    }
}

impl LoadBalancerSettings {
    /// Validates these settings; `has_outlier_detection` says whether the same policy level ejects
    /// outliers (locality failover does nothing without it).
    pub fn validate_with(&self, path: &FieldPath, has_outlier_detection: bool, issues: &mut Issues) {
        let kinds = [self.simple.is_some(), self.consistent_hash.is_some(), self.backend_utilization.is_some()];
        if kinds.iter().filter(|set| **set).count() > 1 {
            issues.error(path, "only one of simple, consistentHash or backendUtilization can be set");
        }
        self.consistent_hash.validate(&path.key("consistentHash"), issues);
        self.backend_utilization.validate(&path.key("backendUtilization"), issues);
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate_with(&path.key("localityLbSetting"), has_outlier_detection, issues);
        }
        self.zone_aware_lb_setting.validate(&path.key("zoneAwareLbSetting"), issues);
        ms_duration(issues, &path.key("warmupDurationSecs"), self.warmup_duration_secs.as_deref());
        self.warmup.validate(&path.key("warmup"), issues);
    }
}

impl Validate for LoadBalancerSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        self.validate_with(path, true, issues);
    }
}

impl Validate for ConsistentHashLb {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|set| **set).count() {
            0 => issues.warn(
                path,
                "consistentHash names no hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName), so requests are not sticky",
            ),
            1 => {}
            _ => issues.error(
                path,
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set",
            ),
        }
        if self.http_header_name.as_deref() == Some("") {
            issues.error(&path.key("httpHeaderName"), "httpHeaderName must not be empty");
        }
        if self.http_query_parameter_name.as_deref() == Some("") {
            issues.error(&path.key("httpQueryParameterName"), "httpQueryParameterName must not be empty");
        }
        self.http_cookie.validate(&path.key("httpCookie"), issues);

        if self.ring_hash.is_some() && self.maglev.is_some() {
            issues.error(path, "only one of ringHash or maglev can be set");
        }
        if let Some(size) = self.minimum_ring_size.filter(|size| *size != 0) {
            let at = path.key("minimumRingSize");
            issues.warn(&at, "minimumRingSize is deprecated, use ringHash.minimumRingSize");
            if self.ring_hash.is_some() || self.maglev.is_some() {
                issues.error(&at, "only one of minimumRingSize or ringHash/maglev can be set");
            }
            ring_size(issues, &at, size);
        }
        if let Some(size) = self.ring_hash.as_ref().and_then(|r| r.minimum_ring_size) {
            ring_size(issues, &path.key("ringHash").key("minimumRingSize"), size);
        }
        if let Some(maglev) = &self.maglev {
            let at = path.key("maglev").key("tableSize");
            match maglev.table_size.unwrap_or(0) {
                0 => issues.error(&at, "tableSize must be set for maglev"),
                size if size >= MAGLEV_TABLE_SIZE_LIMIT => {
                    issues.error(&at, format!("tableSize {size} must be less than {MAGLEV_TABLE_SIZE_LIMIT}"))
                }
                size if !is_prime(size) => issues.error(&at, format!("tableSize {size} must be a prime number")),
                _ => {}
            }
        }
    }
}

fn ring_size(issues: &mut Issues, path: &FieldPath, size: u64) {
    if size > RING_SIZE_MAX {
        issues.error(path, format!("ring size {size} must be at most {RING_SIZE_MAX}"));
    }
}

/// Primality exactly as Envoy (and Istio) check a Maglev table size: trial division, 1 counts as prime.
fn is_prime(x: u64) -> bool {
    if x == 0 {
        return false;
    }
    if x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut factor = 3;
    while factor * factor <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

impl Validate for HttpCookie {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.name.is_empty() {
            issues.error(&path.key("name"), "cookie name is required");
        }
        syntax_duration(issues, &path.key("ttl"), self.ttl.as_deref());
        for (i, attribute) in self.attributes.iter().flatten().enumerate() {
            if attribute.name.is_empty() {
                issues.error(&path.key("attributes").index(i).key("name"), "cookie attribute name is required");
            }
        }
    }
}

impl Validate for BackendUtilizationLb {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        syntax_duration(issues, &path.key("weightExpirationPeriod"), self.weight_expiration_period.as_deref());
        syntax_duration(issues, &path.key("weightStabilizationPeriod"), self.weight_stabilization_period.as_deref());
        syntax_duration(issues, &path.key("weightUpdatePeriod"), self.weight_update_period.as_deref());
    }
}

impl LocalityLbSetting {
    /// Validates these settings as Istio does; `has_outlier_detection` as in
    /// [`LoadBalancerSettings::validate_with`].
    pub fn validate_with(&self, path: &FieldPath, has_outlier_detection: bool, issues: &mut Issues) {
        let distribute = self.distribute.as_deref().unwrap_or_default();
        let failover = self.failover.as_deref().unwrap_or_default();
        let priority = self.failover_priority.as_deref().unwrap_or_default();
        if !distribute.is_empty() && !failover.is_empty() {
            issues.error(path, "only one of distribute or failover can be set");
        }
        if !failover.is_empty() {
            for (i, label) in priority.iter().enumerate() {
                if TOPOLOGY_LABELS.contains(&label.as_str()) {
                    issues.error(
                        &path.key("failoverPriority").index(i),
                        format!("topology label {label:?} cannot be listed together with failover"),
                    );
                }
            }
        }

        let mut sources = Vec::new();
        for (i, entry) in distribute.iter().enumerate() {
            let at = path.key("distribute").index(i);
            sources.push(entry.from.as_deref().unwrap_or_default());
            let to = entry.to.as_ref();
            let mut total: u64 = 0;
            for (locality, weight) in to.into_iter().flatten() {
                if !(1..=100).contains(weight) {
                    issues.error(
                        &at.key("to").key(locality),
                        format!("locality weight {weight} must be between 1 and 100"),
                    );
                }
                total += u64::from(*weight);
            }
            if total != 100 {
                issues.error(&at.key("to"), format!("locality weights sum to {total}, they must sum to 100"));
            }
            let targets: Vec<&str> = to.into_iter().flatten().map(|(locality, _)| locality.as_str()).collect();
            if let Err(reason) = localities(&targets) {
                issues.error(&at.key("to"), reason);
            }
        }
        if let Err(reason) = localities(&sources) {
            issues.error(&path.key("distribute"), reason);
        }

        if (!failover.is_empty() || !priority.is_empty()) && !has_outlier_detection {
            issues.warn(path, "failover only takes effect with an outlierDetection policy");
        }
        validate_failover(&path.key("failover"), failover, issues);
    }
}

fn validate_failover(path: &FieldPath, failover: &[LocalityFailover], issues: &mut Issues) {
    for (i, entry) in failover.iter().enumerate() {
        let at = path.index(i);
        let from = entry.from.as_deref().unwrap_or_default();
        let to = entry.to.as_deref().unwrap_or_default();
        if from == to {
            issues.error(&at, format!("failover from and to must be different regions, both are {from:?}"));
        }
        for (key, region) in [("from", from), ("to", to)] {
            if region.contains('/') {
                issues.error(&at.key(key), format!("failover names a region only, not {region:?}"));
            }
            if region.contains('*') {
                issues.error(&at.key(key), format!("failover region {region:?} must not contain '*'"));
            }
        }
    }
}

/// Checks a list of localities (`region/zone/subzone`, optional trailing `*`) for syntax and overlap.
fn localities(list: &[&str]) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for locality in list {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!("locality {locality:?} may hold one '*' and only at the end"));
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|part| part.is_empty()) {
            return Err(format!("locality {locality:?} must not have an empty region, zone or subzone"));
        }
        // A trailing `*` part, or a shorter locality, covers every longer one below it.
        let covers = |a: &[&str], b: &[&str]| {
            a.iter().zip(b.iter()).all(|(x, y)| x == y || *x == "*") && (a.len() <= b.len() || a.last() == Some(&"*"))
        };
        if seen.iter().any(|prev| covers(prev, &parts) || covers(&parts, prev)) {
            return Err(format!("locality {locality:?} overlaps one listed before it"));
        }
        seen.push(parts);
    }
    Ok(())
}

impl Validate for ZoneAwareLbSetting {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.min_cluster_size == Some(0) {
            issues.error(&path.key("minClusterSize"), "minClusterSize must be at least 1");
        }
        validate_failover(&path.key("failover"), self.failover.as_deref().unwrap_or_default(), issues);
    }
}

impl Validate for WarmupConfiguration {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        ms_duration(issues, &path.key("duration"), Some(&self.duration));
        if let Some(percent) = self.minimum_percent
            && !(0.0..=100.0).contains(&percent)
        {
            issues.error(&path.key("minimumPercent"), format!("minimumPercent {percent} must be between 0 and 100"));
        }
        if let Some(aggression) = self.aggression
            && (aggression.is_nan() || aggression < 1.0)
        {
            issues.error(&path.key("aggression"), format!("aggression {aggression} must be at least 1"));
        }
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.tcp.is_none() && self.http.is_none() {
            issues.error(path, "connection pool must set tcp or http");
        }
        self.tcp.validate(&path.key("tcp"), issues);
        self.http.validate(&path.key("http"), issues);
    }
}

impl Validate for TcpSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        non_negative(issues, &path.key("maxConnections"), self.max_connections);
        ms_duration(issues, &path.key("connectTimeout"), self.connect_timeout.as_deref());
        ms_duration(issues, &path.key("maxConnectionDuration"), self.max_connection_duration.as_deref());
        let idle = path.key("idleTimeout");
        if let Some(text) = self.idle_timeout.as_deref() {
            // `0s` turns the idle timeout off; anything else must be a whole number of milliseconds >= 1ms.
            match duration::parse(text) {
                Ok(d) if d.is_zero() => {}
                Ok(_) => ms_duration(issues, &idle, Some(text)),
                Err(err) => issues.error(&idle, err.to_string()),
            }
        }
        if let Some(keepalive) = &self.tcp_keepalive {
            let at = path.key("tcpKeepalive");
            ms_duration(issues, &at.key("time"), keepalive.time.as_deref());
            ms_duration(issues, &at.key("interval"), keepalive.interval.as_deref());
        }
    }
}

impl Validate for HttpSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        non_negative(issues, &path.key("http1MaxPendingRequests"), self.http1_max_pending_requests);
        non_negative(issues, &path.key("http2MaxRequests"), self.http2_max_requests);
        non_negative(issues, &path.key("maxRequestsPerConnection"), self.max_requests_per_connection);
        non_negative(issues, &path.key("maxRetries"), self.max_retries);
        non_negative(issues, &path.key("maxConcurrentStreams"), self.max_concurrent_streams);
        ms_duration(issues, &path.key("idleTimeout"), self.idle_timeout.as_deref());
        if self.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && self.use_client_protocol == Some(true) {
            issues.error(
                &path.key("useClientProtocol"),
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(keepalive) = &self.http2_keep_alive {
            let at = path.key("http2KeepAlive");
            ms_duration(issues, &at.key("interval"), keepalive.interval.as_deref());
            ms_duration(issues, &at.key("timeout"), keepalive.timeout.as_deref());
        }
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        ms_duration(issues, &path.key("baseEjectionTime"), self.base_ejection_time.as_deref());
        ms_duration(issues, &path.key("interval"), self.interval.as_deref());
        if self.consecutive_errors.is_some_and(|n| n != 0) {
            issues.warn(
                &path.key("consecutiveErrors"),
                "consecutiveErrors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors",
            );
        }
        if self.consecutive_local_origin_failures.is_some_and(|n| n > 0)
            && self.split_external_local_origin_errors != Some(true)
        {
            issues.error(
                &path.key("consecutiveLocalOriginFailures"),
                "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
            );
        }
        percent(issues, &path.key("maxEjectionPercent"), self.max_ejection_percent);
        percent(issues, &path.key("minHealthPercent"), self.min_health_percent);
        for (i, code) in self.outlier_detection_http_error_codes.iter().flatten().enumerate() {
            if !(100..=599).contains(code) {
                issues.error(
                    &path.key("outlierDetectionHttpErrorCodes").index(i),
                    format!("status code {code} must be between 100 and 599"),
                );
            }
        }
    }
}

impl Validate for ClientTlsSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let set = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
        let has_credential = set(&self.credential_name);
        let has_sans = self.subject_alt_names.is_some();
        if self.insecure_skip_verify == Some(true) {
            let conflicts: &[(&str, bool)] = match self.mode {
                Some(ClientTlsMode::Simple) => &[
                    ("caCertificates", set(&self.ca_certificates)),
                    ("credentialName", has_credential),
                    ("subjectAltNames", has_sans),
                ],
                Some(ClientTlsMode::Mutual) => {
                    &[("caCertificates", set(&self.ca_certificates)), ("subjectAltNames", has_sans)]
                }
                _ => &[],
            };
            for (field, present) in conflicts {
                if *present {
                    issues.error(&path.key(field), format!("{field} cannot be set when insecureSkipVerify is true"));
                }
            }
        }
        let simple_or_mutual = matches!(self.mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual));
        if simple_or_mutual && has_credential {
            for (field, value) in [
                ("clientCertificate", &self.client_certificate),
                ("privateKey", &self.private_key),
                ("caCertificates", &self.ca_certificates),
                ("caCrl", &self.ca_crl),
            ] {
                if set(value) {
                    issues.error(&path.key(field), format!("{field} cannot be set together with credentialName"));
                }
            }
            return;
        }
        if self.mode == Some(ClientTlsMode::Mutual) {
            if !set(&self.client_certificate) {
                issues.error(&path.key("clientCertificate"), "MUTUAL mode needs clientCertificate (or credentialName)");
            }
            if !set(&self.private_key) {
                issues.error(&path.key("privateKey"), "MUTUAL mode needs privateKey (or credentialName)");
            }
        }
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(protocol) = self.protocol.as_deref()
            && !matches!(protocol, "" | "CONNECT" | "POST")
        {
            issues.error(&path.key("protocol"), format!("tunnel protocol {protocol:?} must be CONNECT or POST"));
        }
        if fqdn(&self.target_host).is_err() && self.target_host.parse::<std::net::IpAddr>().is_err() {
            issues.error(
                &path.key("targetHost"),
                format!("tunnel target host {:?} must be an FQDN or an IP address", self.target_host),
            );
        }
        if !(1..=65535).contains(&self.target_port) {
            issues.error(&path.key("targetPort"), format!("port {} is out of range 1-65535", self.target_port));
        }
    }
}

impl Validate for RetryBudget {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(percent) = self.percent
            && !(0.0..=100.0).contains(&percent)
        {
            issues.error(&path.key("percent"), format!("percent {percent} must be between 0 and 100"));
        }
        syntax_duration(issues, &path.key("budgetInterval"), self.budget_interval.as_deref());
    }
}

/// Istio's `exportTo` rules for a DestinationRule (the rule's own namespace is unknown here, so `.` stands for it).
fn validate_export_to(spec: &FieldPath, export_to: Option<&[String]>, has_selector: bool, issues: &mut Issues) {
    let Some(entries) = export_to.filter(|e| !e.is_empty()) else { return };
    let path = spec.key("exportTo");
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        if !seen.insert(entry.as_str()) {
            issues.error(&at, format!("duplicate exportTo entry {entry:?}"));
        } else if entry != "." && entry != "*" && !is_dns1123_label(entry) {
            issues.error(&at, format!("exportTo entry {entry:?} must be '.', '*' or a namespace name"));
        }
    }
    if seen.contains("*") && entries.len() > 1 {
        issues.error(&path, "exportTo cannot mix '*' with other entries");
    }
    if has_selector {
        if seen.len() > 1 {
            issues.error(&path, "a destination rule with workloadSelector can only be exported to its own namespace");
        } else if seen.contains("*") {
            issues.error(&path, "a destination rule with workloadSelector cannot be exported beyond its own namespace");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small checks
// ---------------------------------------------------------------------------------------------

/// A duration Istio checks with `ValidateDuration`: Go syntax, at least 1ms, whole milliseconds.
fn ms_duration(issues: &mut Issues, path: &FieldPath, value: Option<&str>) {
    let Some(text) = value else { return };
    let before = issues.iter().count();
    issues.duration(path, Some(text));
    if issues.iter().count() == before
        && let Ok(d) = duration::parse(text)
        && d.subsec_nanos() % 1_000_000 != 0
    {
        issues.error(path, format!("duration {text:?} must be a whole number of milliseconds"));
    }
}

/// A duration field Istio leaves unchecked beyond its syntax (zero allowed).
fn syntax_duration(issues: &mut Issues, path: &FieldPath, value: Option<&str>) {
    if let Some(text) = value
        && let Err(err) = duration::parse(text)
    {
        issues.error(path, err.to_string());
    }
}

fn non_negative(issues: &mut Issues, path: &FieldPath, value: Option<i32>) {
    if let Some(n) = value
        && n < 0
    {
        issues.error(path, format!("value {n} must not be negative"));
    }
}

fn percent(issues: &mut Issues, path: &FieldPath, value: Option<i32>) {
    if let Some(n) = value
        && !(0..=100).contains(&n)
    {
        issues.error(path, format!("percentage {n} must be between 0 and 100"));
    }
}

/// A DNS-1123 label as Istio checks one: 1-63 letters, digits and `-`, starting and ending alphanumeric.
fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A first host label that may carry a wildcard: `*`, `*foo`, `*-foo` or a plain label.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*-").or_else(|| s.strip_prefix('*')).unwrap_or(s);
    is_dns1123_label(rest)
}

/// The dot-separated `labels` of host name `domain` (named in messages); the last may be empty (trailing
/// dot) and must not be all digits.
fn dns1123_labels(domain: &str, labels: &str) -> Result<(), String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("domain name {domain:?} is invalid: top level domain {top:?} cannot be all-numeric"));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!("domain name {domain:?} is invalid: label {label:?} is not a DNS label"));
        }
    }
    Ok(())
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name is not allowed".to_owned());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} is longer than 255 characters"));
    }
    Ok(())
}

/// A host that may start with a wildcard label (`*.example.com`, `*`).
fn wildcard_domain(domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!("domain name {domain:?} is invalid: label {first:?} is not a DNS label"));
    }
    rest.map_or(Ok(()), |rest| dns1123_labels(domain, rest))
}

/// A fully qualified domain name without wildcards.
fn fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name, name)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a 1-63 character name.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns1123_label);
        if !valid {
            return Err(format!("label key {key:?} has an invalid prefix {prefix:?}"));
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

/// A label value: empty, or up to 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric))
}

#[cfg(test)]
mod tests;
