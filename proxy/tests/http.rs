//! The proxy serving HTTP for real: the `trellis-proxy` binary, real sockets, real clients.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::upstream::{Body, http_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_api::proxy_config::{HeaderOps, Protocol, Rewrite, RouteAction, RouteMatch, StringMatcher};

const GATEWAY_PORT: u16 = 8080;

fn client(h2: bool) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).http2_only(h2).build(connector)
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

fn get(addr: SocketAddr, host: &str, path: &str) -> Request<Body> {
    Request::get(format!("http://{addr}{path}")).header("host", host).body(empty()).expect("request")
}

async fn send(client: &Client<HttpConnector, Body>, req: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = client.request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// Sends `req` over a fresh HTTP/2 (prior knowledge) connection to `addr`, keeping the request's own
/// URI authority as `:authority` (as a real client naming the host does).
async fn send_h2(addr: SocketAddr, req: Request<Body>) -> http::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    sender.send_request(req).await.expect("response")
}

/// Sends raw HTTP/1.1 bytes on a new connection and returns the response head and body.
async fn raw_http1(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    stream.read_to_end(&mut text).await.expect("read");
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A gateway routing host `reviews` to clusters `a` and `b` (one echo server each).
async fn two_cluster_gateway(routes: Vec<trellis_api::proxy_config::Route>) -> (Proxy, SocketAddr, SocketAddr) {
    let a = http_echo(SocketAddr::new(unique_ip(), 0), "a").await;
    let b = http_echo(SocketAddr::new(unique_ip(), 0), "b").await;
    let config = gateway_config(
        GATEWAY_PORT,
        vec![vhost("reviews", GATEWAY_PORT, &["reviews", "reviews.shop"], routes)],
        vec![cluster("a", &[a]), cluster("b", &[b])],
    );
    (Proxy::start("gateway", &config, &[]), a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_request_reaches_its_upstream_with_a_request_id_and_without_hop_by_hop_headers() {
    let (proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("a", 1)]))]).await;
    let mut req = get(proxy.addr(GATEWAY_PORT), "reviews", "/x?y=1");
    req.headers_mut().insert("connection", "keep-alive, x-private".parse().expect("value"));
    req.headers_mut().insert("keep-alive", "timeout=5".parse().expect("value"));
    let (status, headers, _) = send(&client(false), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-upstream"), "a");
    assert_eq!(header(&headers, "x-seen-path"), "/x?y=1");
    assert_eq!(header(&headers, "x-seen-host"), "reviews");
    assert_eq!(header(&headers, "x-seen-x-request-id").len(), 36, "a request id was generated");
    assert_eq!(header(&headers, "x-seen-keep-alive"), "", "hop-by-hop headers are not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_clients_are_served() {
    let (proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("b", 1)]))]).await;
    let req = Request::get("http://reviews/h2").body(empty()).expect("request");
    let response = send_h2(proxy.addr(GATEWAY_PORT), req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "x-upstream"), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_select_rewrite_redirect_answer_directly_and_edit_headers() {
    let prefix = |p: &str| RouteMatch { uri: Some(StringMatcher::Prefix(p.into())), ..Default::default() };
    let mut rewritten = route(
        "rewrite",
        vec![prefix("/old/")],
        RouteAction::Forward {
            clusters: vec![to("a", 1)],
            rewrite: Some(Rewrite { uri: Some("/new/".into()), uri_regex: None, authority: Some("internal".into()) }),
        },
    );
    rewritten.request_headers =
        HeaderOps { set: BTreeMap::from([("x-added".into(), "yes".into())]), ..Default::default() };
    rewritten.response_headers = HeaderOps {
        add: BTreeMap::from([("x-route".into(), "rewrite".into())]),
        remove: vec!["x-seen-version".into()],
        ..Default::default()
    };
    let by_header = route(
        "by-header",
        vec![RouteMatch {
            headers: BTreeMap::from([("end-user".into(), StringMatcher::Exact("jason".into()))]),
            ..Default::default()
        }],
        forward(vec![to("b", 1)]),
    );
    let redirect = route(
        "redirect",
        vec![prefix("/moved")],
        RouteAction::Redirect { uri: Some("/here".into()), authority: None, scheme: None, port: None, status: 301 },
    );
    let direct =
        route("direct", vec![prefix("/health")], RouteAction::DirectResponse { status: 203, body: "fine".into() });
    let catch = route("api", vec![prefix("/api")], forward(vec![to("a", 1)]));
    let (proxy, _, _) = two_cluster_gateway(vec![rewritten, by_header, redirect, direct, catch]).await;
    let gw = proxy.addr(GATEWAY_PORT);
    let c = client(false);

    let (_, headers, _) = send(&c, get(gw, "reviews", "/old/page")).await;
    assert_eq!(header(&headers, "x-seen-path"), "/new/page");
    assert_eq!(header(&headers, "x-seen-host"), "internal");
    assert_eq!(header(&headers, "x-seen-x-added"), "yes");
    assert_eq!(header(&headers, "x-route"), "rewrite");
    assert_eq!(header(&headers, "x-seen-version"), "", "response header removed");

    let mut req = get(gw, "reviews.shop", "/anything");
    req.headers_mut().insert("end-user", "jason".parse().expect("value"));
    let (_, headers, _) = send(&c, req).await;
    assert_eq!(header(&headers, "x-upstream"), "b");

    let (status, headers, _) = send(&c, get(gw, "reviews", "/moved?q=1")).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&headers, "location"), "http://reviews/here?q=1");

    let (status, _, body) = send(&c, get(gw, "reviews", "/health")).await;
    assert_eq!((status.as_u16(), &body[..]), (203, &b"fine"[..]));

    let (status, headers, _) = send(&c, get(gw, "reviews", "/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, "x-trellis-error"), "no route matched");

    let (status, _, _) = send(&c, get(gw, "unknown-host", "/api")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a gateway answers 404 for hosts it does not serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_is_observed_within_two_points_over_2000_requests() {
    let (proxy, _, _) =
        two_cluster_gateway(vec![route("split", vec![], forward(vec![to("a", 90), to("b", 10)]))]).await;
    let c = client(false);
    let mut to_b = 0;
    for _ in 0..2000 {
        let (_, headers, _) = send(&c, get(proxy.addr(GATEWAY_PORT), "reviews", "/")).await;
        if header(&headers, "x-upstream") == "b" {
            to_b += 1;
        }
    }
    let share = f64::from(to_b) / 2000.0 * 100.0;
    assert!((8.0..=12.0).contains(&share), "v2 got {share:.1}% of requests, expected 10 +- 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_calls_keep_their_trailers_and_status() {
    let upstream = http_echo(SocketAddr::new(unique_ip(), 0), "grpc").await;
    let mut grpc_cluster = cluster("g", &[upstream]);
    grpc_cluster.protocol = Protocol::Grpc;
    let config = gateway_config(
        GATEWAY_PORT,
        vec![vhost("greeter", GATEWAY_PORT, &["greeter"], vec![route("all", vec![], forward(vec![to("g", 1)]))])],
        vec![grpc_cluster],
    );
    let proxy = Proxy::start("gateway", &config, &[]);
    for (want, messages) in [("0", 1usize), ("5", 1), ("0", 20)] {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let req = Request::post("http://greeter/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-want-grpc-status", want)
            .body(StreamBody::new(stream).boxed())
            .expect("request");
        let sender = tokio::spawn(async move {
            for i in 0..messages {
                // A gRPC message: compressed flag, 4-byte length, payload.
                let payload = format!("message-{i}");
                let mut frame = vec![0u8];
                frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                frame.extend_from_slice(payload.as_bytes());
                if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                    break;
                }
            }
        });
        let response = send_h2(proxy.addr(GATEWAY_PORT), req).await;
        assert_eq!(response.status(), StatusCode::OK);
        let collected = response.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        let body = collected.to_bytes();
        sender.await.expect("sender");
        assert_eq!(trailers.get("grpc-status").and_then(|v| v.to_str().ok()), Some(want));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches("message-").count(), messages, "every streamed message came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_tunnelled_both_ways() {
    let (proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("a", 1)]))]).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr(GATEWAY_PORT)).await.expect("connect");
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "connection closed during handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"hello"[..], b"world, twice"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_streams_through_both_ways_in_bounded_memory() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let (proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("a", 1)]))]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(2);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; CHUNK]);
        for _ in 0..TOTAL / CHUNK {
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let req = Request::post(format!("http://{}/upload", proxy.addr(GATEWAY_PORT)))
        .header("host", "reviews")
        .body(StreamBody::new(stream).boxed())
        .expect("request");
    let response = client(false).request(req).await.expect("response");
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            received += data.len();
        }
    }
    assert_eq!(received, TOTAL);
    let peak = peak_rss_kib(proxy.pid());
    assert!(peak > 0 && peak < 40 * 1024, "proxy peak RSS {peak} KiB while streaming 100 MB; must stay bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_under_load_fail_no_request_and_a_bad_file_keeps_the_last_good_config() {
    let (proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("a", 1)]))]).await;
    let gw = proxy.addr(GATEWAY_PORT);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let c = client(false);
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.request(get(gw, "reviews", "/")).await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let a = http_echo(SocketAddr::new(unique_ip(), 0), "a2").await;
    let b = http_echo(SocketAddr::new(unique_ip(), 0), "b2").await;
    for i in 0..10u32 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        let mut config = gateway_config(
            GATEWAY_PORT,
            vec![vhost(
                "reviews",
                GATEWAY_PORT,
                &["reviews"],
                vec![route("all", vec![], forward(vec![to(target, 1)]))],
            )],
            vec![cluster("a", &[a]), cluster("b", &[b])],
        );
        config.version = format!("v{i}");
        proxy.update(&config);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    std::fs::write(&proxy.config_path, "{ this is not a config").expect("write garbage");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.await.expect("worker");
        ok += o;
        failed += f;
    }
    assert!(ok > 100, "only {ok} requests completed");
    assert_eq!(failed, 0, "{failed} of {} requests failed during reloads", ok + failed);
    let (_, headers, _) = send(&client(false), get(gw, "reviews", "/")).await;
    assert_eq!(header(&headers, "x-upstream"), "a2", "the last good config (v9 -> a) still serves");
    let (_, dump) = http_get(proxy.addr(15000), "/config_dump").expect("config dump");
    assert!(dump.contains("\"version\":\"v9\""), "{dump}");
    assert!(
        dump.contains("\"lastError\":\"config ") && dump.contains("config.json"),
        "the refused file's error is shown: {dump}"
    );
    assert!(proxy.metrics().contains(r#"trellis_config_reloads_total{result="failure"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_dump_config_change_logging_and_drain_on_quitquitquit() {
    let (mut proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("a", 1)]))]).await;
    let admin = proxy.addr(15000);
    let (status, dump) = http_get(admin, "/config_dump").expect("dump");
    assert_eq!(status, 200);
    assert!(dump.contains("trellis.dev/proxyconfig/v1alpha1") && dump.contains("\"mode\":\"gateway\""), "{dump}");
    assert_eq!(http_request(admin, "POST", "/logging?level=debug").map(|r| r.0), Some(200));
    assert_eq!(http_request(admin, "POST", "/logging?level=not[a(filter").map(|r| r.0), Some(400));
    send(&client(false), get(proxy.addr(GATEWAY_PORT), "reviews", "/")).await;
    let metrics = proxy.metrics();
    assert!(
        metrics.contains(r#"trellis_requests_total{direction="Gateway",cluster="a",code_class="2xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("trellis_request_duration_seconds_bucket"), "{metrics}");
    assert_eq!(http_request(admin, "POST", "/quitquitquit").map(|r| r.0), Some(200));
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "the proxy exits by itself after /quitquitquit: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let (mut proxy, _, _) = two_cluster_gateway(vec![route("all", vec![], forward(vec![to("a", 1)]))]).await;
    let gw = proxy.addr(GATEWAY_PORT);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let req = Request::post(format!("http://{gw}/slow"))
        .header("host", "reviews")
        .body(StreamBody::new(stream).boxed())
        .expect("request");
    let in_flight = tokio::spawn(async move {
        let response = client(false).request(req).await.expect("response");
        response.into_body().collect().await.expect("body").to_bytes()
    });
    tx.send(Ok(Frame::data(Bytes::from_static(b"first ")))).await.expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::process::Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_get(proxy.addr(15021), "/healthz/ready").map(|r| r.0), Some(503), "not ready while draining");
    assert!(tokio::net::TcpStream::connect(gw).await.is_err(), "new connections are refused while draining");
    tx.send(Ok(Frame::data(Bytes::from_static(b"second")))).await.expect("send");
    drop(tx);
    let body = in_flight.await.expect("in-flight request");
    assert_eq!(&body[..], b"first second");
    assert_eq!(proxy.terminate().map(|s| s.success()), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_two_proxies_http1_requests_share_one_http2_connection_and_arrive_as_http1() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server_ip = unique_ip();
    let mut server_config = sidecar_config("shipping", Vec::new(), Vec::new());
    server_config.inbound = Vec::new();
    let server = Proxy::start_at(server_ip, "sidecar", &server_config, &["--inbound-target", &app.to_string()]);
    let meshed = cluster_with("shipping", &[server.addr(15006)], true, Protocol::Http);
    let client_config = sidecar_config(
        "booking",
        vec![vhost("shipping", 80, &["shipping"], vec![route("all", vec![], forward(vec![to("shipping", 1)]))])],
        vec![meshed],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    // Each worker thread keeps its own pool: one worker, so one connection.
    let _client_proxy = Proxy::start(
        "sidecar",
        &client_config,
        &["--explicit-proxy-addr", &explicit.to_string(), "--concurrency", "1"],
    );
    for _ in 0..20 {
        // A new downstream connection per request, as many HTTP/1.1 clients do.
        let (status, text) =
            raw_http1(explicit, "GET http://shipping/orders HTTP/1.1\r\nHost: shipping\r\nConnection: close\r\n\r\n")
                .await;
        assert_eq!(status, 200, "{text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("x-upstream: app"), "{text}");
        assert!(lower.contains("x-seen-version: http/1.1"), "the app sees HTTP/1.1: {text}");
        assert!(lower.contains("x-seen-host: shipping\r\n"), "the app sees the name the client used: {text}");
        assert!(!lower.contains("x-seen-trellis-orig-proto"), "the marker does not reach the app: {text}");
    }
    let metrics = server.metrics();
    assert!(
        metrics.contains("trellis_open_connections 1\n"),
        "one multiplexed connection between the proxies:\n{metrics}"
    );
    assert!(metrics.contains(r#"trellis_protocol_detections_total{protocol="http2""#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_would_loop_back_into_the_proxy_is_refused() {
    let proxy = Proxy::start("sidecar", &sidecar_config("lonely", Vec::new(), Vec::new()), &[]);
    // Connecting straight to the outbound listener (no iptables redirect) with a host the mesh does
    // not know would pass the request through to... the same listener.
    let (status, text) =
        raw_http1(proxy.addr(15001), "GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("own listener"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_straight_to_the_inbound_listener_is_dropped_instead_of_looping() {
    let proxy = Proxy::start("sidecar", &sidecar_config("lonely-inbound", Vec::new(), Vec::new()), &[]);
    let mut stream = tokio::net::TcpStream::connect(proxy.addr(15006)).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut text = Vec::new();
    // Closing with the request unread may surface as a reset rather than an end of stream: both mean
    // "closed without a response".
    match stream.read_to_end(&mut text).await {
        Ok(_) => assert!(text.is_empty(), "no response: {}", String::from_utf8_lossy(&text)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = proxy.metrics();
    assert!(metrics.contains("trellis_open_connections 0\n"), "nothing is left open or looping:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upstream_outside_the_mesh_sees_the_service_name_as_authority_and_no_trellis_marker() {
    let upstream = http_echo(SocketAddr::new(unique_ip(), 0), "grpc-ish").await;
    let cluster = cluster_with("api", &[upstream], false, Protocol::Http2);
    let config = sidecar_config(
        "caller",
        vec![vhost("api", 80, &["api"], vec![route("all", vec![], forward(vec![to("api", 1)]))])],
        vec![cluster],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _proxy = Proxy::start("sidecar", &config, &["--explicit-proxy-addr", &explicit.to_string()]);
    // A client trying to smuggle the proxies' own marker: it must not travel on.
    let (status, text) = raw_http1(
        explicit,
        "GET http://api/v1 HTTP/1.1\r\nHost: api\r\ntrellis-orig-proto: HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("x-seen-version: http/2.0"), "declared HTTP/2 goes out as HTTP/2: {text}");
    assert!(lower.contains("x-seen-host: api\r\n"), ":authority is the name the client used: {text}");
    assert!(!lower.contains("x-seen-trellis-orig-proto"), "no marker towards a server outside the mesh: {text}");
}
