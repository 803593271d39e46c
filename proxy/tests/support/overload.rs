//! Upstream servers that misbehave on purpose for the circuit-breaking and outlier-detection tests: an
//! HTTP server (HTTP/1.1 and HTTP/2 cleartext) whose answer status and delay can be changed while it
//! runs, and which counts the connections it accepted, the connections open now, the requests it got
//! and the most requests it ever had in flight at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::upstream::Body;

/// What a [`Misbehaving`] server counts and how it answers.
#[derive(Debug, Default)]
struct Shared {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    status: AtomicU16,
    delay_ms: AtomicU64,
}

/// A running misbehaving server.
#[derive(Debug, Clone)]
pub struct Misbehaving {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Misbehaving {
    /// Starts a server on `addr` answering `status` after `delay`, with `x-upstream: <name>`.
    pub async fn start(addr: SocketAddr, name: &'static str, status: u16, delay: Duration) -> Misbehaving {
        let listener = TcpListener::bind(addr).await.expect("bind misbehaving server");
        let bound = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        shared.status.store(status, Ordering::Relaxed);
        shared.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
        let server = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                server.accepted.fetch_add(1, Ordering::Relaxed);
                server.open.fetch_add(1, Ordering::Relaxed);
                let connection = server.clone();
                tokio::spawn(async move {
                    let per_request = connection.clone();
                    let service = hyper::service::service_fn(move |_req| answer(per_request.clone(), name));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    connection.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Misbehaving { addr: bound, shared }
    }

    /// Answers `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// Answers after `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The most requests that were ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak_in_flight.load(Ordering::Relaxed)
    }
}

async fn answer(shared: Arc<Shared>, name: &'static str) -> Result<Response<Body>, std::convert::Infallible> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let now = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    shared.peak_in_flight.fetch_max(now, Ordering::Relaxed);
    let delay = shared.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    let status = StatusCode::from_u16(shared.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
    let body = Full::new(Bytes::from_static(b"answer\n")).map_err(|never| match never {}).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert("x-upstream", http::HeaderValue::from_static(name));
    Ok(response)
}
