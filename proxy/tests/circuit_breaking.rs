//! Circuit breaking for real: the `trellis-proxy` binary in front of slow upstreams that count their
//! connections, with DestinationRule connection-pool limits in the cluster.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use support::overload::Misbehaving;
use support::upstream::{Body, client};
use support::*;
use trellis_api::proxy_config::{Cluster, ConnectionPool, Protocol};

const GATEWAY_PORT: u16 = 8080;
/// How long the slow upstream takes: long enough for every concurrent request to arrive while the
/// first ones are still in service, even on a loaded machine.
const SLOW: Duration = Duration::from_secs(2);

/// A client that opens a connection per concurrent request and never reuses one across tests.
fn get(addr: SocketAddr, host: &str) -> Request<Body> {
    let body = Full::new(Bytes::new()).map_err(|never| match never {}).boxed();
    Request::get(format!("http://{addr}/work")).header("host", host).body(body).expect("request")
}

/// One answer: status and whether the proxy marked it overloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    status: u16,
    overloaded: bool,
}

async fn call(client: &Client<HttpConnector, Body>, addr: SocketAddr, host: &str) -> Answer {
    let response = client.request(get(addr, host)).await.expect("response");
    let overloaded = response.headers().get("x-trellis-overloaded").is_some_and(|v| v == "true");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("body");
    Answer { status, overloaded }
}

/// `n` requests at once; their answers in completion order.
async fn concurrent(addr: SocketAddr, host: &str, n: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let host = host.to_owned();
            tokio::spawn(async move { call(&client(), addr, &host).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

fn limited(mut cluster: Cluster, pool: ConnectionPool) -> Cluster {
    cluster.connection_pool = Some(pool);
    cluster
}

/// A gateway on one worker (each worker keeps its own connection pools, so connection counts are
/// per worker).
fn gateway(cluster: Cluster) -> Proxy {
    let name = cluster.name.clone();
    let config = gateway_config(
        GATEWAY_PORT,
        vec![vhost(&name, GATEWAY_PORT, &[&name], vec![route("all", vec![], forward(vec![to(&name, 1)]))])],
        vec![cluster],
    );
    Proxy::start("gateway", &config, &["--concurrency", "1"])
}

fn count(answers: &[Answer], status: u16, overloaded: bool) -> usize {
    answers.iter().filter(|a| a.status == status && a.overloaded == overloaded).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_connections_plus_pending_are_rejected_at_once_and_counted() {
    let upstream = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "slow", 200, SLOW).await;
    let pool = ConnectionPool { max_connections: Some(2), max_pending_requests: Some(3), ..ConnectionPool::default() };
    let proxy = gateway(limited(cluster("slow", &[upstream.addr]), pool));
    let started = Instant::now();
    let answers = concurrent(proxy.addr(GATEWAY_PORT), "slow", 10).await;
    assert_eq!(count(&answers, 200, false), 5, "2 in service and 3 waiting are served: {answers:?}");
    assert_eq!(count(&answers, 503, true), 5, "the other 5 are rejected by the proxy: {answers:?}");
    assert_eq!(upstream.peak_in_flight(), 2, "never more than maxConnections at the upstream");
    assert!(started.elapsed() >= SLOW * 2, "the waiting requests were served after the first ones");
    let metrics = proxy.metrics();
    assert_eq!(metric(&metrics, r#"trellis_upstream_overflow_total{direction="Gateway",cluster="slow"}"#), Some(5.0));
    assert!(metrics.contains(r#"response_flags="UO""#), "{metrics}");

    // Within the limits nothing is rejected.
    let answers = concurrent(proxy.addr(GATEWAY_PORT), "slow", 5).await;
    assert_eq!(count(&answers, 200, false), 5, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_requests_caps_concurrent_requests_on_one_multiplexed_connection() {
    let upstream = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "h2", 200, SLOW).await;
    let pool = ConnectionPool { max_connections: Some(1), max_requests: Some(3), ..ConnectionPool::default() };
    let proxy = gateway(limited(cluster_with("h2", &[upstream.addr], false, Protocol::Http2), pool));
    // The first request opens the connection the others then share.
    upstream.set_delay(Duration::ZERO);
    assert_eq!(call(&client(), proxy.addr(GATEWAY_PORT), "h2").await.status, 200);
    upstream.set_delay(SLOW);
    let answers = concurrent(proxy.addr(GATEWAY_PORT), "h2", 7).await;
    assert_eq!(count(&answers, 200, false), 3, "{answers:?}");
    assert_eq!(count(&answers, 503, true), 4, "{answers:?}");
    assert_eq!(upstream.accepted(), 1, "native HTTP/2 requests share one connection");
    assert_eq!(upstream.peak_in_flight(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_two_proxies_each_http1_request_counts_as_a_connection_though_they_share_one() {
    let app = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "app", 200, SLOW).await;
    let server_ip = unique_ip();
    let mut server_config = sidecar_config("inventory", Vec::new(), Vec::new());
    server_config.inbound = Vec::new();
    let server = Proxy::start_at(server_ip, "sidecar", &server_config, &["--inbound-target", &app.addr.to_string()]);
    let pool = ConnectionPool { max_connections: Some(1), max_pending_requests: Some(1), ..ConnectionPool::default() };
    let meshed = limited(cluster_with("inventory", &[server.addr(15006)], true, Protocol::Http), pool);
    let client_config = sidecar_config(
        "booking",
        vec![vhost("inventory", 80, &["inventory"], vec![route("all", vec![], forward(vec![to("inventory", 1)]))])],
        vec![meshed],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client_proxy = Proxy::start(
        "sidecar",
        &client_config,
        &["--explicit-proxy-addr", &explicit.to_string(), "--concurrency", "1"],
    );
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(raw_http1(
                explicit,
                "GET http://inventory/stock HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n",
            ))
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    assert_eq!(count(&answers, 200, false), 2, "one in service, one waiting: {answers:?}");
    assert_eq!(count(&answers, 503, true), 3, "{answers:?}");
    assert_eq!(app.peak_in_flight(), 1, "the app never saw two at once");
    let metrics = server.metrics();
    assert!(metrics.contains("trellis_open_connections 1\n"), "the requests shared one HTTP/2 connection:\n{metrics}");
}

/// Sends raw HTTP/1.1 bytes on a new connection and reads the answer to its end.
async fn raw_http1(addr: SocketAddr, request: &'static str) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    stream.read_to_end(&mut text).await.expect("read");
    let text = String::from_utf8_lossy(&text).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    Answer { status, overloaded: text.contains("x-trellis-overloaded: true") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_retires_connections_after_their_requests() {
    let once = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "once", 200, Duration::ZERO).await;
    let twice = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "twice", 200, Duration::ZERO).await;
    let reused = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "reused", 200, Duration::ZERO).await;
    let per = |n| ConnectionPool { max_requests_per_connection: Some(n), ..ConnectionPool::default() };
    let clusters = vec![
        limited(cluster("once", &[once.addr]), per(1)),
        limited(cluster_with("twice", &[twice.addr], false, Protocol::Http2), per(2)),
        cluster_with("reused", &[reused.addr], false, Protocol::Http2),
    ];
    let vhosts = ["once", "twice", "reused"]
        .iter()
        .map(|name| vhost(name, GATEWAY_PORT, &[name], vec![route("all", vec![], forward(vec![to(name, 1)]))]))
        .collect();
    // One worker: each worker keeps its own HTTP/2 pool.
    let proxy = Proxy::start("gateway", &gateway_config(GATEWAY_PORT, vhosts, clusters), &["--concurrency", "1"]);
    let client = client();
    for host in ["once", "twice", "reused"] {
        for _ in 0..6 {
            assert_eq!(call(&client, proxy.addr(GATEWAY_PORT), host).await.status, 200);
        }
    }
    assert_eq!(once.accepted(), 6, "HTTP/1.1 with maxRequestsPerConnection 1: a connection per request");
    assert_eq!(twice.accepted(), 3, "HTTP/2 with maxRequestsPerConnection 2: a connection per two requests");
    assert_eq!(reused.accepted(), 1, "without a limit one connection carries all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_idle_timeout_closes_its_pooled_connections() {
    let short_h1 = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "short-h1", 200, Duration::ZERO).await;
    let short_h2 = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "short-h2", 200, Duration::ZERO).await;
    let default = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "default", 200, Duration::ZERO).await;
    let idle = ConnectionPool { idle_timeout: Some(Duration::from_millis(500)), ..ConnectionPool::default() };
    let clusters = vec![
        limited(cluster("short-h1", &[short_h1.addr]), idle.clone()),
        limited(cluster_with("short-h2", &[short_h2.addr], false, Protocol::Http2), idle),
        cluster("default", &[default.addr]),
    ];
    let vhosts = ["short-h1", "short-h2", "default"]
        .iter()
        .map(|name| vhost(name, GATEWAY_PORT, &[name], vec![route("all", vec![], forward(vec![to(name, 1)]))]))
        .collect();
    let proxy = Proxy::start("gateway", &gateway_config(GATEWAY_PORT, vhosts, clusters), &[]);
    let client = client();
    for host in ["short-h1", "short-h2", "default"] {
        assert_eq!(call(&client, proxy.addr(GATEWAY_PORT), host).await.status, 200);
    }
    let started = Instant::now();
    while short_h1.open() + short_h2.open() > 0 {
        let open = (short_h1.open(), short_h2.open());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pooled connections (h1, h2) still open after 10 s: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(400), "closed after the idle timeout, not before");
    assert_eq!(default.open(), 1, "the proxy's default idle timeout (90 s) keeps the other one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_beyond_max_connections_are_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = support::upstream::tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let pool = ConnectionPool { max_connections: Some(2), ..ConnectionPool::default() };
    let config = sidecar_config(
        "app",
        vec![trellis_api::proxy_config::VirtualHost {
            name: "ledger".into(),
            port: echo.port(),
            protocol: Protocol::Tcp,
            domains: vec!["ledger".into()],
            addresses: vec![echo.ip().to_string()],
            routes: Vec::new(),
            tcp: vec![to("ledger", 1)],
        }],
        vec![limited(cluster_with("ledger", &[echo], false, Protocol::Tcp), pool)],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let proxy = Proxy::start("sidecar", &config, &["--explicit-proxy-addr", &explicit.to_string()]);
    let target = echo.to_string();
    // Echoes `word` through a tunnel; `None` when the tunnel closes instead.
    async fn echo_through(tunnel: &mut tokio::net::TcpStream, word: &[u8]) -> Option<Vec<u8>> {
        tunnel.write_all(word).await.ok()?;
        let mut got = vec![0u8; word.len()];
        match tokio::time::timeout(Duration::from_secs(5), tunnel.read_exact(&mut got)).await {
            Ok(Ok(_)) => Some(got),
            _ => None,
        }
    }
    let (_, _, mut first) = connect_tunnel(explicit, &target).await;
    let (_, _, mut second) = connect_tunnel(explicit, &target).await;
    assert_eq!(echo_through(&mut first, b"one").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(echo_through(&mut second, b"two").await.as_deref(), Some(&b"two"[..]));
    let (_, _, mut third) = connect_tunnel(explicit, &target).await;
    assert_eq!(echo_through(&mut third, b"three").await, None, "a third connection is closed");
    drop(first);
    // Once one closes, a new connection is let through.
    let started = Instant::now();
    loop {
        let (_, _, mut again) = connect_tunnel(explicit, &target).await;
        if echo_through(&mut again, b"four").await.is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no connection let through after one closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = proxy.metrics();
    assert!(
        metric(&metrics, r#"trellis_upstream_overflow_total{direction="Outbound",cluster="ledger"}"#)
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

/// The limits of the tutorial's rule (`examples/tutorial/04-inventory-circuit-breaker.yaml`).
fn tutorial_limits() -> ConnectionPool {
    ConnectionPool {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        max_requests_per_connection: Some(1),
        ..ConnectionPool::default()
    }
}

/// Requests each caller sends, one after another.
const LOOPED: usize = 50;

/// Two callers at once, each running `caller` (which sends [`LOOPED`] requests one after another);
/// every answer.
async fn two_looping_callers<F, Fut>(caller: F) -> Vec<Answer>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<Answer>> + Send + 'static,
{
    // Both start together: one must not be through its requests before the other began.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (start, calls) = (start.clone(), caller());
            tokio::spawn(async move {
                start.wait().await;
                calls.await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("caller task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_tutorials_rule_two_looping_callers_between_proxies_see_some_rejected() {
    let app = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "app", 200, Duration::ZERO).await;
    let server_ip = unique_ip();
    let mut server_config = sidecar_config("inventory", Vec::new(), Vec::new());
    server_config.inbound = Vec::new();
    let server = Proxy::start_at(server_ip, "sidecar", &server_config, &["--inbound-target", &app.addr.to_string()]);
    let meshed = limited(cluster_with("inventory", &[server.addr(15006)], true, Protocol::Http), tutorial_limits());
    let client_config = sidecar_config(
        "booking",
        vec![vhost("inventory", 80, &["inventory"], vec![route("all", vec![], forward(vec![to("inventory", 1)]))])],
        vec![meshed],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client_proxy = Proxy::start(
        "sidecar",
        &client_config,
        &["--explicit-proxy-addr", &explicit.to_string(), "--concurrency", "1"],
    );
    // Each caller keeps one connection to its sidecar and sends its next request as soon as it has
    // its answer.
    let answers = two_looping_callers(|| async move {
        let stream = tokio::net::TcpStream::connect(explicit).await.expect("connect to the caller's sidecar");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for _ in 0..LOOPED {
            // Absolute-form, as a client of an explicit proxy sends it.
            let body = Full::new(Bytes::new()).map_err(|never| match never {}).boxed();
            let request = Request::get("http://inventory/stock").header("host", "inventory").body(body);
            let response = sender.send_request(request.expect("request")).await.expect("response");
            let overloaded = response.headers().get("x-trellis-overloaded").is_some_and(|v| v == "true");
            let status = response.status().as_u16();
            response.into_body().collect().await.expect("body");
            answers.push(Answer { status, overloaded });
        }
        answers
    })
    .await;
    let (served, rejected) = (count(&answers, 200, false), count(&answers, 503, true));
    eprintln!("two callers between proxies under the tutorial's rule: {served} served, {rejected} rejected");
    assert_eq!(served + rejected, answers.len(), "only served or rejected by the caller's proxy: {answers:?}");
    assert!(served >= 1, "some requests are served: {answers:?}");
    assert!(rejected >= 1, "a request arriving while another's connection is made is rejected: {answers:?}");
    assert_eq!(app.peak_in_flight(), 1, "the app never saw two at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_tutorials_rule_two_looping_callers_of_a_gateway_see_some_rejected() {
    let upstream = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "inventory", 200, Duration::ZERO).await;
    let proxy = gateway(limited(cluster("inventory", &[upstream.addr]), tutorial_limits()));
    let addr = proxy.addr(GATEWAY_PORT);
    // Keep-alive callers: each sends its next request as soon as it has its answer.
    let answers = two_looping_callers(|| async move {
        let keep_alive = client();
        let mut answers = Vec::new();
        for _ in 0..LOOPED {
            answers.push(call(&keep_alive, addr, "inventory").await);
        }
        answers
    })
    .await;
    let (served, rejected) = (count(&answers, 200, false), count(&answers, 503, true));
    eprintln!("two callers of a gateway under the tutorial's rule: {served} served, {rejected} rejected");
    assert_eq!(served + rejected, answers.len(), "only served or rejected by the gateway: {answers:?}");
    assert!(served >= 1, "some requests are served: {answers:?}");
    assert!(rejected >= 1, "a request arriving while another's connection is made is rejected: {answers:?}");
    assert_eq!(upstream.accepted(), served, "each served request had a connection of its own");
    assert_eq!(upstream.peak_in_flight(), 1, "never more than maxConnections at the upstream");
    let metrics = proxy.metrics();
    let overflowed = metric(&metrics, r#"trellis_upstream_overflow_total{direction="Gateway",cluster="inventory"}"#);
    assert_eq!(overflowed, Some(rejected as f64), "{metrics}");
}
