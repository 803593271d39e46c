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

use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues};

mod cluster;
mod duration_text;
mod inbound;
mod route;

pub use cluster::*;
pub use inbound::*;
pub use route::*;

/// The schema identifier every `ProxyConfig` carries.
pub const PROXY_CONFIG_SCHEMA: &str = "trellis.dev/proxyconfig/v1alpha1";

/// Port of the inbound listener that stands for every workload port without a listener of its own.
pub const INBOUND_CATCH_ALL_PORT: u16 = 0;

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
    /// Ports of the local workload, as seen by the inbound capture (sidecar mode). A listener with
    /// port [`INBOUND_CATCH_ALL_PORT`] applies to every port not listed (Envoy's inbound passthrough
    /// chain); without one, such ports are PERMISSIVE with no policy.
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

impl Protocol {
    /// The protocol Istio infers from a Service port: `appProtocol` first, else the port name's
    /// prefix before the first `-` (`http-web`, `grpc`, `tcp-db`). Unknown or absent means sniffing.
    pub fn for_port(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
        let by_token = |token: &str| match token.to_ascii_lowercase().as_str() {
            "http" => Some(Protocol::Http),
            "http2" | "h2c" | "kubernetes.io/h2c" => Some(Protocol::Http2),
            "grpc" | "grpc-web" => Some(Protocol::Grpc),
            "https" | "tls" => Some(Protocol::Tls),
            "tcp" | "mysql" | "mongo" | "redis" => Some(Protocol::Tcp),
            _ => None,
        };
        if let Some(protocol) = app_protocol.and_then(by_token) {
            return protocol;
        }
        let Some(name) = name else { return Protocol::Detect };
        // `grpc-web` is itself a protocol name; otherwise the prefix is what precedes the first `-`.
        if name.to_ascii_lowercase().starts_with("grpc-web") {
            return Protocol::Grpc;
        }
        by_token(name.split('-').next().unwrap_or_default()).unwrap_or(Protocol::Detect)
    }
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
            if let Some(budget) = &cluster.retry_budget
                && !(0.0..=100.0).contains(&budget.percent)
            {
                issues.error(
                    &FieldPath::of("clusters").index(i).key("retryBudget").key("percent"),
                    format!("retry budget percent {} must be between 0 and 100", budget.percent),
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

#[cfg(test)]
mod tests;
