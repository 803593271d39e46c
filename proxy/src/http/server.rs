//! One accepted HTTP connection: hyper's HTTP/1 server, or `h2`'s HTTP/2 server ([`h2conn`]),
//! whichever the client speaks, until it closes or the proxy drains.
//!
//! The version comes from the caller when it knows it (protocol detection, a port declared
//! `http2`/`grpc`, the mesh ALPN); otherwise the first bytes tell ([`Version::Sniff`]). Knowing it
//! before hyper starts is what keeps an HTTP/1 connection lean: hyper's own version sniffing
//! (`hyper_util`'s auto server) hands the HTTP/1 parser a 24-byte prefix, and the read buffer then
//! doubles to 16 KiB for the connection's life; the server state it keeps is also the larger of the
//! HTTP/1 and HTTP/2 ones.
//!
//! A connection on which no request started for `--idle-timeout` (Envoy's default: one hour; zero
//! turns it off) is closed as a drain closes it: in-flight responses finish first, and an HTTP/2
//! client gets `GOAWAY` while its open streams go on (Envoy waits for no stream to be active). A
//! counter the requests bump tells it, checked once per idle period, so a connection is closed after
//! one to two idle periods; no request reads the clock or arms a timer for it (hyper's own header
//! read timeout did both for every request, and closed keep-alive connections after 30 idle seconds).
//! Slow request headers are therefore bounded by the idle timeout only, as in Envoy, whose
//! `request_headers_timeout` is off by default.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::batch::Batched;
use super::{Context, Shared, logged};
use crate::detect::{self, Protocol};
use crate::drain;

pub use h2conn::H2_MAX_CONCURRENT_STREAMS;

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    /// HTTP/2, with prior knowledge or by ALPN.
    Http2,
    /// Unknown yet: the client's first bytes tell (the HTTP/2 preface, or else HTTP/1).
    Sniff,
}

/// Serves HTTP on one accepted connection until it closes or the proxy drains, routing each request
/// with `context`.
pub async fn serve<S>(shared: Shared, io: S, context: Context, version: Version)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let version = match version {
        Version::Http1 => Known::Http1,
        Version::Http2 => Known::Http2,
        Version::Sniff => {
            // No detection timeout, as hyper's own sniffing has none: a keep-alive client may connect
            // early. A client silent for an idle period is closed, as an idle connection is.
            // Boxed, so the connection's state does not keep it after the first bytes.
            let sniffed = tokio::select! {
                sniffed = Box::pin(detect::detect(io, Duration::ZERO)) => sniffed,
                () = shared.drain.signaled() => return,
                () = idle_period(shared.settings.idle_timeout) => return,
            };
            return match sniffed {
                Ok((detection, io)) => {
                    let known = if detection.protocol == Protocol::Http2 { Known::Http2 } else { Known::Http1 };
                    serve_known(shared, io, context, known).await
                }
                Err(err) => {
                    tracing::debug!(error = %err, peer = %context.peer, "connection lost before its first request")
                }
            };
        }
    };
    serve_known(shared, io, context, version).await
}

/// A version [`serve`] has settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Http1,
    Http2,
}

async fn serve_known<S>(shared: Shared, io: S, context: Context, version: Known)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // One Arc per connection, so each request clones a single pointer.
    let service_shared = Arc::new(shared.clone());
    let activity = Activity::new(shared.settings.idle_timeout);
    let requests = activity.counter();
    let peer = context.peer;
    match version {
        Known::Http1 => {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                requests.started();
                let shared = service_shared.clone();
                let context = context.clone();
                // Boxed: hyper keeps an in-flight slot the size of this future for each HTTP/1
                // connection, for the connection's whole life; boxed, the request path's state exists
                // only while a request does.
                super::in_box(|| logged(shared, req.map(super::boxed), context))
            });
            let io = TokioIo::new(io);
            // No timer: hyper would arm its header read timeout for every request.
            let connection = http1::Builder::new().keep_alive(true).serve_connection(io, service).with_upgrades();
            let result =
                until_closed(connection, http1::UpgradeableConnection::graceful_shutdown, &shared.drain, activity)
                    .await;
            log_end(result, peer);
        }
        // Boxed: HTTP/2 connections are few (pooled between proxies) and their state is the larger.
        Known::Http2 => {
            Box::pin(async {
                let streams = h2conn::Streams { shared: service_shared, context, requests };
                let connection = h2conn::H2Connection::new(Batched::new(io), streams);
                let result =
                    until_closed(connection, h2conn::H2Connection::graceful_shutdown, &shared.drain, activity).await;
                log_end(result, peer);
            })
            .await
        }
    }
}

/// Logs how a connection ended, when it was with an error.
fn log_end<E: std::fmt::Display>(result: Result<(), E>, peer: std::net::SocketAddr) {
    if let Err(err) = result {
        tracing::debug!(error = %err, %peer, "connection ended with an error");
    }
}

/// How a connection shows it is in use (requests starting), and how long it may go without a new
/// one: `--idle-timeout`, where zero turns the check off (as Envoy's `idle_timeout: 0s` does).
#[derive(Debug)]
pub(crate) struct Activity {
    started: RequestCounter,
    /// Zero: the check is off.
    idle_timeout: Duration,
}

/// What a connection's service bumps for each request it starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestCounter(Arc<AtomicU64>);

impl RequestCounter {
    pub(crate) fn started(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Activity {
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Self { started: RequestCounter::default(), idle_timeout }
    }

    /// The counter the connection's service bumps.
    pub(crate) fn counter(&self) -> RequestCounter {
        self.started.clone()
    }

    /// One idle period; never over when the check is off.
    async fn period(&self) {
        idle_period(self.idle_timeout).await;
    }
}

/// Waits `idle_timeout`, or forever when it is zero (the idle check off).
pub(crate) async fn idle_period(idle_timeout: Duration) {
    if idle_timeout.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(idle_timeout).await;
}

/// Runs `connection` to its end; once the proxy drains, or when no request started on it for an idle
/// period, asks it to finish its in-flight requests and close (`shutdown`: its `graceful_shutdown`).
/// A connection that never started a request has nothing to finish: if it is still open one period
/// after that, it is dropped (an HTTP/2 client that never sent its preface would keep it forever).
pub(crate) async fn until_closed<C, E>(
    connection: C,
    shutdown: fn(Pin<&mut C>),
    drain: &drain::Watch,
    activity: Activity,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(connection);
    let mut seen = activity.started.count();
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => return result,
            () = drain.signaled() => break,
            () = activity.period() => {
                let started = activity.started.count();
                if started == seen {
                    tracing::debug!(idle_timeout = ?activity.idle_timeout, "closing an idle connection");
                    break;
                }
                seen = started;
            }
        }
    }
    shutdown(connection.as_mut());
    if activity.started.count() > 0 {
        return connection.await;
    }
    tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = activity.period() => {
            tracing::debug!("dropping a connection that never sent a request and did not close");
            Ok(())
        }
    }
}

mod h2conn;
#[cfg(test)]
mod tests;
