//! Upstream clusters: endpoint sets with their load balancing, limits, outlier detection and TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Protocol, duration_text};

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
    /// Cap on retries in flight (Istio's `trafficPolicy.retryBudget`); replaces `maxRetries` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
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

/// Envoy's share of active requests that may be retries when a retry budget names no percent.
pub const DEFAULT_RETRY_BUDGET_PERCENT: f64 = 20.0;
/// Envoy's (and Istio's) retries always allowed by a retry budget when it names no minimum.
pub const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

/// Retries allowed in flight to a cluster at once: `percent` of the requests active on it, but never
/// fewer than `min_retry_concurrency` (Envoy's retry budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of active requests, 0 to 100.
    pub percent: f64,
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { percent: DEFAULT_RETRY_BUDGET_PERCENT, min_retry_concurrency: DEFAULT_MIN_RETRY_CONCURRENCY }
    }
}

/// Ejection of misbehaving endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive failures to connect or resets before ejection. Set only when the rule splits
    /// local-origin failures from upstream answers (`splitExternalLocalOriginErrors`); otherwise a
    /// local-origin failure counts as a 503 from the endpoint, as in Envoy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
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
