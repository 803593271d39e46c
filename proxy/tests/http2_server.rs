//! The proxy's HTTP/2 server (`h2` driven directly, one task per stream) seen by a real HTTP/2
//! client on a real socket: a reset stream cancels its request, the proxy's own answers say their
//! length, every response has a `Date` and no `TE`, a failed upstream body resets the stream as an
//! internal error, `CONNECT` is refused, and a drain answers the open streams after `GOAWAY`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Request, StatusCode};
use support::upstream::http_echo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const GATEWAY_PORT: u16 = 8080;
const PATIENCE: Duration = Duration::from_secs(5);

/// A gateway routing host `reviews` to the one cluster `app` at `upstream`.
fn gateway(upstream: SocketAddr) -> Proxy {
    let routes = vec![route("all", vec![], forward(vec![to("app", 1)]))];
    let config = gateway_config(
        GATEWAY_PORT,
        vec![vhost("reviews", GATEWAY_PORT, &["reviews"], routes)],
        vec![cluster("app", &[upstream])],
    );
    Proxy::start("gateway", &config, &[])
}

/// An HTTP/2 (prior knowledge) connection to `addr`; the returned receiver resolves when the
/// connection ends.
async fn connect_h2(addr: SocketAddr) -> (SendRequest<Bytes>, oneshot::Receiver<()>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = h2::client::handshake(stream).await.expect("handshake");
    let (ended, ended_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = ended.send(());
    });
    (sender, ended_rx)
}

fn request(method: &str, host: &str) -> Request<()> {
    Request::builder().method(method).uri(format!("http://{host}/x")).body(()).expect("request")
}

/// An upstream that takes one connection, reads a request head, never answers, and reports when the
/// connection is closed on it.
async fn silent_upstream() -> (SocketAddr, oneshot::Receiver<()>, oneshot::Receiver<()>) {
    let listener = TcpListener::bind(SocketAddr::new(unique_ip(), 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (got_request, got_request_rx) = oneshot::channel();
    let (closed, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = got_request.send(());
        while !matches!(socket.read(&mut buf).await, Ok(0) | Err(_)) {}
        let _ = closed.send(());
    });
    (addr, got_request_rx, closed_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_resets_before_its_answer_cancels_the_upstream_request() {
    let (upstream, got_request, closed) = silent_upstream().await;
    let proxy = gateway(upstream);
    let (sender, _ended) = connect_h2(proxy.addr(GATEWAY_PORT)).await;
    let mut sender = sender.ready().await.expect("ready");
    let (_response, mut stream) = sender.send_request(request("GET", "reviews"), true).expect("send");
    tokio::time::timeout(PATIENCE, got_request).await.expect("the upstream got the request").expect("upstream");
    stream.send_reset(h2::Reason::CANCEL);
    let cancelled = tokio::time::timeout(PATIENCE, closed).await;
    assert!(matches!(cancelled, Ok(Ok(()))), "the proxy gave up the upstream exchange of the reset stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_answers_over_http2_say_their_length() {
    let upstream = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let proxy = gateway(upstream);
    let (sender, _ended) = connect_h2(proxy.addr(GATEWAY_PORT)).await;
    let mut sender = sender.ready().await.expect("ready");
    let (response, _) = sender.send_request(request("GET", "nobody-here"), true).expect("send");
    let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("response");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let length: usize = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a content-length");
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(chunk) = body.data().await {
        received += chunk.expect("data").len();
    }
    assert_eq!(received, length);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_proxy_answers_the_open_streams_of_an_http2_client_then_closes_its_connection() {
    let upstream = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let mut proxy = gateway(upstream);
    let (sender, ended) = connect_h2(proxy.addr(GATEWAY_PORT)).await;
    let mut sender = sender.ready().await.expect("ready");
    // A request whose body is still coming when the drain starts.
    let (response, mut upload) = sender.send_request(request("POST", "reviews"), false).expect("send");
    upload.send_data(Bytes::from_static(b"first "), false).expect("data");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::process::Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    upload.send_data(Bytes::from_static(b"second"), true).expect("data after the drain began");
    let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut echoed = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        echoed.extend_from_slice(&chunk);
    }
    assert_eq!(&echoed[..], b"first second");
    // Well before the drain deadline (2 s after the signal), when the proxy would exit anyway.
    tokio::time::timeout(Duration::from_millis(1000), ended)
        .await
        .expect("the connection closed once its stream was answered")
        .expect("connection task");
    assert_eq!(proxy.terminate().map(|s| s.success()), Some(true));
}

/// An upstream that writes `answer` for every request it reads on a connection (`keep_alive`), or for
/// the first only, closing the connection after it.
async fn canned_upstream(answer: &'static [u8], keep_alive: bool) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(unique_ip(), 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                    if socket.write_all(answer).await.is_err() || !keep_alive {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that answers every request with a head announcing 100 bytes, sends 10 and closes.
async fn truncating_upstream() -> SocketAddr {
    canned_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_that_breaks_off_resets_the_clients_stream_as_an_internal_error() {
    let proxy = gateway(truncating_upstream().await);
    let (sender, _ended) = connect_h2(proxy.addr(GATEWAY_PORT)).await;
    let mut sender = sender.ready().await.expect("ready");
    let (response, _) = sender.send_request(request("GET", "reviews"), true).expect("send");
    // The head and the reset may come in one read: the client then sees only the reset.
    let response = match tokio::time::timeout(PATIENCE, response).await.expect("in time") {
        Ok(response) => response,
        Err(failure) => {
            assert_eq!(failure.reason(), Some(h2::Reason::INTERNAL_ERROR), "{failure}");
            return;
        }
    };
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let failure = loop {
        match tokio::time::timeout(PATIENCE, body.data()).await.expect("in time") {
            Some(Ok(_)) => continue,
            Some(Err(err)) => break err,
            None => panic!("the body ended as if it were whole"),
        }
    };
    assert_eq!(failure.reason(), Some(h2::Reason::INTERNAL_ERROR), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_on_an_http2_connection_of_a_gateway_is_refused_as_not_implemented() {
    let upstream = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let proxy = gateway(upstream);
    let (sender, _ended) = connect_h2(proxy.addr(GATEWAY_PORT)).await;
    let mut sender = sender.ready().await.expect("ready");
    let connect = Request::builder().method("CONNECT").uri("reviews:443").body(()).expect("request");
    let (response, _) = sender.send_request(connect, false).expect("send");
    let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("response");
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
}

/// An upstream with no clock that answers every request with `ok`, its head carrying `te: trailers`
/// (a request header, which HTTP/2 allows on requests only) and no `Date`.
async fn clockless_upstream() -> SocketAddr {
    canned_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nte: trailers\r\n\r\nok", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_http2_carry_a_date_and_no_te_whatever_the_upstream_sent() {
    let proxy = gateway(clockless_upstream().await);
    let (sender, _ended) = connect_h2(proxy.addr(GATEWAY_PORT)).await;
    for host in ["reviews", "nobody-here"] {
        let mut sender = sender.clone().ready().await.expect("ready");
        let (response, _) = sender.send_request(request("GET", host), true).expect("send");
        let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("response");
        let date = response.headers().get(http::header::DATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let made = httpdate::parse_http_date(date).unwrap_or_else(|_| panic!("{host}: {date:?} is no HTTP date"));
        let age = std::time::SystemTime::now().duration_since(made).unwrap_or_default();
        assert!(age < Duration::from_secs(5), "{host}: the date {date} is {age:?} old");
        assert!(response.headers().get(http::header::TE).is_none(), "{host}: {:?}", response.headers());
    }
}
