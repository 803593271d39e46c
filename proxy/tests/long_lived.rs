//! Long-lived streams through the real proxy, TCP connections and upgraded (WebSocket) ones: their
//! bytes show in the metrics while they live and however they end, and a draining proxy waits for
//! an open tunnel instead of cutting it. Keep-alive client connections stay open while they carry
//! requests and close after `--idle-timeout` without one.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::upstream::http_echo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GATEWAY_PORT: u16 = 8080;

/// Waits (bounded) until the series `series` of `proxy`'s metrics has `value`, and says what it
/// last saw otherwise.
async fn wait_for_metric(proxy: &Proxy, series: &str, value: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = proxy.metrics();
        if metric(&text, series) == Some(value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("trellis_tcp_")).collect();
            return Err(format!("{series} is {:?}, not {value}:\n{}", metric(&text, series), tcp.join("\n")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server for one connection: reads 5 bytes, answers 7, and resets the connection when told.
async fn resetting_server(addr: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    let (reset, told) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 5];
        stream.read_exact(&mut request).await.expect("read");
        stream.write_all(b"7 bytes").await.expect("write");
        let _ = told.await;
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("linger");
    });
    (bound, reset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bytes_show_while_a_connection_lives_and_stay_when_it_ends_in_a_reset() {
    let (app, reset) = resetting_server(SocketAddr::new(unique_ip(), 0)).await;
    let config = sidecar_config("db", Vec::new(), Vec::new());
    let proxy = Proxy::start("sidecar", &config, &["--inbound-target", &app.to_string()]);
    let mut client = TcpStream::connect(proxy.addr(15006)).await.expect("connect");
    client.write_all(b"\x00ping").await.expect("write");
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    let received = r#"trellis_tcp_received_bytes_total{direction="Inbound",cluster="inbound"}"#;
    let sent = r#"trellis_tcp_sent_bytes_total{direction="Inbound",cluster="inbound"}"#;
    wait_for_metric(&proxy, received, 5.0).await.expect("received bytes while open");
    wait_for_metric(&proxy, sent, 7.0).await.expect("sent bytes while open");

    reset.send(()).expect("server waits");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await.expect("closed in time");
    let closed = r#"trellis_tcp_connections_closed_total{direction="Inbound",cluster="inbound"}"#;
    wait_for_metric(&proxy, closed, 1.0).await.expect("the connection ended");
    wait_for_metric(&proxy, received, 5.0).await.expect("received bytes after the reset");
    wait_for_metric(&proxy, sent, 7.0).await.expect("sent bytes after the reset");
}

/// A gateway sending host `chat` to an echo server that accepts upgrades.
async fn chat_gateway() -> Proxy {
    chat_gateway_with(&[]).await
}

/// [`chat_gateway`] with more flags.
async fn chat_gateway_with(flags: &[&str]) -> Proxy {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "chat").await;
    let config = gateway_config(
        GATEWAY_PORT,
        vec![vhost("chat", GATEWAY_PORT, &["chat"], vec![route("all", vec![], forward(vec![to("chat", 1)]))])],
        vec![cluster("chat", &[app])],
    );
    Proxy::start("gateway", &config, flags)
}

/// Opens a WebSocket-style upgraded connection through `gateway`.
async fn upgraded(gateway: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

async fn echo_once(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    stream.write_all(message).await.map_err(|e| e.to_string())?;
    let mut echoed = vec![0u8; message.len()];
    match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echoed)).await {
        Ok(Ok(_)) if echoed == message => Ok(()),
        Ok(Ok(_)) => Err(format!("echoed {echoed:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no echo within 2 s".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bytes_show_in_the_clusters_tcp_metrics_while_the_tunnel_lives() {
    let proxy = chat_gateway().await;
    let mut stream = upgraded(proxy.addr(GATEWAY_PORT)).await;
    echo_once(&mut stream, b"hello").await.expect("echo");
    echo_once(&mut stream, b"world, twice").await.expect("echo");
    let received = r#"trellis_tcp_received_bytes_total{direction="Gateway",cluster="chat"}"#;
    let sent = r#"trellis_tcp_sent_bytes_total{direction="Gateway",cluster="chat"}"#;
    wait_for_metric(&proxy, received, 17.0).await.expect("bytes from the client");
    wait_for_metric(&proxy, sent, 17.0).await.expect("bytes to the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_proxy_keeps_an_open_websocket_until_it_closes() {
    let mut proxy = chat_gateway().await;
    let mut stream = upgraded(proxy.addr(GATEWAY_PORT)).await;
    echo_once(&mut stream, b"before").await.expect("echo before draining");
    let _ = std::process::Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_once(&mut stream, b"while draining").await.expect("the tunnel outlives the start of the drain");
    let closing = Instant::now();
    drop(stream);
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The drain deadline is 2 s: the proxy left as soon as its last tunnel closed.
    assert!(closing.elapsed() < Duration::from_millis(1500), "exited {:?} after the tunnel closed", closing.elapsed());
}

/// Sends a keep-alive GET on `stream` and reads the echo server's answer (its length is known).
async fn keep_alive_get(stream: &mut TcpStream) -> Result<(), String> {
    stream.write_all(b"GET /ping HTTP/1.1\r\nHost: chat\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                Ok(_) => return Err("closed before the response".to_owned()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), read_head)
        .await
        .map_err(|_| "no response within 2 s".to_owned())??;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(head);
    }
    if let Some(length) = head.lines().find_map(|line| line.strip_prefix("content-length:")) {
        let mut body = vec![0u8; length.trim().parse().map_err(|_| format!("bad length in {head}"))?];
        return stream.read_exact(&mut body).await.map(|_| ()).map_err(|e| e.to_string());
    }
    // Chunked (the echo streams the request's empty body back): read to the last chunk.
    let mut body = Vec::new();
    while !body.ends_with(b"0\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => body.push(byte[0]),
            _ => return Err("closed in the body".to_owned()),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_without_requests_for_the_idle_timeout_is_closed() {
    let proxy = chat_gateway_with(&["--idle-timeout", "200ms"]).await;
    let mut stream = TcpStream::connect(proxy.addr(GATEWAY_PORT)).await.expect("connect");
    keep_alive_get(&mut stream).await.expect("first request");
    let started = Instant::now();
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "the proxy closed the idle connection: {read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "closed after {waited:?}, before an idle period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_carrying_requests_outlives_many_idle_timeouts() {
    let proxy = chat_gateway_with(&["--idle-timeout", "400ms"]).await;
    let mut stream = TcpStream::connect(proxy.addr(GATEWAY_PORT)).await.expect("connect");
    for round in 0..20 {
        keep_alive_get(&mut stream).await.unwrap_or_else(|e| panic!("request {round} on the same connection: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_of_zero_keeps_idle_connections_open() {
    let proxy = chat_gateway_with(&["--idle-timeout", "0s"]).await;
    let mut stream = TcpStream::connect(proxy.addr(GATEWAY_PORT)).await.expect("connect");
    keep_alive_get(&mut stream).await.expect("first request");
    tokio::time::sleep(Duration::from_millis(500)).await;
    keep_alive_get(&mut stream).await.expect("a request on the same connection after a pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_is_not_an_idle_connection() {
    let proxy = chat_gateway_with(&["--idle-timeout", "200ms"]).await;
    let mut stream = upgraded(proxy.addr(GATEWAY_PORT)).await;
    echo_once(&mut stream, b"hello").await.expect("echo");
    tokio::time::sleep(Duration::from_millis(700)).await;
    echo_once(&mut stream, b"still here").await.expect("echo after three idle periods");
}
