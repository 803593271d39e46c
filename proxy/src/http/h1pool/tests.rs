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

/// Bytes in every response body: more than a socket read takes at once.
const BODY_LEN: usize = 200_000;
/// Bytes in a small response body: it comes in one read with its head.
const SMALL_BODY_LEN: usize = 1024;

/// When an [`Upstream`] closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Never: keep-alive.
    Never,
    /// After each response, without a word.
    Silently,
    /// After each response, which says `Connection: close`.
    Saying,
    /// When no request came for this long (a keep-alive timeout).
    WhenIdleFor(Duration),
}

/// An upstream answering every request with a body of a fixed length ([`BODY_LEN`] unless told).
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Upstream {
    /// Keeps connections open (`close_after_response` false) or closes each after one response,
    /// without saying so in a header (as an upstream whose keep-alive timeout passed).
    async fn start(close_after_response: bool) -> Self {
        Self::start_with(if close_after_response { Close::Silently } else { Close::Never }, BODY_LEN).await
    }

    /// An upstream that closes connections as `close` says, with bodies of `body_len` bytes.
    async fn start_with(close: Close, body_len: usize) -> Self {
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
                            let read = socket.read(&mut buf);
                            let read = match close {
                                Close::WhenIdleFor(timeout) if head.is_empty() => {
                                    tokio::time::timeout(timeout, read).await.unwrap_or(Ok(0))
                                }
                                _ => read.await,
                            };
                            match read {
                                Ok(0) | Err(_) => break 'connection,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        head.clear();
                        let connection = if close == Close::Saying { "connection: close\r\n" } else { "" };
                        let response = format!("HTTP/1.1 200 OK\r\n{connection}content-length: {body_len}\r\n\r\n");
                        // Head and body in one write: the small ones arrive together.
                        let mut bytes = response.into_bytes();
                        bytes.resize(bytes.len() + body_len, b'x');
                        if socket.write_all(&bytes).await.is_err() {
                            break;
                        }
                        if matches!(close, Close::Silently | Close::Saying) {
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
        eventually("the upstream closes the connection", || upstream.open() == 0).await;
        // The runtime learns of the close at its next look at the sockets. (A close that crosses a
        // request in the same instant fails that request: the keep-alive race of every HTTP/1.1
        // client, which an upstream avoids by saying `Connection: close`; see the next test.)
        tokio::task::yield_now().await;
        // The pool may still hold it, as idle: the next request finds it closed and takes a new one.
    }
    assert_eq!(upstream.accepted(), 5);
}

#[tokio::test]
async fn requests_right_after_a_response_that_said_connection_close_go_out_on_new_connections() {
    let upstream = Upstream::start_with(Close::Saying, SMALL_BODY_LEN).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    for round in 1..=5 {
        assert_eq!(fetch(&pool, upstream.addr).await, SMALL_BODY_LEN, "round {round}");
    }
    assert_eq!(upstream.accepted(), 5);
    assert_eq!(pool.idle_count(), 0, "a connection the response closed is never pooled");
}

#[tokio::test]
async fn idle_connections_close_after_the_pools_idle_timeout() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_millis(300)));
    assert_eq!(fetch(&pool, upstream.addr).await, BODY_LEN);
    let started = tokio::time::Instant::now();
    eventually("the idle connection closes", || upstream.open() == 0).await;
    // Idle time is counted in sweeper periods (100 ms here): closed no earlier than two before.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "closed after {waited:?}: too early");
    assert!(waited < Duration::from_secs(1), "closed after {waited:?}: long past the timeout");
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn a_connection_is_never_reused_past_its_idle_timeout() {
    let upstream = Upstream::start_with(Close::Never, SMALL_BODY_LEN).await;
    // A sweeper period of 15 s: the test moves the pool's count of periods itself.
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    assert_eq!(fetch(&pool, upstream.addr).await, SMALL_BODY_LEN);
    pool.sweeps.fetch_add(pool.limit - 1, Ordering::Relaxed);
    assert_eq!(fetch(&pool, upstream.addr).await, SMALL_BODY_LEN);
    assert_eq!(upstream.accepted(), 1, "idle for less than the timeout: reused");
    pool.sweeps.fetch_add(pool.limit, Ordering::Relaxed);
    assert_eq!(fetch(&pool, upstream.addr).await, SMALL_BODY_LEN);
    assert_eq!(upstream.accepted(), 2, "perhaps idle for the whole timeout: not reused");
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

#[tokio::test]
async fn a_small_response_frees_its_connection_as_soon_as_it_is_in_before_its_body_is_read() {
    let upstream = Upstream::start_with(Close::Never, SMALL_BODY_LEN).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    let first = pool.send(upstream.addr, None, get(upstream.addr)).await.expect("first response");
    assert_eq!(pool.idle_count(), 1, "the whole response is in: the connection is free");
    assert_eq!(fetch(&pool, upstream.addr).await, SMALL_BODY_LEN);
    assert_eq!(upstream.accepted(), 1, "the second request reused it");
    assert_eq!(first.into_body().collect().await.expect("body").to_bytes().len(), SMALL_BODY_LEN);
}

#[tokio::test]
async fn an_empty_response_leaves_its_connection_reusable() {
    let upstream = Upstream::start_with(Close::Never, 0).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    for _ in 0..3 {
        let response = pool.send(upstream.addr, None, get(upstream.addr)).await.expect("response");
        assert_eq!(response.status(), 200);
        // The empty body is never read: the connection must come back without it.
        drop(response);
        eventually("the connection is idle again", || pool.idle_count() == 1).await;
    }
    assert_eq!(upstream.accepted(), 1, "one connection carried all three");
}

#[tokio::test]
async fn the_sweeper_drops_an_idle_connection_the_upstream_closed() {
    let upstream = Upstream::start_with(Close::WhenIdleFor(Duration::from_millis(50)), SMALL_BODY_LEN).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    assert_eq!(fetch(&pool, upstream.addr).await, SMALL_BODY_LEN);
    assert_eq!(pool.idle_count(), 1, "pooled while the upstream keeps it open");
    eventually("the upstream closes its side", || upstream.open() == 0).await;
    // Well within the idle timeout: only the close can make the sweep drop it.
    eventually("the sweep finds the close", || {
        pool.sweep();
        pool.idle_count() == 0
    })
    .await;
}

#[tokio::test]
async fn a_request_on_a_pooled_connection_the_upstream_closed_for_idleness_goes_out_on_a_new_one() {
    let upstream = Upstream::start_with(Close::WhenIdleFor(Duration::from_millis(50)), SMALL_BODY_LEN).await;
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    for round in 1..=3 {
        let fetched = tokio::time::timeout(Duration::from_secs(5), fetch(&pool, upstream.addr)).await;
        assert_eq!(fetched.expect("the request neither hangs nor fails"), SMALL_BODY_LEN, "round {round}");
        assert_eq!(pool.idle_count(), 1, "round {round}: pooled as soon as the response was in");
        eventually("the upstream closes the idle connection", || upstream.open() == 0).await;
        // The runtime learns of the close at its next look at the sockets.
        tokio::task::yield_now().await;
        // The pool still holds it; the next request finds it closed and is handed back unsent.
    }
    let last = tokio::time::timeout(Duration::from_secs(5), fetch(&pool, upstream.addr)).await;
    assert_eq!(last.expect("the request neither hangs nor fails"), SMALL_BODY_LEN);
    assert_eq!(upstream.accepted(), 4);
}

#[tokio::test]
async fn an_upload_goes_on_while_nobody_reads_the_response_the_upstream_already_sent() {
    const UPLOAD_LEN: usize = 32 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let received = Arc::new(AtomicUsize::new(0));
    let counted = received.clone();
    // Answers at once, then streams its answer while it reads the upload, each half on its own.
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let (mut reader, mut writer) = socket.into_split();
        let mut buf = vec![0u8; 64 << 10];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = reader.read(&mut buf).await.expect("request head");
            head.extend_from_slice(&buf[..n]);
        }
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").expect("head end") + 4;
        counted.fetch_add(head.len() - end, Ordering::SeqCst);
        tokio::spawn(async move {
            let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY_LEN}\r\n\r\n");
            let _ = writer.write_all(response.as_bytes()).await;
            let _ = writer.write_all(&vec![b'x'; BODY_LEN]).await;
        });
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            counted.fetch_add(n, Ordering::SeqCst);
        }
    });
    let pool = Arc::new(H1Pool::new(Duration::from_secs(5), Duration::from_secs(60)));
    let upload = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", addr.to_string())
        .body(full(vec![b'u'; UPLOAD_LEN]))
        .expect("request");
    let response = pool.send(addr, None, upload).await.expect("response head");
    // The client sends its whole body before it reads the answer.
    eventually("the whole upload reaches the upstream", || received.load(Ordering::SeqCst) >= UPLOAD_LEN).await;
    assert_eq!(response.into_body().collect().await.expect("body").to_bytes().len(), BODY_LEN);
}
