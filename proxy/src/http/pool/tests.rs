//! The HTTP/2 pool against an `h2` server on a real socket that counts its connections and can
//! send a graceful `GOAWAY` after its first response (as an upstream restarting).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::net::TcpListener;

use super::H2Pool;
use crate::http::{Body, full};

/// An upstream answering each request with its own body (an echo), over HTTP/2 with prior knowledge.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(goaway_after_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                    let mut answered = 0;
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        tokio::spawn(async move {
                            let mut body = request.into_body();
                            let mut echoed = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                echoed.extend_from_slice(&chunk);
                            }
                            if echoed == b"slow" {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let Ok(mut stream) = respond.send_response(Response::new(()), false) else { return };
                            let _ = stream.send_data(Bytes::from(echoed), true);
                        });
                        answered += 1;
                        if goaway_after_first && answered == 1 {
                            connection.graceful_shutdown();
                        }
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn post(text: &'static str) -> Request<Body> {
    Request::builder().uri("http://upstream/echo").method("POST").body(full(text)).expect("request")
}

async fn exchange(pool: &H2Pool, addr: SocketAddr, text: &'static str) -> String {
    let response = pool.send(addr, None, None, post(text)).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(body.to_vec()).expect("text")
}

#[tokio::test]
async fn concurrent_requests_to_an_endpoint_share_one_connection_and_each_gets_its_own_answer() {
    let upstream = Upstream::start(false).await;
    let pool = Arc::new(H2Pool::new(Duration::from_secs(5)));
    // The first request opens the connection; the others ride it at once.
    assert_eq!(exchange(&pool, upstream.addr, "first").await, "first");
    let texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "hhhhhhhh"];
    let answers = futures_util::future::join_all(texts.iter().map(|t| exchange(&pool, upstream.addr, t))).await;
    assert_eq!(answers, texts);
    assert_eq!(upstream.accepted(), 1);
    assert_eq!(pool.len(), 1);
}

#[tokio::test]
async fn after_the_upstream_went_away_the_next_request_opens_a_new_connection_instead_of_failing() {
    let upstream = Upstream::start(true).await;
    let pool = H2Pool::new(Duration::from_secs(5));
    assert_eq!(exchange(&pool, upstream.addr, "before").await, "before");
    // The GOAWAY arrives; the pooled connection is then no use for a new stream.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(exchange(&pool, upstream.addr, "after").await, "after");
    assert_eq!(upstream.accepted(), 2);
}

#[tokio::test]
async fn a_connection_going_away_with_a_stream_in_flight_finishes_it_and_new_requests_open_another() {
    let upstream = Upstream::start(true).await;
    let pool = Arc::new(H2Pool::new(Duration::from_secs(5)));
    let slow = tokio::spawn({
        let pool = pool.clone();
        async move { exchange(&pool, upstream.addr, "slow").await }
    });
    // The GOAWAY arrives while the slow stream is still open: the connection stays up for it, but
    // takes no new stream.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(exchange(&pool, upstream.addr, "meanwhile").await, "meanwhile");
    assert_eq!(slow.await.expect("task"), "slow");
    assert_eq!(upstream.accepted(), 2);
}

#[tokio::test]
async fn idle_connections_leave_the_pool_when_swept_after_the_idle_timeout() {
    let upstream = Upstream::start(false).await;
    let pool = H2Pool::new(Duration::from_secs(5));
    assert_eq!(exchange(&pool, upstream.addr, "once").await, "once");
    pool.sweep(Duration::from_secs(60));
    assert_eq!(pool.len(), 1, "used just now");
    tokio::time::sleep(Duration::from_millis(60)).await;
    pool.sweep(Duration::from_millis(50));
    assert!(pool.is_empty(), "unused for longer than the idle timeout");
}

#[tokio::test]
async fn a_connection_reused_since_the_last_sweep_counts_as_used_at_that_sweep() {
    let upstream = Upstream::start(false).await;
    let pool = H2Pool::new(Duration::from_secs(5));
    let idle = Duration::from_millis(50);
    assert_eq!(exchange(&pool, upstream.addr, "opened").await, "opened");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(exchange(&pool, upstream.addr, "reused").await, "reused");
    pool.sweep(idle);
    assert_eq!(pool.len(), 1, "reused since the last sweep: kept, and timed from this sweep");
    pool.sweep(idle);
    assert_eq!(pool.len(), 1, "not yet idle for the timeout since that sweep");
    tokio::time::sleep(Duration::from_millis(60)).await;
    pool.sweep(idle);
    assert!(pool.is_empty(), "unused since a sweep longer ago than the idle timeout");
    assert_eq!(upstream.accepted(), 1, "one connection carried both requests");
}

#[tokio::test]
async fn a_response_abandoned_while_its_request_body_still_streams_resets_the_upstream_stream() {
    // An upstream that answers at once and then reads the request body until it ends or is reset.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (told, outcome) = tokio::sync::oneshot::channel::<Result<(), h2::Error>>();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let mut connection = h2::server::handshake(socket).await.expect("handshake");
        let (request, mut respond) = connection.accept().await.expect("a request").expect("no error");
        tokio::spawn(async move { while connection.accept().await.is_some() {} });
        let _stream = respond.send_response(Response::new(()), false).expect("response head");
        let mut body = request.into_body();
        let ended = loop {
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Some(Err(err)) => break Err(err),
                None => break Ok(()),
            }
        };
        let _ = told.send(ended);
    });
    // A request body that never ends.
    let (sender, frames) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, crate::http::BodyError>>(1);
    sender.send(Ok(http_body::Frame::data(Bytes::from_static(b"first")))).await.expect("queued");
    let body = crate::http::boxed(http_body_util::StreamBody::new(tokio_stream_from(frames)));
    let request = Request::builder().uri("http://upstream/upload").method("POST").body(body).expect("request");
    let pool = H2Pool::new(Duration::from_secs(5));
    let response = pool.send(addr, None, None, request).await.expect("response head");
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(5), outcome).await.expect("the upstream hears").expect("told");
    let err = ended.expect_err("the request body was reset, not ended");
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL));
    drop(sender);
}

/// An mpsc receiver as a stream of frames.
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + Sync {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// A socket that counts the bytes read from it.
struct Counted {
    socket: tokio::net::TcpStream,
    read: Arc<AtomicUsize>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.socket).poll_read(cx, buf);
        self.read.fetch_add(buf.filled().len() - before, Ordering::SeqCst);
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// An HTTP/2 upstream answering every request with an empty 200, counting the bytes it reads.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else { return };
        let Ok(mut connection) = h2::server::handshake(Counted { socket, read: counter }).await else { return };
        while let Some(Ok((_, mut respond))) = connection.accept().await {
            let _ = respond.send_response(Response::new(()), true);
        }
    });
    (addr, read)
}

/// The bytes the upstream reads for one GET (with a new request id when `with_id`).
async fn request_size(pool: &H2Pool, addr: SocketAddr, read: &AtomicUsize, with_id: bool) -> usize {
    let mut req = Request::builder().uri("http://upstream/size").body(full("")).expect("request");
    if with_id {
        crate::http::ensure_request_id(req.headers_mut());
    }
    let before = read.load(Ordering::SeqCst);
    let response = pool.send(addr, None, None, req).await.expect("response");
    assert_eq!(response.status(), 200);
    read.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn after_the_first_request_on_a_connection_request_ids_go_out_as_a_reference_to_the_name_and_a_literal_value() {
    let (addr, read) = counting_upstream().await;
    let pool = H2Pool::new(Duration::from_secs(5));
    // The connection's first request lets both sides' tables keep one id, and with it the name.
    for _ in 0..3 {
        request_size(&pool, addr, &read, true).await;
    }
    for _ in 0..5 {
        let with_id = request_size(&pool, addr, &read, true).await;
        let without = request_size(&pool, addr, &read, false).await;
        // A reference to the name (2 bytes), the value's length (1) and its 36 characters
        // Huffman-coded (26 to 28 bytes). With the name as a literal too, it would be 10 more.
        let id_cost = with_id - without;
        assert!((28..=31).contains(&id_cost), "an id cost {id_cost} bytes");
    }
}
