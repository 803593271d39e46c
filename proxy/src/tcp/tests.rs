use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;
use crate::detect;

/// Long enough to never fire in a passing test; bounds every wait so a bug fails instead of hangs.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A server on 127.0.0.1 that runs `handler` on the first connection it accepts.
async fn serve_once<F, Fut>(handler: F) -> (SocketAddr, JoinHandle<Fut::Output>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        handler(stream).await
    });
    (addr, task)
}

/// A client connected through a proxy (listening on 127.0.0.1) that copies to `server`.
struct Proxied {
    client: TcpStream,
    copy: JoinHandle<io::Result<(u64, u64)>>,
    counters: Arc<ByteCounters>,
}

async fn proxy_to(server: SocketAddr, idle: Duration) -> Proxied {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let counters = Arc::new(ByteCounters::new());
    let observer = Arc::clone(&counters);
    let copy = tokio::spawn(async move {
        let (mut downstream, _) = listener.accept().await?;
        let mut upstream = TcpStream::connect(server).await?;
        copy_bidirectional_observed(&mut downstream, &mut upstream, idle, &*observer).await
    });
    let client = TcpStream::connect(addr).await.expect("connect");
    Proxied { client, copy, counters }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {TEST_TIMEOUT:?}"))
}

async fn echo(mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    tokio::io::copy(&mut read, &mut write).await.expect("copy");
    write.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bytes_echo_through_the_proxy_and_both_directions_end() {
    let (server, _server_task) = serve_once(echo).await;
    let Proxied { mut client, copy, .. } = proxy_to(server, DEFAULT_IDLE_TIMEOUT).await;
    client.write_all(b"ping").await.expect("write");
    let mut reply = [0u8; 4];
    within("the echo", client.read_exact(&mut reply)).await.expect("read");
    assert_eq!(&reply, b"ping");
    client.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    within("the end of the echo", client.read_to_end(&mut rest)).await.expect("read");
    assert!(rest.is_empty());
    let counts = within("the copy", copy).await.expect("copy task").expect("copy");
    assert_eq!(counts, (4, 4));
}

#[tokio::test]
async fn a_half_closed_client_still_receives_the_full_reply() {
    const REPLY_LEN: usize = 1024 * 1024;
    let (server, _server_task) = serve_once(|mut stream: TcpStream| async move {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.expect("read to end");
        assert_eq!(request, b"the whole request");
        stream.write_all(&vec![b'r'; REPLY_LEN]).await.expect("write");
        stream.shutdown().await.expect("shutdown");
    })
    .await;
    let Proxied { mut client, copy, .. } = proxy_to(server, DEFAULT_IDLE_TIMEOUT).await;
    client.write_all(b"the whole request").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut reply = Vec::new();
    within("the reply", client.read_to_end(&mut reply)).await.expect("read");
    assert_eq!(reply.len(), REPLY_LEN);
    assert!(reply.iter().all(|&b| b == b'r'));
    let counts = within("the copy", copy).await.expect("copy task").expect("copy");
    assert_eq!(counts, (17, REPLY_LEN as u64));
}

#[tokio::test]
async fn a_server_that_closes_first_still_receives_the_clients_bytes() {
    const UPLOAD_LEN: usize = 300 * 1024;
    let (server, server_task) = serve_once(|mut stream: TcpStream| async move {
        stream.write_all(b"bye\r\n").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut upload = Vec::new();
        stream.read_to_end(&mut upload).await.expect("read to end");
        upload.len()
    })
    .await;
    let Proxied { mut client, copy, .. } = proxy_to(server, DEFAULT_IDLE_TIMEOUT).await;
    let mut greeting = Vec::new();
    within("the server's close", client.read_to_end(&mut greeting)).await.expect("read");
    assert_eq!(greeting, b"bye\r\n");
    client.write_all(&vec![b'u'; UPLOAD_LEN]).await.expect("write");
    client.shutdown().await.expect("shutdown");
    assert_eq!(within("the upload", server_task).await.expect("server task"), UPLOAD_LEN);
    let counts = within("the copy", copy).await.expect("copy task").expect("copy");
    assert_eq!(counts, (UPLOAD_LEN as u64, 5));
}

#[tokio::test]
async fn a_server_speaks_first_greeting_reaches_a_silent_client() {
    const GREETING: &[u8] = b"220 mail.example.com ESMTP ready\r\n";
    let (server, _server_task) = serve_once(|mut stream: TcpStream| async move {
        stream.write_all(GREETING).await.expect("write");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read to end");
    })
    .await;
    let Proxied { mut client, .. } = proxy_to(server, DEFAULT_IDLE_TIMEOUT).await;
    let mut greeting = vec![0u8; GREETING.len()];
    within("the greeting", client.read_exact(&mut greeting)).await.expect("read");
    assert_eq!(greeting, GREETING);
}

/// A chunk of pseudo-random bytes; streams are this chunk repeated, so a lost, duplicated or
/// reordered range shows as a mismatch.
fn pattern(seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..64 * 1024).map(|_| rng.u8(..)).collect()
}

async fn send_pattern<W: AsyncWrite + Unpin>(mut writer: W, chunk: &[u8], total: usize) {
    for _ in 0..total / chunk.len() {
        writer.write_all(chunk).await.expect("write");
    }
    writer.shutdown().await.expect("shutdown");
}

/// Reads to end of stream, checking every byte against `chunk` repeated; returns the count.
async fn check_pattern<R: AsyncRead + Unpin>(mut reader: R, chunk: &[u8]) -> usize {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await.expect("read");
        if n == 0 {
            return total;
        }
        let mut checked = 0;
        while checked < n {
            let offset = (total + checked) % chunk.len();
            let len = (n - checked).min(chunk.len() - offset);
            assert_eq!(&buf[checked..checked + len], &chunk[offset..offset + len], "at byte {}", total + checked);
            checked += len;
        }
        total += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mebibytes_cross_each_way_with_exact_counts() {
    const TOTAL: usize = 64 * 1024 * 1024;
    let up = Arc::new(pattern(1));
    let down = Arc::new(pattern(2));
    let (server, server_task) = {
        let (up, down) = (Arc::clone(&up), Arc::clone(&down));
        serve_once(move |stream: TcpStream| async move {
            let (read, write) = stream.into_split();
            let sender = tokio::spawn(async move { send_pattern(write, &down, TOTAL).await });
            let received = check_pattern(read, &up).await;
            sender.await.expect("sender task");
            received
        })
        .await
    };
    let Proxied { client, copy, counters } = proxy_to(server, DEFAULT_IDLE_TIMEOUT).await;
    let (read, write) = client.into_split();
    let sender = {
        let up = Arc::clone(&up);
        tokio::spawn(async move { send_pattern(write, &up, TOTAL).await })
    };
    let received = within("the download", check_pattern(read, &down)).await;
    within("the upload", sender).await.expect("sender task");
    assert_eq!(received, TOTAL);
    assert_eq!(within("the server", server_task).await.expect("server task"), TOTAL);
    let counts = within("the copy", copy).await.expect("copy task").expect("copy");
    assert_eq!(counts, (TOTAL as u64, TOTAL as u64));
    assert_eq!((counters.a_to_b(), counters.b_to_a()), counts);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(200);
    let (server, server_task) = serve_once(|mut stream: TcpStream| async move {
        let mut rest = Vec::new();
        // The proxy closing the connection ends this read.
        let _ = stream.read_to_end(&mut rest).await;
        rest
    })
    .await;
    let started = std::time::Instant::now();
    let Proxied { mut client, copy, .. } = proxy_to(server, idle).await;
    let error =
        within("the idle timeout", copy).await.expect("copy task").expect_err("an idle copy ends with an error");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= idle, "{:?}", started.elapsed());
    let mut rest = Vec::new();
    let _ = within("the client's close", client.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert!(within("the server's close", server_task).await.expect("server task").is_empty());
}

#[tokio::test]
async fn traffic_keeps_a_connection_open_past_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let (server, _server_task) = serve_once(echo).await;
    let Proxied { mut client, copy, .. } = proxy_to(server, idle).await;
    for round in 0u8..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(&[round]).await.expect("write");
        let mut reply = [0u8; 1];
        within("an echo", client.read_exact(&mut reply)).await.expect("read");
        assert_eq!(reply, [round]);
    }
    client.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    within("the end", client.read_to_end(&mut rest)).await.expect("read to end");
    assert_eq!(within("the copy", copy).await.expect("copy task").expect("copy"), (10, 10));
}

#[tokio::test]
async fn byte_counters_move_while_the_copy_runs() {
    let (server, _server_task) = serve_once(echo).await;
    let Proxied { mut client, counters, .. } = proxy_to(server, DEFAULT_IDLE_TIMEOUT).await;
    client.write_all(&[7u8; 1000]).await.expect("write");
    let mut reply = [0u8; 1000];
    within("the echo", client.read_exact(&mut reply)).await.expect("read");
    within("the counters", async {
        while (counters.a_to_b(), counters.b_to_a()) != (1000, 1000) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn detected_bytes_reach_the_upstream_before_the_rest() {
    let (server, server_task) = serve_once(|mut stream: TcpStream| async move {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.expect("read to end");
        request
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let copy = tokio::spawn(async move {
        let (downstream, _) = listener.accept().await?;
        let (detection, mut downstream) = detect::detect(downstream, detect::DEFAULT_DETECT_TIMEOUT).await?;
        assert_eq!(detection.protocol, detect::Protocol::Opaque);
        let mut upstream = TcpStream::connect(server).await?;
        copy_bidirectional_idle(&mut downstream, &mut upstream, DEFAULT_IDLE_TIMEOUT).await
    });
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(b"\x00\x01opaque bytes").await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(b" and more").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let received = within("the upstream", server_task).await.expect("server task");
    assert_eq!(received, b"\x00\x01opaque bytes and more");
    within("the copy", copy).await.expect("copy task").expect("copy");
}

/// Runs one direction's pump from `source` into a byte sink and returns its final buffer size.
async fn pump_buffer_size_after(source: &[u8]) -> usize {
    let mut reader = source;
    let mut sink: Vec<u8> = Vec::new();
    let mut pump = Pump::new(Direction::AToB);
    let mut moved = false;
    poll_fn(|cx| pump.poll_copy(cx, &mut reader, &mut sink, &(), &mut moved)).await.expect("pump");
    assert_eq!(sink, source);
    assert_eq!(pump.amount, source.len() as u64);
    pump.buffer_size()
}

#[tokio::test]
async fn a_quiet_direction_keeps_its_small_buffer_and_a_busy_one_grows() {
    let quiet = vec![1u8; 10 * 1024];
    assert_eq!(pump_buffer_size_after(&quiet).await, INITIAL_COPY_BUFFER_SIZE);
    let busy = vec![2u8; 1024 * 1024];
    assert_eq!(pump_buffer_size_after(&busy).await, MAX_COPY_BUFFER_SIZE);
}
