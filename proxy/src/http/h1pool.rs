//! Keep-alive HTTP/1.1 connections to upstreams: hyper's connection-level client on connections this
//! pool makes, kept per (endpoint, source address) and reused most-recently-used first.
//!
//! A connection has no task of its own: whoever uses it drives it (polls hyper's connection future,
//! which reads and writes the socket). For a request without a body, the request's own task drives
//! it until the response head is in, then the response body ([`PooledBody`]) does, until the whole
//! response is in; then the connection goes back to the pool, undriven until the next request takes
//! it. For a small response that is at once: its body already waits in hyper's channel. Driving the
//! connection where the request runs saves, on every request, the wake-up and poll of another task
//! and a channel hop. A body dropped before the whole response is in takes the connection with it
//! (hyper closes a connection whose response was not read). An upload gets a task that drives the
//! connection through the exchange, so the upload goes on whether or not the response is read (a
//! client may send its whole body before it reads the answer); so does an empty response whose
//! connection is not idle yet, and a `101 Switching Protocols`, whose connection becomes a tunnel.
//!
//! An idle connection the upstream closed (its keep-alive timeout) is found when the next request
//! drives it: hyper reads the close before it writes and hands the request back unsent, and the
//! request goes out on the next connection. Idle connections close after the pool's idle timeout: a
//! sweeper task, started with the first idle connection, drops them (and ones it finds closed) and
//! ends with the pool. Idle time is counted in the sweeper's periods (a quarter of the timeout, at
//! least [`MIN_SWEEP_PERIOD`]), so no request reads a clock for the pool: a connection is never used
//! past its idle timeout, and is closed no earlier than two periods before it. An idle connection the upstream
//! closed stays open on this side (`CLOSE_WAIT`) until the next sweep or request finds it.
//!
//! This replaces hyper-util's pooled client, which on every request built an absolute URI (the
//! endpoint as text) to key its pool, checked the connection out through a shared pool with waiters,
//! and ran every connection in a task of its own.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::Body;
use super::pool::connect_within;
use crate::Error;
use crate::state::FastMap;

/// Idle connections kept per endpoint (and source address).
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// How many times per idle timeout the sweeper looks for idle connections.
pub const SWEEPS_PER_IDLE_TIMEOUT: u32 = 4;
/// The sweeper's shortest period.
pub const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(100);

/// Pool key: the endpoint, and the source address connections are bound to (the passthrough address
/// towards the application), if any.
type Key = (SocketAddr, Option<SocketAddr>);

/// hyper's connection future (with upgrades; hyper does not name its type): reads and writes the
/// socket when polled; ends when the connection closes (or, after a `101`, hands it to the upgrade).
type Driver = dyn Future<Output = Result<(), hyper::Error>> + Send + Sync;

/// One keep-alive connection: hyper's handle for sending on it, and the connection itself.
struct Conn {
    sender: SendRequest<Body>,
    /// Boxed: a connection moves in and out of the pool with every request. `None` once it ended.
    driver: Option<Pin<Box<Driver>>>,
}

impl Conn {
    /// Polls the connection; false once it has ended. An ended connection is dropped at once, which
    /// hands back, unsent, a request it did not take (hyper does that only on its drop).
    fn drive(&mut self, cx: &mut Context<'_>, addr: SocketAddr) -> bool {
        let Some(driver) = &mut self.driver else { return false };
        let Poll::Ready(result) = driver.as_mut().poll(cx) else { return true };
        if let Err(err) = result {
            tracing::debug!(error = %err, upstream = %addr, "upstream HTTP/1.1 connection ended with an error");
        }
        self.driver = None;
        false
    }

    fn is_open(&self) -> bool {
        self.driver.is_some()
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("ready", &self.sender.is_ready()).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    /// The pool's sweep count when the connection was pooled.
    since: u64,
}

/// Keep-alive HTTP/1.1 connections: a worker's own, or a cluster's when its connection-pool settings
/// give it its own connect or idle timeout.
#[derive(Debug)]
pub struct H1Pool {
    idle: Mutex<FastMap<Key, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Whether the sweeper task runs.
    sweeping: AtomicBool,
    /// Sweeper periods so far: an idle connection's age is counted in them, so the request path
    /// reads no clock for the pool.
    sweeps: AtomicU64,
    /// Sweeper periods in the idle timeout, rounded down: a connection pooled `limit` sweeps ago
    /// may have been idle for the whole timeout.
    limit: u64,
}

impl H1Pool {
    /// An empty pool whose connects give up after `connect_timeout` and whose connections close after
    /// `idle_timeout` unused.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let periods = idle_timeout.as_nanos() / sweep_period(idle_timeout).as_nanos().max(1);
        Self {
            idle: Mutex::new(FastMap::default()),
            connect_timeout,
            idle_timeout,
            sweeping: AtomicBool::new(false),
            sweeps: AtomicU64::new(0),
            limit: u64::try_from(periods).unwrap_or(u64::MAX),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr`, from `source` when given, on an idle
    /// connection or a new one. The connection goes back to the pool once the whole response is in.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        source: Option<SocketAddr>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let key = (addr, source);
        let failed = |source| Error::Http { context: format!("HTTP/1.1 request to {addr}"), source };
        while let Some(conn) = self.take_idle(&key) {
            match self.exchange(key, conn, req).await {
                Ok(response) => return Ok(response),
                Err(mut err) => match err.take_message() {
                    // The connection closed before it took the request (the upstream's keep-alive
                    // timeout): nothing was sent.
                    Some(unsent) => req = unsent,
                    None => return Err(failed(err.into_error())),
                },
            }
        }
        // Boxed: connecting is rare, and its future would otherwise enlarge every request's.
        let conn = Box::pin(self.connect(addr, source)).await?;
        self.exchange(key, conn, req).await.map_err(|err| failed(err.into_error()))
    }

    /// Sends `req` on `conn` (a new connection takes its first request without being driven first)
    /// and waits for the response head. A request without a body drives the connection itself; an
    /// upload gets a task that drives it, so the upload goes on whether or not the response is read
    /// (a client may send all of its body before it reads any of the answer).
    async fn exchange(
        self: &Arc<Self>,
        key: Key,
        mut conn: Conn,
        req: Request<Body>,
    ) -> Result<Response<Body>, TrySendError<Request<Body>>> {
        let uploads = !req.body().is_end_stream();
        let response = conn.sender.try_send_request(req);
        if uploads {
            self.release(key, conn);
            return response.await.map(|response| response.map(super::boxed));
        }
        let mut response = std::pin::pin!(response);
        let head = poll_fn(|cx| {
            // The connection first: it writes the request and reads the response the future waits for.
            conn.drive(cx, key.0);
            response.as_mut().poll(cx)
        })
        .await?;
        Ok(self.pooled(key, conn, head))
    }

    /// Idle connections held (open or not yet found closed).
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Drops connections that may have been idle for the pool's idle timeout, and ones found closed:
    /// each is driven once (nobody waits on it), which reads a close the upstream sent. (The sweeper
    /// task counts the periods; this does not.)
    pub fn sweep(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.lock().retain(|(addr, _), idle| {
            idle.retain_mut(|c| self.is_fresh(c) && c.conn.drive(&mut cx, *addr));
            !idle.is_empty()
        });
    }

    /// Whether `idle` is surely within the idle timeout. Pooled during period `since` and looked at
    /// during period `now`, it has been idle for less than `now - since + 1` periods, and for more
    /// than `now - since - 1`.
    fn is_fresh(&self, idle: &Idle) -> bool {
        self.sweeps.load(Ordering::Relaxed).saturating_sub(idle.since) < self.limit
    }

    /// The most recently used idle connection to `key` within the idle timeout (older ones are
    /// dropped on the way).
    fn take_idle(&self, key: &Key) -> Option<Conn> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        // An emptied list stays (the sweeper drops it): the connection is back soon, and the list's
        // allocation and map slot with it.
        while let Some(c) = list.pop() {
            if self.is_fresh(&c) {
                return Some(c.conn);
            }
        }
        None
    }

    /// Pools `conn` once it can take a request: at once when the response is in after the request
    /// went out in full (the usual case), else once a task has driven it there (an upstream may answer
    /// before reading the whole upload).
    fn release(self: &Arc<Self>, key: Key, mut conn: Conn) {
        if conn.sender.is_ready() {
            return self.put(key, conn);
        }
        let pool = self.clone();
        tokio::spawn(async move {
            poll_fn(
                |cx| if !conn.drive(cx, key.0) || conn.sender.is_ready() { Poll::Ready(()) } else { Poll::Pending },
            )
            .await;
            if conn.is_open() {
                pool.put(key, conn);
            }
        });
    }

    fn put(self: &Arc<Self>, key: Key, conn: Conn) {
        if !conn.is_open() || conn.sender.is_closed() {
            return;
        }
        {
            let mut idle = self.lock();
            let list = idle.entry(key).or_default();
            if list.len() >= MAX_IDLE_PER_ENDPOINT {
                return;
            }
            list.push(Idle { conn, since: self.sweeps.load(Ordering::Relaxed) });
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            self.start_sweeper();
        }
    }

    /// Starts the task that closes idle connections; it ends when the pool is dropped.
    fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Relaxed);
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        let period = sweep_period(self.idle_timeout);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweeps.fetch_add(1, Ordering::Relaxed);
                pool.sweep();
            }
        });
    }

    /// The response (its body boxed once, here), with `conn` back in the pool when the whole response
    /// is in already, or lent to the body, which returns it then. A `101 Switching Protocols`
    /// connection becomes the tunnel: driven to the upgrade by a task of its own, never reused.
    fn pooled(self: &Arc<Self>, key: Key, mut conn: Conn, response: Response<Incoming>) -> Response<Body> {
        if !conn.is_open() {
            return response.map(super::boxed);
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            tokio::spawn(async move {
                poll_fn(|cx| if conn.drive(cx, key.0) { Poll::Pending } else { Poll::Ready(()) }).await;
            });
            return response.map(super::boxed);
        }
        if conn.sender.is_ready() {
            self.put(key, conn);
            return response.map(super::boxed);
        }
        if response.body().is_end_stream() {
            // Nobody polls an empty body: a task drives the connection the rest of the way.
            self.release(key, conn);
            return response.map(super::boxed);
        }
        let pool = self.clone();
        response.map(|inner| super::boxed(PooledBody { inner, lent: Some(Lent { pool, key, conn }) }))
    }

    async fn connect(&self, addr: SocketAddr, source: Option<SocketAddr>) -> Result<Conn, Error> {
        let stream = connect_within(self.connect_timeout, addr, source).await?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| Error::Http { context: format!("HTTP/1.1 handshake with {addr}"), source })?;
        Ok(Conn { sender, driver: Some(Box::pin(driver.with_upgrades())) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Key, Vec<Idle>>> {
        // The map stays consistent even if a holder panicked: every update is a single push, pop or retain.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How often the sweeper of a pool with `idle_timeout` runs.
fn sweep_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / SWEEPS_PER_IDLE_TIMEOUT).max(MIN_SWEEP_PERIOD)
}

/// A connection lent to a response body, and the pool it goes back to.
struct Lent {
    pool: Arc<H1Pool>,
    key: Key,
    conn: Conn,
}

/// A response body from an [`H1Pool`] connection whose response is not all in: drives the connection
/// while it is read, and hands it back to the pool once the whole response is in; dropped earlier,
/// it closes the connection.
pub struct PooledBody {
    inner: Incoming,
    lent: Option<Lent>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("lent", &self.lent.is_some()).finish_non_exhaustive()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(Lent { pool, key, conn }) = self.lent.take() {
            pool.release(key, conn);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // The connection first: it reads what the body is waiting for.
        if let Some(lent) = &mut this.lent {
            if !lent.conn.drive(cx, lent.key.0) {
                this.lent = None;
            } else if lent.conn.sender.is_ready() {
                // The whole response is in (the rest waits in the channel): the connection is free.
                this.release();
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken exchange: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.lent = None,
            _ => {}
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

#[cfg(test)]
mod tests;
