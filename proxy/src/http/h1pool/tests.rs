//! The pool against a raw HTTP/1.1 upstream on a real socket that counts its connections and can
//! close each one after its response (as an upstream whose keep-alive timeout passed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::H1Pool;
use crate::http::{Body, full};

/// Bytes in every response body.
const BODY_LEN: usize = 200_000;

/// An upstream answering every request with [`BODY_LEN`] bytes.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Upstream {
    /// Keeps connections open (`close_after_response` false) or closes each after one response,
    /// without saying so in a header.
    async fn start(close_after_response: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (counted, still_open) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let open = still_open.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    'connection: loop {
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => break 'connection,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        head.clear();
                        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY_LEN}\r\n\r\n");
                        let body = vec![b'x'; BODY_LEN];
                        if socket.write_all(response.as_bytes()).await.is_err()
                            || socket.write_all(&body).await.is_err()
                        {
                            break;
                        }
                        if close_after_response {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, accepted, open }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

fn get(addr: SocketAddr) -> Request<Body> {
    Request::builder().uri("/").header("host", addr.to_string()).body(full(Vec::new())).expect("request")
}

/// Sends one request and reads its whole body.
async fn fetch(pool: &Arc<H1Pool>, addr: SocketAddr) -> usize {
    let response = pool.send(addr, None, get(addr)).await.expect("response");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body").to_bytes().len()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sequential_requests_to_an_endpoint_share_one_keep_alive_connection() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    for _ in 0..5 {
        assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN);
    }
    assert_eq!(upstream.accepted(), 1, "one connection carried all five");
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_goes_back_to_the_pool_only_once_its_body_was_read_to_the_end() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    let first = pool.send(upstream.addr, None, get(upstream.addr)).await.expect("first response");
    assert_eq!(pool.idle_count(), 0, "its body is still unread");
    // A second request while the first body streams needs a connection of its own.
    assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN);
    assert_eq!(upstream.accepted(), 2);
    assert_eq!(first.into_body().collect().await.expect("body").to_bytes().len(), BODY_LEN);
    assert_eq!(pool.idle_count(), 2, "both connections are idle once both bodies ended");
}

#[tokio::test]
async fn a_body_dropped_before_its_end_takes_its_connection_with_it() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    let mut body = pool.send(upstream.addr, None, get(upstream.addr)).await.expect("response").into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.data_ref().is_some_and(|d| d.len() < BODY_LEN), "the body comes in pieces");
    drop(body);
    eventually("the upstream sees the connection close", || upstream.open() == 0).await;
    assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN);
    assert_eq!(upstream.accepted(), 2, "the half-read connection was not reused");
}

#[tokio::test]
async fn a_request_after_the_upstream_closed_the_idle_connection_goes_out_on_a_new_one() {
    let upstream = Upstream::start(true).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    for round in 1..=5 {
        assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN, "round {round}");
        // Whether or not the pool has noticed the close yet, the next request must not fail.
    }
    assert_eq!(upstream.accepted(), 5);
}

#[tokio::test]
async fn idle_connections_close_after_the_pools_idle_timeout() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_millis(300)));
    assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN);
    let started = tokio::time::Instant::now();
    eventually("the idle connection closes", || upstream.open() == 0).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "closed after the idle timeout, not before");
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn connections_from_a_source_address_are_kept_apart_from_the_others() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN);
    let source = SocketAddr::from(([127, 0, 0, 6], 0));
    let response = pool.send(upstream.addr, Some(source), get(upstream.addr)).await.expect("response");
    assert_eq!(response.into_body().collect().await.expect("body").to_bytes().len(), BODY_LEN);
    assert_eq!(upstream.accepted(), 2, "the idle plain connection is not one from the source address");
    assert_eq!(pool.idle_count(), 2);
}
