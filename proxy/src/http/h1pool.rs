//! Keep-alive HTTP/1.1 connections to upstreams: hyper's connection-level client on connections this
//! pool makes, kept per (endpoint, source address) and reused most-recently-used first.
//!
//! A connection goes back to the pool when its response body has been read to the end, by the body
//! itself ([`PooledBody`]), so no task waits for it (unless the request body is still going out: the
//! upstream answered early); a body dropped before its end takes the connection with it (hyper
//! closes a connection whose response was not read). A request that a reused connection closed
//! before taking (the upstream's keep-alive timeout raced it) goes out on the next connection. Idle
//! connections close after the pool's idle timeout: a sweeper task, started with the first idle
//! connection, drops them and ends with the pool.
//!
//! This replaces hyper-util's pooled client, which on every request built an absolute URI (the
//! endpoint as text) to key its pool, checked the connection out through a shared pool with waiters,
//! and spawned a task that waited for the connection to become idle again.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::Body;
use super::pool::{connect_within, http1_connection};
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

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
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
}

impl H1Pool {
    /// An empty pool whose connects give up after `connect_timeout` and whose connections close after
    /// `idle_timeout` unused.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self { idle: Mutex::new(FastMap::default()), connect_timeout, idle_timeout, sweeping: AtomicBool::new(false) }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr`, from `source` when given, on an idle
    /// connection or a new one. The response body hands the connection back when it ends.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        source: Option<SocketAddr>,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, Error> {
        let key = (addr, source);
        let failed = |source| Error::Http { context: format!("HTTP/1.1 request to {addr}"), source };
        while let Some(mut sender) = self.take_idle(&key) {
            // Closed while idle (the upstream's keep-alive timeout): the next one.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.pooled(key, sender, response)),
                Err(mut err) => match err.take_message() {
                    // The connection closed before it took the request: nothing was sent.
                    Some(unsent) => req = unsent,
                    None => return Err(failed(err.into_error())),
                },
            }
        }
        // Boxed: connecting is rare, and its future would otherwise enlarge every request's.
        let mut sender = Box::pin(self.connect(addr, source)).await?;
        sender.ready().await.map_err(failed)?;
        let response = sender.send_request(req).await.map_err(failed)?;
        Ok(self.pooled(key, sender, response))
    }

    /// Idle connections held (open or not yet found closed).
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Drops connections idle for the pool's idle timeout, and closed ones.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, idle| {
            idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < self.idle_timeout);
            !idle.is_empty()
        });
    }

    /// The most recently used idle connection to `key` that has not outlived the idle timeout
    /// (older ones are dropped on the way).
    fn take_idle(&self, key: &Key) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let list = idle.get_mut(key).filter(|list| !list.is_empty())?;
        let now = Instant::now();
        // An emptied list stays (the sweeper drops it): the connection is back soon, and the list's
        // allocation and map slot with it.
        while let Some(c) = list.pop() {
            if now.duration_since(c.since) < self.idle_timeout {
                return Some(c.sender);
            }
        }
        None
    }

    /// Pools `sender` once its connection can take a request: at once when the response ended after
    /// the request was sent in full (the usual case), else when the request body is through (an
    /// upstream may answer before reading the whole upload).
    fn release(self: &Arc<Self>, key: Key, mut sender: SendRequest<Body>) {
        if sender.is_ready() {
            return self.put(key, sender);
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(key, sender);
            }
        });
    }

    fn put(self: &Arc<Self>, key: Key, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.lock();
            let list = idle.entry(key).or_default();
            if list.len() >= MAX_IDLE_PER_ENDPOINT {
                return;
            }
            list.push(Idle { sender, since: Instant::now() });
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
        let period = (self.idle_timeout / SWEEPS_PER_IDLE_TIMEOUT).max(MIN_SWEEP_PERIOD);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }

    /// The response with a body that returns `sender` to the pool when it ends (at once when it is
    /// empty). A `101 Switching Protocols` connection becomes the tunnel: never reused.
    fn pooled(
        self: &Arc<Self>,
        key: Key,
        sender: SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
        response.map(|inner| {
            let mut body = PooledBody { inner, back: reusable.then(|| Back { pool: self.clone(), key, sender }) };
            if body.inner.is_end_stream() {
                body.release();
            }
            body
        })
    }

    async fn connect(&self, addr: SocketAddr, source: Option<SocketAddr>) -> Result<SendRequest<Body>, Error> {
        let stream = connect_within(self.connect_timeout, addr, source).await?;
        http1_connection(addr, stream)
            .await
            .map_err(|source| Error::Http { context: format!("HTTP/1.1 handshake with {addr}"), source })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Key, Vec<Idle>>> {
        // The map stays consistent even if a holder panicked: every update is a single push, pop or retain.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where a connection goes back when its response body ends.
#[derive(Debug)]
struct Back {
    pool: Arc<H1Pool>,
    key: Key,
    sender: SendRequest<Body>,
}

/// A response body from an [`H1Pool`] connection: hands the connection back to the pool once read to
/// its end; dropped earlier, it closes the connection.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    back: Option<Back>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(Back { pool, key, sender }) = self.back.take() {
            pool.release(key, sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken exchange: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
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
