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

use crate::tcp::{self, ByteObserver};

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

/// Envoy's response flags the proxy reports, in their short form and in Envoy's order.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum ResponseFlag {
    /// No healthy upstream: the cluster had no endpoint to pick.
    UH,
    /// Upstream request timeout: the route's timeout or a per-try timeout passed (504).
    UT,
    /// Upstream remote reset: the upstream refused the HTTP/2 stream.
    UR,
    /// Upstream connection failure: no connection could be made.
    UF,
    /// Upstream connection termination: the connection broke before a complete response head.
    UC,
    /// Upstream overflow: a circuit breaker (or the retry budget) rejected the request or connection.
    UO,
    /// No route: no virtual host or route matched (404).
    NR,
    /// Delay injected by a fault rule.
    DI,
    /// Aborted by a fault rule.
    FI,
    /// Refused by a local rate limit.
    RL,
    /// Downstream connection termination: the client went away before the response ended.
    DC,
    /// Upstream retry limit exceeded: the last attempt failed and no retry was left.
    URX,
}

impl ResponseFlag {
    /// Every flag, in the order Envoy writes them.
    pub const ALL: [ResponseFlag; 12] = [
        Self::UH,
        Self::UT,
        Self::UR,
        Self::UF,
        Self::UC,
        Self::UO,
        Self::NR,
        Self::DI,
        Self::FI,
        Self::RL,
        Self::DC,
        Self::URX,
    ];

    /// The short name Envoy logs.
    pub fn short(self) -> &'static str {
        match self {
            Self::UH => "UH",
            Self::UT => "UT",
            Self::UR => "UR",
            Self::UF => "UF",
            Self::UC => "UC",
            Self::UO => "UO",
            Self::NR => "NR",
            Self::DI => "DI",
            Self::FI => "FI",
            Self::RL => "RL",
            Self::DC => "DC",
            Self::URX => "URX",
        }
    }

    /// The flag's bit in a set of flags.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlagLabels {
    direction: Direction,
    cluster: String,
    response_flags: ResponseFlag,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectLabels {
    protocol: &'static str,
    timed_out: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeniedLabels {
    protocol: &'static str,
}

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FaultKind {
    Delay,
    Abort,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    kind: FaultKind,
}

/// What became of a mirrored copy.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum MirrorResult {
    /// Sent (counted when it starts).
    Sent,
    /// Given up: it fell behind the request's body, or its upstream took too long.
    Abandoned,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    result: MirrorResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
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
    mtls_refused: Family<RefusedLabels, Counter>,
    authz_denied: Family<DeniedLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    mirrors: Family<MirrorLabels, Counter>,
    rate_limited: Family<PolicyLabels, Counter>,
    flagged: Family<FlagLabels, Counter>,
    overflow: Family<TrafficLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    retry_overflow: Family<RetryLabels, Counter>,
    /// Connections currently open, across listeners.
    pub open_connections: Gauge,
    /// Access log lines dropped because the writer fell behind (`trellis_access_log_dropped_total`).
    pub access_log_dropped: Counter,
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
        let mtls_refused = Family::<RefusedLabels, Counter>::default();
        let authz_denied = Family::<DeniedLabels, Counter>::default();
        let faults = Family::<FaultLabels, Counter>::default();
        let mirrors = Family::<MirrorLabels, Counter>::default();
        registry.register("faults_injected", "Faults injected by VirtualService fault rules, by kind", faults.clone());
        registry.register("mirrored_requests", "Copies of requests sent to mirrors, by result", mirrors.clone());
        let rate_limited = Family::<PolicyLabels, Counter>::default();
        let open_connections = Gauge::default();
        let flagged = Family::<FlagLabels, Counter>::default();
        let overflow = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "responses_flagged",
            "Requests and connections the proxy ended itself or marked, by Envoy response flag (UO, UF, UH, NR, URX...)",
            flagged.clone(),
        );
        registry.register(
            "upstream_overflow",
            "Requests and connections a cluster's circuit breaker rejected (response flag UO)",
            overflow.clone(),
        );
        let retries = Family::<RetryLabels, Counter>::default();
        let retry_overflow = Family::<RetryLabels, Counter>::default();
        registry.register("retries", "Retries sent to an upstream cluster", retries.clone());
        registry.register(
            "retry_overflow",
            "Retries not sent because the cluster's retry budget or maxRetries was exhausted",
            retry_overflow.clone(),
        );
        registry.register("requests", "HTTP requests completed, by response code class", requests.clone());
        registry.register(
            "request_duration_seconds",
            "HTTP request duration until response headers",
            durations.clone(),
        );
        registry.register(
            "tcp_sent_bytes",
            "Bytes sent to the downstream peer of TCP connections and upgraded HTTP connections, as they move",
            tcp_sent.clone(),
        );
        registry.register(
            "tcp_received_bytes",
            "Bytes received from the downstream peer of TCP connections and upgraded HTTP connections, as they move",
            tcp_received.clone(),
        );
        registry.register("tcp_connections_opened", "TCP connections opened", tcp_opened.clone());
        registry.register("tcp_connections_closed", "TCP connections closed", tcp_closed.clone());
        registry.register("protocol_detections", "Protocol detection outcomes", detections.clone());
        registry.register("config_reloads", "Config loads, by result", reloads.clone());
        registry.register(
            "inbound_mtls_refused",
            "Inbound connections refused by mutual-TLS policy: plaintext under STRICT, failed handshakes, no certificate",
            mtls_refused.clone(),
        );
        registry.register(
            "authorization_denied",
            "Inbound requests (http) and connections (tcp) denied by AuthorizationPolicy",
            authz_denied.clone(),
        );
        registry.register(
            "rate_limited",
            "Inbound requests (and TCP connections) refused by a local rate limit, by RateLimitPolicy",
            rate_limited.clone(),
        );
        registry.register("open_connections", "Downstream connections currently open", open_connections.clone());
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the log writer fell behind (its queue was full)",
            access_log_dropped.clone(),
        );
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
            mtls_refused,
            authz_denied,
            faults,
            mirrors,
            rate_limited,
            flagged,
            overflow,
            retries,
            retry_overflow,
            open_connections,
            access_log_dropped,
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
            overflow: self.overflow.get_or_create(&traffic).clone(),
            overflow_flag: self
                .flagged
                .get_or_create(&FlagLabels { direction, cluster: cluster.to_owned(), response_flags: ResponseFlag::UO })
                .clone(),
            retries: self.retries.get_or_create(&RetryLabels { cluster: cluster.to_owned() }).clone(),
            retry_overflow: self.retry_overflow.get_or_create(&RetryLabels { cluster: cluster.to_owned() }).clone(),
        })
    }

    /// Counts one protocol detection.
    pub fn detected(&self, protocol: &'static str, timed_out: bool) {
        let labels = DetectLabels { protocol, timed_out: if timed_out { "true" } else { "false" } };
        self.detections.get_or_create(&labels).inc();
    }

    /// Counts one inbound connection refused by mutual-TLS policy, by `reason`.
    pub fn mtls_refused(&self, reason: &'static str) {
        self.mtls_refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Counts one inbound request or connection denied by authorization.
    pub fn authz_denied(&self, protocol: &'static str) {
        self.authz_denied.get_or_create(&DeniedLabels { protocol }).inc();
    }

    /// Counts one injected fault.
    pub fn fault_injected(&self, kind: FaultKind) {
        self.faults.get_or_create(&FaultLabels { kind }).inc();
    }

    /// Counts one mirrored copy by what became of it.
    pub fn mirrored(&self, result: MirrorResult) {
        self.mirrors.get_or_create(&MirrorLabels { result }).inc();
    }

    /// The pre-labelled counter of requests a RateLimitPolicy (`namespace/name`) refused.
    pub fn rate_limited(&self, policy: &str) -> Counter {
        self.rate_limited.get_or_create(&PolicyLabels { policy: policy.to_owned() }).clone()
    }

    /// Counts one response flag of a request the proxy marked (UO is counted where the circuit breaker
    /// decides, with [`ClusterMetrics::overflowed`]). Called only for flagged responses, off the
    /// common path.
    pub fn flagged(&self, direction: Direction, cluster: &str, flag: ResponseFlag) {
        self.flagged.get_or_create(&FlagLabels { direction, cluster: cluster.to_owned(), response_flags: flag }).inc();
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
    overflow: Counter,
    overflow_flag: Counter,
    /// Retries sent (`trellis_retries_total`).
    pub retries: Counter,
    /// Retries refused by the retry budget or `maxRetries` (`trellis_retry_overflow_total`).
    pub retry_overflow: Counter,
}

impl ClusterMetrics {
    /// Counts one request or connection rejected by the cluster's circuit breaker (flag `UO`).
    pub fn overflowed(&self) {
        self.overflow.inc();
        self.overflow_flag.inc();
    }

    /// Records one completed HTTP request.
    pub fn request(&self, status: u16, seconds: f64) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }

    /// The cluster's byte counters on their own, for a task that outlives the borrow of `self`
    /// (an upgraded connection's tunnel).
    pub fn tcp_bytes(&self) -> TcpBytes {
        TcpBytes { sent: self.tcp_sent.clone(), received: self.tcp_received.clone() }
    }
}

/// Counts a proxied stream's bytes as they are written, so the counters move while a connection
/// lives and include what moved before it ended in an error, a reset or the idle timeout. The copy's
/// first stream must be the downstream peer: a→b is received from it, b→a sent to it.
impl ByteObserver for ClusterMetrics {
    fn transferred(&self, direction: tcp::Direction, bytes: u64) {
        match direction {
            tcp::Direction::AToB => self.tcp_received.inc_by(bytes),
            tcp::Direction::BToA => self.tcp_sent.inc_by(bytes),
        };
    }
}

/// One cluster's TCP byte counters (handles to the same series as its [`ClusterMetrics`]).
#[derive(Debug, Clone)]
pub struct TcpBytes {
    sent: Counter,
    received: Counter,
}

/// As for [`ClusterMetrics`]: the copy's first stream is the downstream peer.
impl ByteObserver for TcpBytes {
    fn transferred(&self, direction: tcp::Direction, bytes: u64) {
        match direction {
            tcp::Direction::AToB => self.received.inc_by(bytes),
            tcp::Direction::BToA => self.sent.inc_by(bytes),
        };
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

    /// Serves one connection: reads 5 bytes, answers 7, and once told to, resets the connection.
    async fn resetting_server(listener: tokio::net::TcpListener, reset: tokio::sync::oneshot::Receiver<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 5];
        stream.read_exact(&mut request).await.expect("read");
        stream.write_all(b"7 bytes").await.expect("write");
        let _ = reset.await;
        socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO)).expect("linger");
        drop(stream);
    }

    #[tokio::test]
    async fn bytes_of_a_connection_that_ends_in_a_reset_are_counted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let metrics = Metrics::new();
        let cluster = metrics.cluster(Direction::Outbound, "db");
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        let (reset, told) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(resetting_server(upstream, told));
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let front_addr = front.local_addr().expect("addr");
        let observer = Arc::clone(&cluster);
        let copy = tokio::spawn(async move {
            let (mut downstream, _) = front.accept().await.expect("accept");
            let mut upstream = tokio::net::TcpStream::connect(upstream_addr).await.expect("connect");
            tcp::copy_bidirectional_observed(&mut downstream, &mut upstream, tcp::DEFAULT_IDLE_TIMEOUT, &*observer)
                .await
        });
        let mut client = tokio::net::TcpStream::connect(front_addr).await.expect("connect");
        client.write_all(b"hello").await.expect("write");
        let mut reply = [0u8; 7];
        client.read_exact(&mut reply).await.expect("reply");
        assert_eq!((cluster.tcp_received.get(), cluster.tcp_sent.get()), (5, 7), "counted while the connection lives");
        reset.send(()).expect("server waits");
        server.await.expect("server");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), copy).await.expect("copy ends");
        assert!(ended.expect("copy task").is_err(), "the reset ends the copy with an error");
        assert_eq!((cluster.tcp_received.get(), cluster.tcp_sent.get()), (5, 7), "and the bytes stay counted");
    }
}
