//! Upstream servers that misbehave on purpose, for the resilience tests: they fail half of the
//! requests with 503 (every other one, or at random), fail all of them (at once or slowly), hang
//! without answering, reset the connection or refuse HTTP/2 streams, or answer slowly. Each counts what it received: requests,
//! their `x-request-id`s, body sizes, and the `grpc-timeout` each carried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::upstream::Body;

/// How a faulty server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answers every request 200.
    Healthy,
    /// Answers every other request it receives 503: exactly half fail.
    FailEveryOther,
    /// Answers each request 503 with this probability, independently.
    FailRandomly(f64),
    /// Answers every request 503.
    FailAlways,
    /// Answers every request 503 after this delay.
    FailSlowly(Duration),
    /// Reads the request and never answers.
    Hang,
    /// Reads some of the request, then resets the TCP connection (RST, no response).
    Reset,
    /// Speaks HTTP/2 only and resets every stream with `REFUSED_STREAM`.
    RefuseStream,
    /// Answers 200 after this delay.
    Slow(Duration),
}

/// What a faulty server saw.
#[derive(Debug, Default)]
pub struct Seen {
    requests: AtomicUsize,
    failed: AtomicUsize,
    request_ids: Mutex<Vec<String>>,
    body_sizes: Mutex<Vec<usize>>,
    grpc_timeouts: Mutex<Vec<String>>,
}

impl Seen {
    /// Requests (or connections, for [`Fault::Reset`]) received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests answered 503.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// The `x-request-id` of each request, in arrival order.
    pub fn request_ids(&self) -> Vec<String> {
        self.request_ids.lock().expect("lock").clone()
    }

    /// The body size of each request whose body was read to the end.
    pub fn body_sizes(&self) -> Vec<usize> {
        self.body_sizes.lock().expect("lock").clone()
    }

    /// The `grpc-timeout` header of each request that had one.
    pub fn grpc_timeouts(&self) -> Vec<String> {
        self.grpc_timeouts.lock().expect("lock").clone()
    }
}

/// A running faulty server.
#[derive(Debug, Clone)]
pub struct Faulty {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

/// Starts a server on `addr` (port 0 for any) misbehaving as `fault`; HTTP/1.1 and HTTP/2.
pub async fn start(addr: SocketAddr, fault: Fault) -> Faulty {
    let listener = TcpListener::bind(addr).await.expect("bind faulty server");
    let bound = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let server_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let seen = server_seen.clone();
            if fault == Fault::Reset {
                tokio::spawn(reset(stream, seen));
                continue;
            }
            if fault == Fault::RefuseStream {
                tokio::spawn(refuse_streams(stream, seen));
                continue;
            }
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, fault, bound, seen.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Faulty { addr: bound, seen }
}

/// Reads the start of a request, then closes with SO_LINGER 0, which sends RST.
async fn reset(mut stream: tokio::net::TcpStream, seen: Arc<Seen>) {
    let mut buf = [0u8; 1024];
    if let Ok(n) = stream.read(&mut buf).await
        && n > 0
    {
        seen.requests.fetch_add(1, Ordering::SeqCst);
    }
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Accepts HTTP/2 streams and refuses each with `REFUSED_STREAM`.
async fn refuse_streams(stream: tokio::net::TcpStream, seen: Arc<Seen>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else { return };
    while let Some(Ok((_, mut respond))) = connection.accept().await {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    }
}

async fn answer(
    req: Request<Incoming>,
    fault: Fault,
    me: SocketAddr,
    seen: Arc<Seen>,
) -> Result<Response<Body>, Infallible> {
    let n = seen.requests.fetch_add(1, Ordering::SeqCst);
    let text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(id) = text("x-request-id") {
        seen.request_ids.lock().expect("lock").push(id);
    }
    let grpc_timeout = text("grpc-timeout");
    if let Some(timeout) = &grpc_timeout {
        seen.grpc_timeouts.lock().expect("lock").push(timeout.clone());
    }
    let grpc = text("content-type").is_some_and(|t| t.starts_with("application/grpc"));
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST, me, grpc, Bytes::new())),
    };
    seen.body_sizes.lock().expect("lock").push(body.len());
    let fail = match fault {
        Fault::Healthy | Fault::Reset | Fault::RefuseStream => false,
        Fault::FailEveryOther => n.is_multiple_of(2),
        Fault::FailRandomly(p) => fastrand::f64() < p,
        Fault::FailAlways => true,
        Fault::FailSlowly(delay) => {
            tokio::time::sleep(delay).await;
            true
        }
        Fault::Hang => std::future::pending().await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            false
        }
    };
    if fail {
        seen.failed.fetch_add(1, Ordering::SeqCst);
        return Ok(status(StatusCode::SERVICE_UNAVAILABLE, me, grpc, Bytes::from_static(b"failing on purpose\n")));
    }
    let mut response = status(StatusCode::OK, me, grpc, body);
    if let Some(timeout) = grpc_timeout.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert("x-seen-grpc-timeout", timeout);
    }
    Ok(response)
}

/// A response naming the server (`x-upstream`); gRPC requests get a trailers-only `grpc-status: 0`.
fn status(code: StatusCode, me: SocketAddr, grpc: bool, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert("x-upstream", HeaderValue::from_str(&me.to_string()).expect("address"));
    if grpc && code == StatusCode::OK {
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static("0"));
    }
    response
}
