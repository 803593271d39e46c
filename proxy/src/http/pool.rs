//! Multiplexed HTTP/2 connections to upstream endpoints: one connection per endpoint (and source
//! address) per worker, carrying every concurrent request to that endpoint as a stream.
//!
//! The pool is keyed by the endpoint's socket address, so the request keeps its own `:authority`
//! (the service name the client used) instead of the endpoint's IP, as Envoy sends it. A connection
//! that closes (peer gone, GOAWAY, failed keep-alive ping) is replaced on the next request; one left
//! unused for the idle timeout is dropped by [`H2Pool::sweep`].
//!
//! A cluster's connection-pool settings ([`ConnOptions`]) give its connections their own connect
//! timeout, idle timeout and request limit: a connection that carried `maxRequestsPerConnection`
//! requests leaves the pool (it closes once its streams end), and connections with different limits
//! are kept apart.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpSocket, TcpStream};

use super::{Body, MeshTarget};
use crate::Error;
use crate::breaker::Permit;
use crate::state::FastMap;
use crate::tls::MeshProtocol;

/// Per-stream HTTP/2 flow-control window towards upstreams (and from downstreams): large enough for
/// loopback and LAN bandwidth, small enough that a slow reader pins little memory.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// Per-connection HTTP/2 flow-control window.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Interval of HTTP/2 keep-alive pings on upstream connections, so a dead peer is noticed.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keep-alive ping may go unanswered before the connection is closed.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a cluster's connections are made and kept (its DestinationRule `connectionPool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnOptions {
    /// `tcp.connectTimeout`, or the proxy's default.
    pub connect_timeout: Duration,
    /// `http.idleTimeout`: the cluster's own pool idle timeout, when it has one.
    pub idle_timeout: Option<Duration>,
    /// `http.maxRequestsPerConnection`: requests one connection carries before it is retired.
    pub max_requests_per_connection: Option<u32>,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self { connect_timeout: super::UPSTREAM_CONNECT_TIMEOUT, idle_timeout: None, max_requests_per_connection: None }
    }
}

impl ConnOptions {
    /// The options a cluster's connection pool settings give.
    pub fn of(pool: Option<&trellis_api::proxy_config::ConnectionPool>) -> Self {
        let Some(pool) = pool else { return Self::default() };
        Self {
            connect_timeout: pool.connect_timeout.unwrap_or(super::UPSTREAM_CONNECT_TIMEOUT),
            idle_timeout: pool.idle_timeout,
            max_requests_per_connection: pool.max_requests_per_connection.filter(|n| *n > 0),
        }
    }

    /// Whether HTTP/1.1 requests need a pool of their own (hyper's pool has one connect and one idle
    /// timeout).
    pub fn needs_own_h1_pool(&self) -> bool {
        self.connect_timeout != super::UPSTREAM_CONNECT_TIMEOUT || self.idle_timeout.is_some()
    }
}

#[derive(Debug)]
struct Entry {
    sender: SendRequest<Body>,
    last_used: Instant,
    /// Requests sent on the connection so far.
    sent: u32,
    /// The cluster's idle timeout, when it has its own.
    idle: Option<Duration>,
}

/// Pool key: the endpoint, the source address, whether the connection is mesh TLS, and the request
/// limit of its connections.
type Key = (SocketAddr, Option<SocketAddr>, bool, Option<u32>);

/// HTTP/2 connections of one worker, by (endpoint, source address, mesh TLS, request limit).
#[derive(Debug)]
pub struct H2Pool {
    connections: Mutex<FastMap<Key, Entry>>,
    connect_timeout: Duration,
    /// The shortest cluster idle timeout seen, in milliseconds (`u64::MAX`: none), so sweeps run
    /// often enough for it.
    shortest_idle_ms: std::sync::atomic::AtomicU64,
    /// Told when a shorter cluster idle timeout appears, so the sweeper need not finish a long sleep.
    idle_shortened: tokio::sync::Notify,
}

impl H2Pool {
    /// An empty pool whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connections: Mutex::new(FastMap::default()),
            connect_timeout,
            shortest_idle_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            idle_shortened: tokio::sync::Notify::new(),
        }
    }

    /// Sends `req` to `addr` (from `source` when given; over mesh TLS when `mtls` is given) on the
    /// endpoint's connection, opening one when there is none or the last one closed.
    pub async fn send(
        &self,
        addr: SocketAddr,
        source: Option<SocketAddr>,
        mtls: Option<&MeshTarget<'_>>,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Error> {
        let options = ConnOptions { connect_timeout: self.connect_timeout, ..ConnOptions::default() };
        self.send_with(addr, source, mtls, req, &options, None).await
    }

    /// [`H2Pool::send`] on a connection made and kept as a cluster's `options` say; the request's
    /// circuit-breaker `permit` is told when the connection is ready for it (established or reused).
    pub async fn send_with(
        &self,
        addr: SocketAddr,
        source: Option<SocketAddr>,
        mtls: Option<&MeshTarget<'_>>,
        req: Request<Body>,
        options: &ConnOptions,
        permit: Option<&mut Permit>,
    ) -> Result<Response<Incoming>, Error> {
        let limit = options.max_requests_per_connection;
        let key = (addr, source, mtls.is_some(), limit);
        let reusable = {
            let mut connections = self.lock();
            let reused = connections.get_mut(&key).filter(|e| !e.sender.is_closed()).map(|e| {
                e.last_used = Instant::now();
                e.sent = e.sent.saturating_add(1);
                (e.sender.clone(), limit.is_some_and(|limit| e.sent >= limit))
            });
            match reused {
                // The connection carried its last request: it leaves the pool and closes when done.
                Some((sender, true)) => {
                    connections.remove(&key);
                    Some(sender)
                }
                Some((sender, false)) => Some(sender),
                None => None,
            }
        };
        let mut sender = match reusable {
            Some(sender) => sender,
            None => {
                // Boxed: connecting is rare, and its future would otherwise enlarge every request's.
                let sender = Box::pin(self.connect(addr, source, mtls, options.connect_timeout)).await?;
                if limit != Some(1) {
                    if let Some(idle) = options.idle_timeout {
                        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                        let before = self.shortest_idle_ms.fetch_min(idle_ms, std::sync::atomic::Ordering::Relaxed);
                        if idle_ms < before {
                            self.idle_shortened.notify_one();
                        }
                    }
                    let entry = Entry {
                        sender: sender.clone(),
                        last_used: Instant::now(),
                        sent: 1,
                        idle: options.idle_timeout,
                    };
                    self.lock().insert(key, entry);
                }
                sender
            }
        };
        let failed = |source| Error::Http { context: format!("request to {addr}"), source };
        sender.ready().await.map_err(failed)?;
        if let Some(permit) = permit {
            permit.connected();
        }
        sender.send_request(req).await.map_err(failed)
    }

    /// Drops connections unused for `idle` or their cluster's own idle timeout (and closed ones);
    /// their connection tasks then end.
    pub fn sweep(&self, idle: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, e| !e.sender.is_closed() && now.duration_since(e.last_used) < e.idle.unwrap_or(idle));
    }

    /// Waits until a cluster with a shorter idle timeout than any before puts a connection in the pool.
    pub async fn idle_shortened(&self) {
        self.idle_shortened.notified().await;
    }

    /// The shortest idle timeout of any cluster whose connections the pool held, if any.
    pub fn shortest_cluster_idle(&self) -> Option<Duration> {
        let ms = self.shortest_idle_ms.load(std::sync::atomic::Ordering::Relaxed);
        (ms != u64::MAX).then(|| Duration::from_millis(ms))
    }

    /// Connections currently held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Key, Entry>> {
        // The map stays consistent even if a holder panicked: every update is a single insert or retain.
        self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        source: Option<SocketAddr>,
        mtls: Option<&MeshTarget<'_>>,
        timeout: Duration,
    ) -> Result<SendRequest<Body>, Error> {
        let stream = connect_within(timeout, addr, source).await?;
        match mtls {
            Some(mtls) => {
                let tls = mtls.configs.connect(stream, addr, MeshProtocol::Http2, Some(mtls.expected)).await?;
                Self::handshake(addr, tls).await
            }
            None => Self::handshake(addr, stream).await,
        }
    }

    /// The HTTP/2 handshake on a connected stream; the connection then runs on its own task.
    async fn handshake<S>(addr: SocketAddr, stream: S) -> Result<SendRequest<Body>, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| Error::Http { context: format!("HTTP/2 handshake with {addr}"), source })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, upstream = %addr, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Connects to `target` within `timeout`, with TCP_NODELAY.
pub async fn connect_within(
    timeout: Duration,
    target: SocketAddr,
    source: Option<SocketAddr>,
) -> Result<TcpStream, Error> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    let stream = tokio::time::timeout(timeout, connect(target, source))
        .await
        .unwrap_or_else(|_| Err(timed_out()))
        .map_err(Error::io(format!("connecting to {target}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends one HTTP/1.1 request (an upgrade) to `addr` on a mesh TLS connection of its own, kept open
/// for the upgraded stream.
pub async fn send_http1_once(
    addr: SocketAddr,
    mtls: &MeshTarget<'_>,
    req: Request<Body>,
) -> Result<Response<Incoming>, Error> {
    let stream = connect_within(super::UPSTREAM_CONNECT_TIMEOUT, addr, None).await?;
    let tls = mtls.configs.connect(stream, addr, MeshProtocol::Http1, Some(mtls.expected)).await?;
    let failed = |source| Error::Http { context: format!("HTTP/1.1 request to {addr} over mesh TLS"), source };
    let (mut sender, connection) = http1::handshake(TokioIo::new(tls)).await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, upstream = %addr, "upstream mesh HTTP/1.1 connection ended with an error");
        }
    });
    sender.send_request(req).await.map_err(failed)
}

/// Sends one HTTP/1.1 request (origin-form URI) to `addr` (from `source` when given) on a plain
/// connection of its own that closes after the exchange, for a cluster that reuses no connection
/// (`maxRequestsPerConnection: 1`); the request's circuit-breaker `permit` is told once the connection
/// is established.
pub async fn send_http1_fresh(
    addr: SocketAddr,
    source: Option<SocketAddr>,
    connect_timeout: Duration,
    req: Request<Body>,
    permit: Option<&mut Permit>,
) -> Result<Response<Incoming>, Error> {
    let stream = connect_within(connect_timeout, addr, source).await?;
    let failed = |source| Error::Http { context: format!("HTTP/1.1 request to {addr}"), source };
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, upstream = %addr, "upstream HTTP/1.1 connection ended with an error");
        }
    });
    if let Some(permit) = permit {
        permit.connected();
    }
    sender.send_request(req).await.map_err(failed)
}

/// Connects to `target`, from `source` when given (the passthrough address towards the application).
pub async fn connect(target: SocketAddr, source: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(target).await };
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(source)?;
    socket.connect(target).await
}
