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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use super::batch::Batched;
use super::{Body, MeshTarget, h2stream};
use crate::Error;
use crate::breaker::Permit;
use crate::state::FastMap;
use crate::tls::MeshProtocol;

/// hyper's HTTP/1.1 sender (this module's `SendRequest` is h2's).
type SendRequest1 = http1::SendRequest<Body>;

/// Per-stream HTTP/2 flow-control window towards upstreams (and from downstreams): large enough for
/// loopback and LAN bandwidth, small enough that a slow reader pins little memory.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// Per-connection HTTP/2 flow-control window.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Interval of HTTP/2 keep-alive pings on upstream connections, so a dead peer is noticed.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keep-alive ping may go unanswered before the connection is closed.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams a new upstream HTTP/2 connection opens at most before the peer's SETTINGS say how many it
/// takes (hyper's default).
pub const H2_INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Largest response header list accepted from an upstream (hyper's default).
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Request data buffered per stream before waiting for the peer's window (hyper's default).
pub const H2_MAX_SEND_BUFFER_SIZE: usize = 1024 * 1024;

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

/// An upstream HTTP/2 connection as the pool holds it.
#[derive(Debug, Clone)]
struct Conn {
    sender: SendRequest<Bytes>,
    /// Set when the connection's task ended (closed, failed, or its keep-alive ping went unanswered).
    closed: Arc<AtomicBool>,
    /// Streams open on it ([`h2stream::StreamGuard`]s).
    open: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Entry {
    conn: Conn,
    /// When a sweep last found the connection used (or when it was opened).
    last_used: Instant,
    /// Whether a request went out on it since the last sweep: requests set this flag, and the sweep
    /// turns it into `last_used`, so no request reads the clock for the pool.
    used: bool,
    /// Requests sent on the connection so far.
    sent: u32,
    /// The cluster's idle timeout, when it has its own.
    idle: Option<Duration>,
}

impl Entry {
    fn is_closed(&self) -> bool {
        self.conn.closed.load(Ordering::Relaxed)
    }
}

/// Lets HPACK index this request's `x-request-id`, the first on its connection (every other id is
/// marked never-indexed, [`super::ensure_request_id`]). Every request has its own id, so the value is
/// worth nothing to the table; but once one id sits in both sides' tables, the ids after it are sent
/// as a reference to the name and a literal value, instead of the name as a literal too: the server
/// proxy neither decodes nor parses nor allocates the name, and the client proxy Huffman-codes twelve
/// bytes less. Only one: HPACK's encoder compares a new value with every entry of the same name, so
/// ids indexed again and again would make each request's encoding walk all of them. Should other
/// headers evict that one entry, ids go out with a literal name again, as before.
fn index_name_of_request_id(headers: &mut http::HeaderMap) {
    if let Some(id) = headers.get_mut(super::headers::REQUEST_ID) {
        id.set_sensitive(false);
    }
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
    shortest_idle_ms: AtomicU64,
    /// Told when a shorter cluster idle timeout appears, so the sweeper need not finish a long sleep.
    idle_shortened: tokio::sync::Notify,
}

impl H2Pool {
    /// An empty pool whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connections: Mutex::new(FastMap::default()),
            connect_timeout,
            shortest_idle_ms: AtomicU64::new(u64::MAX),
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
    ) -> Result<Response<Body>, Error> {
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
    ) -> Result<Response<Body>, Error> {
        let key = (addr, source, mtls.is_some(), options.max_requests_per_connection);
        let failed = |source| Error::H2 { context: format!("request to {addr}"), source };
        let ready = match self.reuse(&key) {
            // A pooled connection that cannot take a stream (it closed, or the peer is going away)
            // leaves the pool, and the request goes out on a new one: nothing was sent yet.
            // The pool's handle was cloned for this request (h2 wants one per concurrent request).
            Some(Conn { sender, closed, open }) => match sender.ready().await {
                Ok(sender) => Some((sender, open)),
                Err(err) => {
                    tracing::debug!(error = %err, upstream = %addr, "pooled HTTP/2 connection unusable; opening another");
                    closed.store(true, Ordering::Relaxed);
                    self.forget(&key, &closed);
                    None
                }
            },
            None => None,
        };
        // The first request on a new connection lets HPACK remember its request id (see below).
        let index_request_id = ready.is_none();
        let (mut sender, open) = match ready {
            Some(ready) => ready,
            None => {
                // Boxed: connecting is rare, and its future would otherwise enlarge every request's.
                let conn = Box::pin(self.connect_pooled(key, mtls, options)).await?;
                (conn.sender.ready().await.map_err(failed)?, conn.open)
            }
        };
        if let Some(permit) = permit {
            permit.connected();
        }
        let (mut parts, body) = req.into_parts();
        if index_request_id {
            index_name_of_request_id(&mut parts.headers);
        }
        let end = body.is_end_stream();
        let (response, stream) = sender.send_request(Request::from_parts(parts, ()), end).map_err(failed)?;
        let mut guard = h2stream::StreamGuard::new(open);
        if !end {
            guard.pipe(body, stream);
        }
        let response = response.await.map_err(failed)?;
        Ok(response.map(|stream| super::boxed(h2stream::H2Body::new(stream, guard))))
    }

    /// A handle on the pooled connection for `key`, counting the request against its limit (a
    /// connection that reached it leaves the pool and closes once its streams end).
    fn reuse(&self, key: &Key) -> Option<Conn> {
        let limit = key.3;
        let mut connections = self.lock();
        let entry = connections.get_mut(key).filter(|e| !e.is_closed())?;
        entry.used = true;
        entry.sent = entry.sent.saturating_add(1);
        let reused = entry.conn.clone();
        if limit.is_some_and(|limit| entry.sent >= limit) {
            connections.remove(key);
        }
        Some(reused)
    }

    /// Removes the connection whose closed flag is `closed` (not one opened since in its place).
    fn forget(&self, key: &Key, closed: &Arc<AtomicBool>) {
        let mut connections = self.lock();
        if connections.get(key).is_some_and(|e| Arc::ptr_eq(&e.conn.closed, closed)) {
            connections.remove(key);
        }
    }

    /// Opens a connection for `key` and pools it (unless it carries a single request).
    async fn connect_pooled(
        &self,
        key: Key,
        mtls: Option<&MeshTarget<'_>>,
        options: &ConnOptions,
    ) -> Result<Conn, Error> {
        let (addr, source, _, limit) = key;
        let conn = self.connect(addr, source, mtls, options.connect_timeout).await?;
        if limit != Some(1) {
            if let Some(idle) = options.idle_timeout {
                let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                let before = self.shortest_idle_ms.fetch_min(idle_ms, Ordering::Relaxed);
                if idle_ms < before {
                    self.idle_shortened.notify_one();
                }
            }
            let entry = Entry {
                conn: conn.clone(),
                last_used: Instant::now(),
                used: false,
                sent: 1,
                idle: options.idle_timeout,
            };
            self.lock().insert(key, entry);
        }
        Ok(conn)
    }

    /// Drops connections unused for `idle` or their cluster's own idle timeout (and closed ones);
    /// their connection tasks then end. A connection counts as used at the first sweep after its
    /// last request, so it closes between one idle timeout and that plus two sweep periods after it.
    pub fn sweep(&self, idle: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, e| {
            if std::mem::take(&mut e.used) {
                e.last_used = now;
            }
            !e.is_closed() && now.duration_since(e.last_used) < e.idle.unwrap_or(idle)
        });
    }

    /// Waits until a cluster with a shorter idle timeout than any before puts a connection in the pool.
    pub async fn idle_shortened(&self) {
        self.idle_shortened.notified().await;
    }

    /// The shortest idle timeout of any cluster whose connections the pool held, if any.
    pub fn shortest_cluster_idle(&self) -> Option<Duration> {
        let ms = self.shortest_idle_ms.load(Ordering::Relaxed);
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
    ) -> Result<Conn, Error> {
        let stream = connect_within(timeout, addr, source).await?;
        match mtls {
            Some(mtls) => {
                let tls = mtls.configs.connect(stream, addr, MeshProtocol::Http2, Some(mtls.expected)).await?;
                Self::handshake(addr, tls).await
            }
            None => Self::handshake(addr, stream).await,
        }
    }

    /// The HTTP/2 handshake on a connected stream; the connection then runs on its own task, which
    /// pings the peer every [`H2_KEEPALIVE_INTERVAL`] while streams are open (as hyper did: servers
    /// such as gRPC's answer pings on idle connections with `GOAWAY`) and closes the connection when
    /// a ping goes unanswered for [`H2_KEEPALIVE_TIMEOUT`].
    async fn handshake<S>(addr: SocketAddr, stream: S) -> Result<Conn, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_max_send_streams(H2_INITIAL_MAX_SEND_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(H2_MAX_SEND_BUFFER_SIZE)
            .initial_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .handshake::<_, Bytes>(Batched::new(stream))
            .await
            .map_err(|source| Error::H2 { context: format!("HTTP/2 handshake with {addr}"), source })?;
        let closed = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (mark, streams) = (closed.clone(), open.clone());
        let ping_pong = connection.ping_pong();
        tokio::spawn(async move {
            let keepalive = async move {
                let Some(mut ping_pong) = ping_pong else { return std::future::pending().await };
                loop {
                    tokio::time::sleep(H2_KEEPALIVE_INTERVAL).await;
                    if streams.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    let pong = tokio::time::timeout(H2_KEEPALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            };
            tokio::select! {
                result = &mut connection => if let Err(err) = result {
                    tracing::debug!(error = %err, upstream = %addr, "upstream HTTP/2 connection ended with an error");
                },
                () = keepalive => tracing::debug!(upstream = %addr, "upstream HTTP/2 keep-alive ping unanswered; closing"),
            }
            mark.store(true, Ordering::Relaxed);
        });
        Ok(Conn { sender, closed, open })
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
    let mut sender = http1_connection(addr, tls).await.map_err(failed)?;
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
    let mut sender = http1_connection(addr, stream).await.map_err(failed)?;
    if let Some(permit) = permit {
        permit.connected();
    }
    sender.send_request(req).await.map_err(failed)
}

/// The HTTP/1.1 client side of a connection to `addr` (plain or mesh TLS); the connection then runs on
/// its own task (upgrades allowed) until it closes.
pub(super) async fn http1_connection<S>(addr: SocketAddr, io: S) -> Result<SendRequest1, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, upstream = %addr, "upstream HTTP/1.1 connection ended with an error");
        }
    });
    Ok(sender)
}

/// Connects to `target`, from `source` when given (the passthrough address towards the application).
pub async fn connect(target: SocketAddr, source: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(target).await };
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(source)?;
    socket.connect(target).await
}

#[cfg(test)]
mod tests;
