//! [`Batched`] over in-memory pipes that count the writes reaching them, and under a real `h2`
//! server on a socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, duplex};
use tokio::net::{TcpListener, TcpStream};

use super::{BATCH_KEEP, BATCH_LIMIT, Batched};

/// A stream that counts the writes that reached it.
struct Counted<T> {
    io: T,
    writes: Arc<AtomicUsize>,
}

impl<T> Counted<T> {
    fn new(io: T) -> (Self, Arc<AtomicUsize>) {
        let writes = Arc::new(AtomicUsize::new(0));
        (Self { io, writes: writes.clone() }, writes)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, read: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, slices);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn counting_waker() -> (Waker, Arc<Wakes>) {
    let wakes = Arc::new(Wakes::default());
    (Waker::from(wakes.clone()), wakes)
}

#[tokio::test]
async fn writes_and_flushes_of_one_turn_reach_the_socket_as_one_write_on_the_next_read() {
    let (near, mut far) = duplex(64 * 1024);
    let (counted, writes) = Counted::new(near);
    let mut batched = Batched::new(counted);
    batched.write_all(b"HEADERS ").await.expect("write");
    batched.flush().await.expect("flush");
    batched.write_all(b"DATA ").await.expect("write");
    batched.flush().await.expect("flush");
    batched.write_all(b"DATA").await.expect("write");
    assert_eq!(writes.load(Ordering::Relaxed), 0, "nothing is sent before the next read");

    far.write_all(b"ping").await.expect("peer write");
    let mut read = [0u8; 4];
    batched.read_exact(&mut read).await.expect("read");
    assert_eq!(&read, b"ping");
    assert_eq!(writes.load(Ordering::Relaxed), 1, "everything held went out in one write");
    let mut sent = [0u8; 17];
    far.read_exact(&mut sent).await.expect("peer read");
    assert_eq!(&sent, b"HEADERS DATA DATA");
}

#[test]
fn the_first_bytes_of_a_batch_schedule_the_task_once() {
    let (near, _far) = duplex(1024);
    let mut batched = Batched::new(near);
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    for chunk in [&b"one"[..], b"two", b"three"] {
        let written = Pin::new(&mut batched).poll_write(&mut cx, chunk);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == chunk.len()), "{written:?}");
    }
    assert!(Pin::new(&mut batched).poll_flush(&mut cx).is_ready(), "a flush is answered at once");
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
}

#[test]
fn a_write_that_would_pass_the_limit_waits_for_a_full_socket() {
    let (near, _far) = duplex(1024);
    let mut batched = Batched::new(near);
    let (waker, _wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let almost = vec![b'x'; BATCH_LIMIT - 1];
    assert!(matches!(Pin::new(&mut batched).poll_write(&mut cx, &almost), Poll::Ready(Ok(_))));
    let more = Pin::new(&mut batched).poll_write(&mut cx, b"yy");
    assert!(more.is_pending(), "{more:?}");
}

#[tokio::test]
async fn a_full_socket_does_not_stop_reading() {
    let (near, mut far) = duplex(1024);
    let mut batched = Batched::new(near);
    batched.write_all(&vec![b'x'; 4096]).await.expect("held");
    far.write_all(b"hello").await.expect("peer write");
    let mut read = [0u8; 5];
    let reading = tokio::time::timeout(Duration::from_secs(5), batched.read_exact(&mut read)).await;
    reading.expect("read in time while the socket is full").expect("read");
    assert_eq!(&read, b"hello");
}

#[tokio::test]
async fn what_a_full_socket_held_back_goes_out_when_it_drains_without_another_write() {
    let (near, mut far) = duplex(1024);
    let mut batched = Batched::new(near);
    let held = vec![b'x'; 4096];
    batched.write_all(&held).await.expect("held");
    // The connection's task waits for the peer (a read), as h2's does; only the socket can wake it.
    let reader = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        batched.read_exact(&mut byte).await.map(|_| byte[0])
    });
    let mut sent = vec![0u8; held.len()];
    let draining = tokio::time::timeout(Duration::from_secs(5), far.read_exact(&mut sent)).await;
    draining.expect("everything held arrived in time").expect("peer read");
    assert_eq!(sent, held);
    far.write_all(b"!").await.expect("peer write");
    assert_eq!(reader.await.expect("reader task").expect("read"), b'!');
}

#[test]
fn a_large_batchs_buffer_shrinks_back_once_sent() {
    let (near, _far) = duplex(256 * 1024);
    let mut batched = Batched::new(near);
    let (waker, _wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let large = vec![b'x'; BATCH_LIMIT - 1];
    assert!(matches!(Pin::new(&mut batched).poll_write(&mut cx, &large), Poll::Ready(Ok(_))));
    assert!(batched.buf.capacity() >= BATCH_LIMIT - 1);
    assert!(matches!(batched.poll_send(&mut cx), Poll::Ready(Ok(()))));
    assert!(batched.buf.capacity() <= BATCH_KEEP, "kept {} bytes", batched.buf.capacity());
}

#[tokio::test]
async fn a_shutdown_sends_what_is_held_first() {
    let (near, mut far) = duplex(64 * 1024);
    let mut batched = Batched::new(near);
    batched.write_all(b"last words").await.expect("write");
    batched.shutdown().await.expect("shutdown");
    let mut sent = Vec::new();
    far.read_to_end(&mut sent).await.expect("read to the end");
    assert_eq!(sent, b"last words");
}

#[tokio::test]
async fn large_writes_pass_in_order_after_what_is_held() {
    let (near, mut far) = duplex(256 * 1024);
    let mut batched = Batched::new(near);
    let large = vec![b'L'; BATCH_LIMIT * 2];
    batched.write_all(b"small").await.expect("write");
    batched.write_all(&large).await.expect("large write");
    batched.shutdown().await.expect("shutdown");
    let mut sent = Vec::new();
    far.read_to_end(&mut sent).await.expect("read to the end");
    assert_eq!(&sent[..5], b"small");
    assert_eq!(&sent[5..], &large[..]);
}

/// Ten 1 KiB responses sent in one turn: `h2` alone writes each DATA frame on its own.
#[tokio::test]
async fn an_http2_server_sends_responses_finished_together_in_one_or_two_writes() {
    const STREAMS: usize = 10;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (responders_tx, mut responders) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (counted, writes) = Counted::new(stream);
        let mut connection = h2::server::handshake(Batched::new(counted)).await.expect("server handshake");
        while let Some(Ok((_request, respond))) = connection.accept().await {
            responders_tx.send((respond, writes.clone())).expect("test alive");
        }
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("client handshake");
    tokio::spawn(connection);
    let mut responses = Vec::new();
    for _ in 0..STREAMS {
        let mut client = client.clone().ready().await.expect("ready");
        let request = Request::get(format!("http://{addr}/")).body(()).expect("request");
        let (response, _) = client.send_request(request, true).expect("send");
        responses.push(response);
    }
    let mut respond = Vec::new();
    let mut writes = None;
    for _ in 0..STREAMS {
        let (responder, counted) = responders.recv().await.expect("request reached the server");
        respond.push(responder);
        writes = Some(counted);
    }
    let writes = writes.expect("ten streams");
    let before = writes.load(Ordering::Relaxed);
    for mut responder in respond {
        let mut body = responder.send_response(Response::new(()), false).expect("headers");
        body.reserve_capacity(1024);
        body.send_data(Bytes::from(vec![b'x'; 1024]), true).expect("body");
    }
    for response in responses {
        let response = response.await.expect("response");
        let mut body = response.into_body();
        let mut received = 0;
        while let Some(chunk) = body.data().await {
            received += chunk.expect("chunk").len();
        }
        assert_eq!(received, 1024);
    }
    let during = writes.load(Ordering::Relaxed) - before;
    assert!((1..=2).contains(&during), "{during} writes for {STREAMS} responses");
}
