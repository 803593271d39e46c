//! Config from the control plane: the proxy's side of the push stream (`trellis_api::push`,
//! `docs/push.md`).
//!
//! [`run`] opens one HTTP/2 stream to `trellisd` (prior knowledge, port 15012), says who the proxy is,
//! and applies what comes back: a snapshot replaces the config, a delta is applied to the config it
//! names as its base. Each result is compiled and swapped in atomically by [`Store::apply`], which also
//! makes the proxy ready after the first one; the proxy acknowledges each version it serves and refuses
//! (with the reason) one that does not compile, which leaves the last good config serving. A delta that
//! does not fit what the proxy holds makes it ask for a snapshot. When the stream breaks, the proxy
//! keeps serving what it has and reconnects after an exponential backoff with full jitter, so a
//! restarted control plane is not met by every proxy at once.

use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::client::conn::http2;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;
use trellis_api::proxy_config::{Node, ProxyConfig, ProxyMode};
use trellis_api::push::{
    CONTENT_TYPE, ClientMessage, DEFAULT_PORT, Hello, LineDecoder, STREAM_PATH, ServerMessage, apply, decode, encode,
};

use crate::metrics::Metrics;
use crate::state::Store;
use crate::{Error, drain};

/// First reconnect delay cap; each failed attempt doubles it (the delay is uniform below the cap).
pub const RECONNECT_BASE_DELAY: Duration = Duration::from_millis(100);
/// Largest reconnect delay cap.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(15);
/// How long connecting to the control plane may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of HTTP/2 pings, so a control plane that vanished without closing is noticed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a ping may go unanswered before the stream is given up.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest message accepted from the control plane (a snapshot of a large mesh is a few MB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The flag that names the control plane, for errors about its value.
pub const ADDRESS_FLAG: &str = "--discovery-address";
/// Answers queued for the control plane before the proxy stops reading (it answers one per message).
const ANSWER_QUEUE: usize = 8;
/// How much of a refusal's body is kept for the error.
const MAX_ERROR_BODY: usize = 4096;

/// Where the control plane listens: `host:port`, `http://host:port` or `https://host:port` (port
/// 15012 when absent), and the trust bundle that verifies it over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The scheme given, if any: `https` asks for TLS, `http` for plain text.
    pub scheme: Option<Scheme>,
    /// PEM roots that verify the control plane's certificate (`--discovery-ca`); with them and no
    /// scheme, TLS is used.
    pub ca: Option<std::path::PathBuf>,
}

/// A scheme of `--discovery-address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Target {
    /// Parses the value of `--discovery-address`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let fail = |message: String| Error::Flag { flag: ADDRESS_FLAG, message };
        let (scheme, rest) = match text.split_once("://") {
            None => (None, text),
            Some(("http", rest)) => (Some(Scheme::Http), rest),
            Some(("https", rest)) => (Some(Scheme::Https), rest),
            Some((scheme, _)) => {
                let message =
                    format!("{text:?}: scheme {scheme:?} is not supported; use https://, http:// or host:port");
                return Err(fail(message));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or(port))),
                None => return Err(fail(format!("{text:?}: an IPv6 address needs its closing ]"))),
            },
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        let name_like = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        let valid_host = if rest.starts_with('[') {
            host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty() && host.chars().all(name_like)
        };
        if !valid_host {
            return Err(fail(format!("{text:?} is not host:port (host {host:?})")));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => {
                port.parse().map_err(|_| fail(format!("{text:?}: port {port:?} is not a number up to 65535")))?
            }
        };
        Ok(Target { host: host.to_owned(), port, scheme, ca: None })
    }

    /// The same target verified with the roots in `ca` (`--discovery-ca`). `https://` needs them.
    pub fn with_ca(mut self, ca: Option<std::path::PathBuf>) -> Result<Self, Error> {
        if self.scheme == Some(Scheme::Https) && ca.is_none() {
            let message = format!("{self}: https:// needs the trust bundle that verifies it (--discovery-ca)");
            return Err(Error::Flag { flag: ADDRESS_FLAG, message });
        }
        self.ca = ca;
        Ok(self)
    }

    /// Whether connections use TLS: `https://`, or roots given and no `http://`.
    pub fn uses_tls(&self) -> bool {
        match self.scheme {
            Some(Scheme::Https) => true,
            Some(Scheme::Http) => false,
            None => self.ca.is_some(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The reconnect schedule: exponential, capped, with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: RECONNECT_BASE_DELAY, max: RECONNECT_MAX_DELAY }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (0 after a stream that delivered configs), given
    /// `unit` uniform in `[0, 1)`: uniform below `min(max, base * 2^attempt)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let cap = self.base.saturating_mul(2u32.saturating_pow(attempt)).min(self.max);
        cap.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The hello of this build of the proxy for `node` in `mode`, whose workload has addresses `ips`.
pub fn hello(node: Node, mode: ProxyMode, ips: Vec<IpAddr>) -> Hello {
    Hello { node, mode, proxy_version: env!("CARGO_PKG_VERSION").to_owned(), ips }
}

/// Follows the control plane at `target` until `drain` starts, keeping `store` up to date.
///
/// Every problem is logged and retried.
pub async fn run(
    target: Target,
    hello: Hello,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    drain: drain::Watch,
) -> Result<(), Error> {
    run_with(target, hello, store, metrics, drain, Backoff::default()).await
}

/// [`run`] with another reconnect schedule.
pub async fn run_with(
    target: Target,
    hello: Hello,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    drain: drain::Watch,
    backoff: Backoff,
) -> Result<(), Error> {
    let mut attempt: u32 = 0;
    loop {
        let mut received = false;
        let ended = tokio::select! {
            ended = session(&target, &hello, &store, &metrics, &mut received) => ended,
            () = drain.signaled() => return Ok(()),
        };
        attempt = if received { 0 } else { attempt.saturating_add(1) };
        let delay = backoff.delay(attempt, fastrand::f64());
        match ended {
            Ok(()) => tracing::info!(control_plane = %target, ?delay, "config stream ended; reconnecting"),
            Err(err) => tracing::warn!(control_plane = %target, error = %err, attempt, ?delay, "config stream failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = drain.signaled() => return Ok(()),
        }
    }
}

/// One stream, from connecting to its end; `received` turns true once a message arrived.
async fn session(
    target: &Target,
    hello: &Hello,
    store: &Store,
    metrics: &Metrics,
    received: &mut bool,
) -> Result<(), Error> {
    let context = |what: &str| format!("{what} control plane {target}");
    let io = target.connect(CONNECT_TIMEOUT).await?;
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| Error::Http { context: context("HTTP/2 handshake with"), source })?;
    let _connection = AbortOnDrop(tokio::spawn(connection));
    let (answers, outgoing) = mpsc::channel::<Bytes>(ANSWER_QUEUE);
    let protocol = |e: trellis_api::Error| Error::Config { origin: context("stream from"), message: e.to_string() };
    let closed = || Error::Config { origin: context("stream to"), message: "the stream closed".into() };
    answers
        .send(Bytes::from(encode(&ClientMessage::Hello(hello.clone())).map_err(protocol)?))
        .await
        .map_err(|_| closed())?;
    let request = Request::post(target.uri(STREAM_PATH))
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Outgoing(outgoing))
        .map_err(|e| Error::Config { origin: context("request to"), message: e.to_string() })?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| Error::Http { context: context("opening a stream to"), source })?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY).collect().await;
        let text = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned()).unwrap_or_default();
        return Err(Error::Config {
            origin: context("stream from"),
            message: format!("refused with {status}: {text}"),
        });
    }
    tracing::info!(control_plane = %target, "config stream open");
    let mut body = response.into_body();
    let mut decoder = LineDecoder::new(MAX_MESSAGE_BYTES);
    let mut held = Held::Nothing;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| Error::Http { context: context("reading the stream from"), source })?;
        let Ok(data) = frame.into_data() else { continue };
        decoder.push(&data);
        while let Some(line) = decoder.next_line().map_err(protocol)? {
            let message = decode::<ServerMessage>(line).map_err(protocol)?;
            *received = true;
            let answer = held.receive(message, store, metrics);
            answers.send(Bytes::from(encode(&answer).map_err(protocol)?)).await.map_err(|_| closed())?;
        }
    }
    if decoder.has_partial_line() {
        return Err(Error::Config { origin: context("stream from"), message: "it ended inside a message".into() });
    }
    Ok(())
}

/// What the proxy holds of the config stream, to apply the next delta to.
#[derive(Debug)]
enum Held {
    /// No snapshot yet on this stream.
    Nothing,
    /// The store serves this version.
    Serving(String),
    /// This config was refused; the store serves an older one, and the next delta builds on this.
    Refused(Box<ProxyConfig>),
}

impl Held {
    /// Applies one message and says what to answer.
    fn receive(&mut self, message: ServerMessage, store: &Store, metrics: &Metrics) -> ClientMessage {
        let config = match message {
            ServerMessage::Snapshot(config) => *config,
            ServerMessage::Delta(delta) => {
                let applied = match self {
                    Held::Refused(base) => apply(base, &delta).map_err(|e| e.to_string()),
                    Held::Serving(version) => match store.current() {
                        Some(current) if current.config.version == *version => {
                            apply(&current.config, &delta).map_err(|e| e.to_string())
                        }
                        _ => Err(format!("version {version} is no longer the one serving")),
                    },
                    Held::Nothing => Err("a delta before any snapshot".to_owned()),
                };
                match applied {
                    Ok(config) => config,
                    Err(error) => {
                        tracing::warn!(version = %delta.version, %error, "cannot apply a delta; asking for a snapshot");
                        return ClientMessage::Resync { version: delta.version, error };
                    }
                }
            }
        };
        let version = config.version.clone();
        // Kept in case it is refused: the control plane's next delta builds on it.
        let kept = config.clone();
        match store.apply(config, metrics) {
            Ok(()) => {
                *self = Held::Serving(version.clone());
                ClientMessage::Ack { version }
            }
            Err(err) => {
                *self = Held::Refused(Box::new(kept));
                ClientMessage::Nack { version, error: err.to_string() }
            }
        }
    }
}

/// The proxy's half of the stream: its hello and answers, as they are queued.
struct Outgoing(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Outgoing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|line| line.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Stops the HTTP/2 connection task when the stream is over.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

mod connect;
#[cfg(test)]
mod tests;
