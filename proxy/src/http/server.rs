//! One accepted HTTP connection: hyper's HTTP/1 or HTTP/2 server on it, whichever the client
//! speaks, until it closes or the proxy drains.
//!
//! The version comes from the caller when it knows it (protocol detection, a port declared
//! `http2`/`grpc`, the mesh ALPN); otherwise the first bytes tell ([`Version::Sniff`]). Knowing it
//! before hyper starts is what keeps an HTTP/1 connection lean: hyper's own version sniffing
//! (`hyper_util`'s auto server) hands the HTTP/1 parser a 24-byte prefix, and the read buffer then
//! doubles to 16 KiB for the connection's life; the server state it keeps is also the larger of the
//! HTTP/1 and HTTP/2 ones.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Context, Shared, logged, pool};
use crate::detect::{self, Protocol};
use crate::drain;

/// Most concurrent streams a client may open on one HTTP/2 connection.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 1024;

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
            // No timeout, as hyper's own sniffing has none: a keep-alive client may connect early.
            // Boxed, so the connection's state does not keep it after the first bytes.
            let sniffed = tokio::select! {
                sniffed = Box::pin(detect::detect(io, Duration::ZERO)) => sniffed,
                () = shared.drain.signaled() => return,
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
    let service_context = context.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = service_shared.clone();
        let context = service_context.clone();
        // Boxed: hyper keeps an in-flight slot the size of this future for each HTTP/1 connection, for
        // the connection's whole life; boxed, the request path's state exists only while a request does.
        Box::pin(async move { Ok::<_, Infallible>(logged(&shared, req, context).await) })
    });
    let io = TokioIo::new(io);
    let result = match version {
        Known::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(io, service)
                .with_upgrades();
            until_drained(connection, http1::UpgradeableConnection::graceful_shutdown, &shared.drain).await
        }
        // Boxed: HTTP/2 connections are few (pooled between proxies) and their state is the larger.
        Known::Http2 => {
            Box::pin(async {
                let connection = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
                    .initial_stream_window_size(pool::H2_STREAM_WINDOW)
                    .initial_connection_window_size(pool::H2_CONNECTION_WINDOW)
                    .serve_connection(io, service);
                until_drained(connection, http2::Connection::graceful_shutdown, &shared.drain).await
            })
            .await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, peer = %context.peer, "connection ended with an error");
    }
}

/// Runs `connection` to its end; once the proxy drains, asks it to finish its in-flight requests and
/// close (`shutdown`: its `graceful_shutdown`).
async fn until_drained<C>(connection: C, shutdown: fn(Pin<&mut C>), drain: &drain::Watch) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = drain.signaled() => {
            shutdown(connection.as_mut());
            connection.await
        }
    }
}
