//! Prometheus metrics of the proxy, served at `/stats/prometheus` on 15090.
//!
//! Label sets are resolved once per cluster when a config is compiled ([`ClusterMetrics`]) and per
//! listener at start, so the request path only increments atomics it already holds.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Prefix of every metric name.
pub const PREFIX: &str = "trellis";

/// Which way traffic flows through the proxy.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    Inbound,
    Outbound,
    Gateway,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    cluster: String,
    code_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    direction: Direction,
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectLabels {
    protocol: &'static str,
    timed_out: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// Every metric family of the proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<TrafficLabels, Histogram>,
    tcp_sent: Family<TrafficLabels, Counter>,
    tcp_received: Family<TrafficLabels, Counter>,
    tcp_opened: Family<TrafficLabels, Counter>,
    tcp_closed: Family<TrafficLabels, Counter>,
    detections: Family<DetectLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    /// Connections currently open, across listeners.
    pub open_connections: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered under [`PREFIX`].
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        let durations =
            Family::<TrafficLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let tcp_sent = Family::<TrafficLabels, Counter>::default();
        let tcp_received = Family::<TrafficLabels, Counter>::default();
        let tcp_opened = Family::<TrafficLabels, Counter>::default();
        let tcp_closed = Family::<TrafficLabels, Counter>::default();
        let detections = Family::<DetectLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let open_connections = Gauge::default();
        registry.register("requests", "HTTP requests completed, by response code class", requests.clone());
        registry.register(
            "request_duration_seconds",
            "HTTP request duration until response headers",
            durations.clone(),
        );
        registry.register("tcp_sent_bytes", "Bytes sent to the downstream peer of TCP connections", tcp_sent.clone());
        registry.register(
            "tcp_received_bytes",
            "Bytes received from the downstream peer of TCP connections",
            tcp_received.clone(),
        );
        registry.register("tcp_connections_opened", "TCP connections opened", tcp_opened.clone());
        registry.register("tcp_connections_closed", "TCP connections closed", tcp_closed.clone());
        registry.register("protocol_detections", "Protocol detection outcomes", detections.clone());
        registry.register("config_reloads", "Config loads, by result", reloads.clone());
        registry.register("open_connections", "Downstream connections currently open", open_connections.clone());
        Self {
            registry,
            requests,
            durations,
            tcp_sent,
            tcp_received,
            tcp_opened,
            tcp_closed,
            detections,
            reloads,
            open_connections,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Pre-labelled handles for one cluster (or pseudo-cluster such as `passthrough`).
    pub fn cluster(&self, direction: Direction, cluster: &str) -> Arc<ClusterMetrics> {
        let traffic = TrafficLabels { direction, cluster: cluster.to_owned() };
        let class = |code_class| {
            self.requests.get_or_create(&RequestLabels { direction, cluster: cluster.to_owned(), code_class }).clone()
        };
        Arc::new(ClusterMetrics {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            duration: self.durations.get_or_create(&traffic).clone(),
            tcp_sent: self.tcp_sent.get_or_create(&traffic).clone(),
            tcp_received: self.tcp_received.get_or_create(&traffic).clone(),
            tcp_opened: self.tcp_opened.get_or_create(&traffic).clone(),
            tcp_closed: self.tcp_closed.get_or_create(&traffic).clone(),
        })
    }

    /// Counts one protocol detection.
    pub fn detected(&self, protocol: &'static str, timed_out: bool) {
        let labels = DetectLabels { protocol, timed_out: if timed_out { "true" } else { "false" } };
        self.detections.get_or_create(&labels).inc();
    }

    /// Counts one config load attempt.
    pub fn reloaded(&self, ok: bool) {
        self.reloads.get_or_create(&ReloadLabels { result: if ok { "success" } else { "failure" } }).inc();
    }
}

/// Handles of one cluster's series, resolved when the config is compiled.
#[derive(Debug)]
pub struct ClusterMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
    pub tcp_sent: Counter,
    pub tcp_received: Counter,
    pub tcp_opened: Counter,
    pub tcp_closed: Counter,
}

impl ClusterMetrics {
    /// Records one completed HTTP request.
    pub fn request(&self, status: u16, seconds: f64) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_bytes_appear_in_the_exposition_with_their_labels() {
        let metrics = Metrics::new();
        let cluster = metrics.cluster(Direction::Outbound, "outbound|80||a.default.svc.cluster.local");
        cluster.request(200, 0.001);
        cluster.request(503, 0.002);
        cluster.tcp_sent.inc_by(42);
        metrics.detected("http1", false);
        let text = metrics.encode();
        assert!(text.contains(r#"trellis_requests_total{direction="Outbound",cluster="outbound|80||a.default.svc.cluster.local",code_class="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"code_class="5xx"} 1"#), "{text}");
        assert!(text.contains("trellis_tcp_sent_bytes_total"), "{text}");
        assert!(text.contains("trellis_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"trellis_protocol_detections_total{protocol="http1",timed_out="false"} 1"#), "{text}");
    }
}
