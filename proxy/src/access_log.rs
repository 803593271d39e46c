//! The access log (the Mesh's `telemetry.accessLog`): one line per HTTP request, inbound and
//! outbound, and one per proxied TCP connection, in Envoy's default text format or Istio's JSON, on
//! stdout.
//!
//! Where things are decided, the proxy leaves small response extensions: [`Marks`] (Envoy response
//! flags such as `UO`, `NR`, `FI`, `URX` and the response code details) and [`Upstream`] (the endpoint
//! and cluster that answered), beside the [`UpstreamFailure`] of a failed exchange. The outermost layer
//! of the HTTP server ([`Pending::start`] before routing, [`finish`] after) reads them once, counts
//! the flags in `trellis_responses_flagged_total`, and, when the log is on, wraps the response body
//! so the line is written when the body ends (bytes sent, duration), or with `DC` when the client goes
//! away first. TCP connections carry a [`TcpLog`] that writes its line when dropped.
//!
//! Off (the default) the log costs one relaxed atomic load per request or connection: no clock read,
//! no allocation, no formatting. On, entries go through a bounded queue to a writer thread that
//! formats them and writes to stdout; a full queue drops the line and counts it in
//! `trellis_access_log_dropped_total`, so a slow stdout never blocks a worker. The config can turn
//! the log on or off, or change its format, at any time: [`AccessLog::configure`] runs on each update.

mod format;

use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use trellis_api::proxy_config::Telemetry;

pub use format::{Entry, Flags, Format, RequestFacts, json_line, line, start_time, text_line};

use crate::http::{Body, Context, Side, UpstreamFailure};
use crate::metrics::{Direction, Metrics, ResponseFlag};
use crate::tcp::{self, ByteCounters, ByteObserver};

/// Entries the writer may fall behind by before lines are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Name of the writer thread.
pub const WRITER_THREAD_NAME: &str = "trellis-access-log";
/// `%RESPONSE_CODE_DETAILS%` of a response that came from an upstream.
pub const VIA_UPSTREAM: &str = "via_upstream";
/// Response code details of the proxy's own answers, in Envoy's words.
pub mod details {
    pub const NO_HEALTHY_UPSTREAM: &str = "no_healthy_upstream";
    pub const ROUTE_NOT_FOUND: &str = "route_not_found";
    pub const OVERFLOW: &str = "upstream_reset_before_response_started{overflow}";
    pub const CONNECTION_FAILURE: &str = "upstream_reset_before_response_started{connection_failure}";
    pub const CONNECTION_TERMINATION: &str = "upstream_reset_before_response_started{connection_termination}";
    pub const REFUSED_STREAM: &str = "upstream_reset_before_response_started{remote_refused_stream_reset}";
    pub const PER_TRY_TIMEOUT: &str = "upstream_per_try_timeout";
    pub const RESPONSE_TIMEOUT: &str = "upstream_response_timeout";
    pub const FAULT_ABORT: &str = "fault_filter_abort";
    pub const RATE_LIMITED: &str = "local_rate_limited";
    pub const RBAC_DENIED: &str = "rbac_access_denied";
    pub const JWT_DENIED: &str = "jwt_authn_access_denied";
    pub const DIRECT_RESPONSE: &str = "direct_response";
}

/// Mode values of [`AccessLog`].
const OFF: u8 = 0;
const TEXT: u8 = 1;
const JSON: u8 = 2;

/// The proxy's access log: whether it is on and in which format (set from each config), and the
/// queue to the writer thread (started the first time a config turns the log on).
#[derive(Debug, Default)]
pub struct AccessLog {
    mode: AtomicU8,
    sink: OnceLock<Sink>,
}

impl AccessLog {
    /// Follows a config's telemetry settings; starts the writer the first time the log is turned on.
    pub fn configure(&self, telemetry: &Telemetry, metrics: &Metrics) {
        let mode = match (telemetry.access_log, telemetry.access_log_json) {
            (false, _) => OFF,
            (true, false) => TEXT,
            (true, true) => JSON,
        };
        if mode != OFF && self.sink.get().is_none() {
            match Sink::start(metrics.access_log_dropped.clone()) {
                Ok(sink) => {
                    let _ = self.sink.set(sink);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the access log writer; access log stays off");
                    return;
                }
            }
        }
        let previous = self.mode.swap(mode, Ordering::Relaxed);
        if previous != mode {
            tracing::info!(access_log = ?self.format(), "access log settings changed");
        }
    }

    /// The format lines are written in, or `None` when the log is off.
    pub fn format(&self) -> Option<Format> {
        match self.mode.load(Ordering::Relaxed) {
            TEXT => Some(Format::Text),
            JSON => Some(Format::Json),
            _ => None,
        }
    }

    /// Whether the log is on.
    pub fn is_on(&self) -> bool {
        self.mode.load(Ordering::Relaxed) != OFF
    }

    /// Where entries go, when the log is on.
    fn sink(&self) -> Option<(Format, &Sink)> {
        Some((self.format()?, self.sink.get()?))
    }
}

/// The sending end of the queue to the writer thread.
#[derive(Debug, Clone)]
struct Sink {
    queue: SyncSender<(Format, Box<Entry>)>,
    dropped: Counter,
}

impl Sink {
    fn start(dropped: Counter) -> std::io::Result<Self> {
        let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        std::thread::Builder::new().name(WRITER_THREAD_NAME.to_owned()).spawn(move || write_lines(&lines))?;
        Ok(Self { queue, dropped })
    }

    /// Queues an entry, or drops and counts it when the writer is behind.
    fn send(&self, format: Format, entry: Box<Entry>) {
        match self.queue.try_send((format, entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The writer thread: formats entries and writes them to stdout, flushing whenever the queue is empty.
fn write_lines(lines: &Receiver<(Format, Box<Entry>)>) {
    let stdout = std::io::stdout();
    while let Ok((format, entry)) = lines.recv() {
        let mut out = stdout.lock();
        let mut next = Some((format, entry));
        while let Some((format, entry)) = next {
            if out.write_all(line(format, &entry).as_bytes()).is_err() {
                break;
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// Envoy response flags and response code details the proxy decided for a response, carried as a
/// response extension to the outermost layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub flags: Flags,
    pub details: Option<&'static str>,
}

impl Marks {
    /// What a response says about itself: its marks, plus the flag of the failed exchange it stands for.
    pub fn of<B>(response: &Response<B>) -> Self {
        let mut marks = response.extensions().get::<Marks>().copied().unwrap_or_default();
        if let Some(failure) = UpstreamFailure::on(response) {
            let (flag, details) = match failure {
                UpstreamFailure::Connect => (ResponseFlag::UF, details::CONNECTION_FAILURE),
                UpstreamFailure::Reset => (ResponseFlag::UC, details::CONNECTION_TERMINATION),
                UpstreamFailure::RefusedStream => (ResponseFlag::UR, details::REFUSED_STREAM),
                UpstreamFailure::Timeout => (ResponseFlag::UT, details::PER_TRY_TIMEOUT),
            };
            marks.flags.insert(flag);
            marks.details = marks.details.or(Some(details));
        }
        marks
    }
}

/// Adds `flag` (and `details`, unless the response already has some) to a response.
pub fn flag<B>(response: &mut Response<B>, flag: ResponseFlag, details: &'static str) {
    let marks = response.extensions_mut().get_or_insert_default::<Marks>();
    marks.flags.insert(flag);
    marks.details = marks.details.or(Some(details));
}

/// Adds `flag` to a response, leaving its details as they are (an upstream's answer stays
/// `via_upstream`, a failed exchange keeps its reason).
pub fn add_flag<B>(response: &mut Response<B>, flag: ResponseFlag) {
    response.extensions_mut().get_or_insert_default::<Marks>().flags.insert(flag);
}

/// Sets a response's code details, unless it already has some.
pub fn detail<B>(response: &mut Response<B>, details: &'static str) {
    let marks = response.extensions_mut().get_or_insert_default::<Marks>();
    marks.details = marks.details.or(Some(details));
}

/// The endpoint and cluster that answered a request (or the cluster that had no endpoint), carried
/// as a response extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: Option<SocketAddr>,
    pub cluster: String,
}

/// Records on a response which endpoint (if any) of which cluster it came from.
pub fn upstream<B>(response: &mut Response<B>, host: Option<SocketAddr>, cluster: &str) {
    response.extensions_mut().insert(Upstream { host, cluster: cluster.to_owned() });
}

/// The name of the route that matched, carried as a response extension when the log is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteName(pub String);

/// What the log keeps of a request while it is routed: its head's facts, when and where it started.
#[derive(Debug)]
pub struct Pending {
    format: Format,
    sink: Sink,
    started: Instant,
    entry: Box<Entry>,
}

impl Pending {
    /// Starts the entry of a request on `cx`'s connection: `None` (and no work) when the log is off.
    /// A logged request gets its `x-request-id` here (as Envoy's connection manager gives it one)
    /// rather than on its way upstream, so the line names the id the upstream sees.
    pub fn start<B>(log: &AccessLog, req: &mut Request<B>, cx: &Context) -> Option<Self> {
        let (format, sink) = log.sink()?;
        crate::http::ensure_request_id(req.headers_mut());
        let headers = req.headers();
        let get = |name: &str| headers.get(name).cloned();
        let content_length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let request = RequestFacts {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            original_path: get("x-envoy-original-path"),
            host: get(http::header::HOST.as_str()),
            forwarded_for: get("x-forwarded-for"),
            user_agent: get(http::header::USER_AGENT.as_str()),
            request_id: get(crate::http::REQUEST_ID_HEADER),
        };
        let entry = Entry { bytes_received: content_length, ..Entry::starting(Some(request), cx.destination, cx.peer) };
        Some(Self { format, sink: sink.clone(), started: Instant::now(), entry: Box::new(entry) })
    }
}

/// The metric direction of a listener side.
fn direction(side: Side) -> Direction {
    match side {
        Side::Outbound => Direction::Outbound,
        Side::Inbound => Direction::Inbound,
        Side::Gateway => Direction::Gateway,
    }
}

/// The outermost layer's look at a response: counts its flags and, when the request is logged,
/// fills the entry and wraps the body so the line is written when it ends.
pub fn finish(metrics: &Metrics, side: Side, pending: Option<Pending>, response: &mut Response<Body>) {
    // Responses that went well carry no extensions: this is a single branch for them.
    let marks = Marks::of(response);
    let upstream = response.extensions().get::<Upstream>();
    if !marks.flags.is_empty() {
        let cluster = upstream.map_or("-", |u| u.cluster.as_str());
        // UO is counted by the circuit breaker when it rejects.
        for flag in marks.flags.iter().filter(|f| *f != ResponseFlag::UO) {
            metrics.flagged(direction(side), cluster, flag);
        }
    }
    let Some(mut pending) = pending else { return };
    let entry = &mut pending.entry;
    entry.status = response.status().as_u16();
    entry.flags = marks.flags;
    entry.details = marks.details.or(upstream.map(|_| VIA_UPSTREAM));
    entry.upstream_host = upstream.and_then(|u| u.host);
    entry.upstream_cluster = upstream.map(|u| u.cluster.clone());
    entry.route_name = response.extensions().get::<RouteName>().map(|r| r.0.clone());
    entry.upstream_service_time = response.headers().get("x-envoy-upstream-service-time").cloned();
    // An upgraded connection's response has no body of its own: dropping it cuts nothing.
    let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    crate::http::wrap_body(response, |inner| Logged { inner, pending: Some(pending), sent: 0, upgraded }.boxed());
}

/// A response body that writes its request's log line when it ends (or is dropped before).
struct Logged {
    inner: Body,
    pending: Option<Pending>,
    sent: u64,
    upgraded: bool,
}

impl Logged {
    /// Writes the line, once; `cut` when the body did not reach its end (the client went away).
    fn write(&mut self, cut: bool) {
        let Some(mut pending) = self.pending.take() else { return };
        pending.entry.bytes_sent = self.sent;
        pending.entry.duration = pending.started.elapsed();
        if cut {
            pending.entry.flags.insert(ResponseFlag::DC);
        }
        pending.sink.send(pending.format, pending.entry);
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = crate::http::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.write(false);
                }
            }
            Poll::Ready(None) => this.write(false),
            Poll::Ready(Some(Err(_))) => this.write(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let cut = !self.upgraded && !self.inner.is_end_stream();
        self.write(cut);
    }
}

/// The log entry of one proxied TCP connection, written when it is dropped; empty (and free) when
/// the log is off.
#[derive(Debug, Default)]
pub struct TcpLog(Option<Box<TcpState>>);

#[derive(Debug)]
struct TcpState {
    format: Format,
    sink: Sink,
    started: Instant,
    entry: Entry,
    bytes: ByteCounters,
}

impl TcpLog {
    /// Starts the entry of a connection on `cx` (routed by `sni`, if it was), when the log is on.
    pub fn start(log: &AccessLog, cx: &Context, sni: Option<&str>) -> Self {
        let Some((format, sink)) = log.sink() else { return Self(None) };
        let entry = Entry { server_name: sni.map(str::to_owned), ..Entry::starting(None, cx.destination, cx.peer) };
        Self(Some(Box::new(TcpState {
            format,
            sink: sink.clone(),
            started: Instant::now(),
            entry,
            bytes: ByteCounters::new(),
        })))
    }

    /// Adds a response flag.
    pub fn flag(&mut self, flag: ResponseFlag) {
        if let Some(state) = &mut self.0 {
            state.entry.flags.insert(flag);
        }
    }

    /// Sets why the proxy closed the connection (`%CONNECTION_TERMINATION_DETAILS%`).
    pub fn terminated(&mut self, details: &'static str) {
        if let Some(state) = &mut self.0 {
            state.entry.termination = Some(details);
        }
    }

    /// Records the cluster the connection goes to, and its endpoint once one is picked.
    pub fn upstream(&mut self, host: Option<SocketAddr>, cluster: &str) {
        if let Some(state) = &mut self.0 {
            state.entry.upstream_host = host;
            state.entry.upstream_cluster = Some(cluster.to_owned());
        }
    }

    /// Whether the connection is logged.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records the endpoint the connection goes to.
    pub fn set_host(&mut self, host: SocketAddr) {
        if let Some(state) = &mut self.0 {
            state.entry.upstream_host = Some(host);
        }
    }

    /// An observer that counts bytes both into `inner` (the cluster's metrics) and into this entry.
    pub fn observing<'a, O: ByteObserver + ?Sized>(&'a self, inner: &'a O) -> Observed<'a, O> {
        Observed { inner, bytes: self.0.as_ref().map(|s| &s.bytes) }
    }
}

impl Drop for TcpLog {
    fn drop(&mut self) {
        let Some(state) = self.0.take() else { return };
        let TcpState { format, sink, started, mut entry, bytes } = *state;
        // The copy's first stream is the downstream peer: a→b is received from it.
        entry.bytes_received = bytes.a_to_b();
        entry.bytes_sent = bytes.b_to_a();
        entry.duration = started.elapsed();
        sink.send(format, Box::new(entry));
    }
}

/// Counts a copy's bytes into two observers: the cluster's metrics and a connection's log entry.
pub struct Observed<'a, O: ?Sized> {
    inner: &'a O,
    bytes: Option<&'a ByteCounters>,
}

impl<O: ?Sized> std::fmt::Debug for Observed<'_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").field("logged", &self.bytes.is_some()).finish_non_exhaustive()
    }
}

impl<O: ByteObserver + ?Sized> ByteObserver for Observed<'_, O> {
    fn transferred(&self, direction: tcp::Direction, bytes: u64) {
        self.inner.transferred(direction, bytes);
        if let Some(counters) = self.bytes {
            counters.transferred(direction, bytes);
        }
    }
}

/// The cluster name Envoy gives a sidecar's inbound traffic to `port`.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

#[cfg(test)]
mod tests;
