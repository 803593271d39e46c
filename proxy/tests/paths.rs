//! Request and connection paths through the real proxy that other suites do not walk: HTTP/1.1
//! trailers, TCP to destinations outside the registry (ALLOW_ANY and REGISTRY_ONLY), an endpoint
//! removed under a slow request, load balancing seen from outside, server-speaks-first ports, and
//! gateway hosts and redirects with the port the client named.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use support::upstream::{Body, client, http_echo, server_first, tcp_echo, trailer_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_api::proxy_config::{HashKey, LoadBalancer, Protocol, ProxyConfig, RouteAction, UnknownDestinations};

const GATEWAY_PORT: u16 = 8080;

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// A GET to `addr` with `Host: host` and the extra `headers`: the status and response headers.
async fn get(
    client: &Client<HttpConnector, Body>,
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap) {
    let mut req = Request::get(format!("http://{addr}/")).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = client.request(req.body(empty()).expect("request")).await.expect("response");
    let (parts, body) = response.into_parts();
    body.collect().await.expect("body");
    (parts.status, parts.headers)
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A gateway on [`GATEWAY_PORT`] sending every request for `host` to `cluster`.
fn gateway_to(host: &str, cluster: trellis_api::proxy_config::Cluster) -> ProxyConfig {
    let name = cluster.name.clone();
    gateway_config(
        GATEWAY_PORT,
        vec![vhost(host, GATEWAY_PORT, &[host], vec![route("all", vec![], forward(vec![to(&name, 1)]))])],
        vec![cluster],
    )
}

/// Sends raw HTTP/1.1 and reads until the server closes.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_request_and_response_trailers_pass_through_the_proxy() {
    let upstream = trailer_echo(SocketAddr::new(unique_ip(), 0)).await;
    let proxy = Proxy::start("gateway", &gateway_to("files", cluster("files", &[upstream])), &[]);
    // hyper, like other servers, sends response trailers only to clients that said `TE: trailers`.
    let text = raw(
        proxy.addr(GATEWAY_PORT),
        "POST /upload HTTP/1.1\r\nHost: files\r\nConnection: close\r\nTE: trailers\r\n\
         Transfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n",
    )
    .await;
    let lower = text.to_ascii_lowercase();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(lower.contains("x-seen-trailers: x-checksum=abc123\r\n"), "the upstream got the request trailer: {text}");
    assert!(lower.contains("hello world"), "{text}");
    let after_last_chunk = lower.split_once("\r\n0\r\n").map(|(_, rest)| rest).unwrap_or_default();
    assert!(
        after_last_chunk.contains("x-upstream-trailer: sent\r\n"),
        "the client got the response trailer after the last chunk: {text}"
    );
}

/// A sidecar whose only way in is its explicit proxy, with unknown destinations handled as `mode`.
fn explicit_sidecar(mode: UnknownDestinations, extra: &[&str]) -> (Proxy, SocketAddr) {
    let mut config = sidecar_config("client", Vec::new(), Vec::new());
    config.outbound.unknown_destinations = mode;
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let mut args = vec!["--explicit-proxy-addr".to_owned(), explicit.to_string()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Proxy::start("sidecar", &config, &args), explicit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_an_unknown_destination_passes_through_under_allow_any() {
    let echo = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let (proxy, explicit) = explicit_sidecar(UnknownDestinations::Passthrough, &[]);
    let (status, head, mut tunnel) = connect_tunnel(explicit, &echo.to_string()).await;
    assert_eq!(status, 200, "{head}");
    // Not HTTP, not TLS: opaque bytes, proxied as TCP once detection gives up on them.
    tunnel.write_all(b"\x00\x01opaque").await.expect("write");
    tunnel.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(reply, b"\x00\x01opaquebye");
    let metrics = proxy.metrics();
    let series = r#"trellis_tcp_received_bytes_total{direction="Outbound",cluster="PassthroughCluster"}"#;
    assert_eq!(metric(&metrics, series), Some(8.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_an_unknown_destination_is_refused_under_registry_only() {
    let echo = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let (_proxy, explicit) = explicit_sidecar(UnknownDestinations::Refuse, &[]);
    let (status, head, _) = connect_tunnel(explicit, &echo.to_string()).await;
    assert_eq!(status, 502, "{head}");
    assert!(head.contains("x-trellis-error: destination not in the mesh registry"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_removed_under_a_slow_request_lets_that_request_finish() {
    let old = http_echo(SocketAddr::new(unique_ip(), 0), "old").await;
    let new = http_echo(SocketAddr::new(unique_ip(), 0), "new").await;
    let proxy = Proxy::start("gateway", &gateway_to("slow", cluster("slow", &[old])), &[]);
    let gw = proxy.addr(GATEWAY_PORT);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let req = Request::post(format!("http://{gw}/upload"))
        .header("host", "slow")
        .body(StreamBody::new(stream).boxed())
        .expect("request");
    let in_flight = tokio::spawn(async move {
        let response = client().request(req).await.expect("response");
        let upstream = header(response.headers(), "x-upstream").to_owned();
        (upstream, response.into_body().collect().await.expect("body").to_bytes())
    });
    tx.send(Ok(Frame::data(Bytes::from_static(b"first ")))).await.expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut moved = gateway_to("slow", cluster("slow", &[new]));
    moved.version = "2".into();
    proxy.update(&moved);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while header(&get(&c, gw, "slow", &[]).await.1, "x-upstream") != "new" {
        assert!(Instant::now() < deadline, "the config without the old endpoint never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(Ok(Frame::data(Bytes::from_static(b"second")))).await.expect("send");
    drop(tx);
    let (upstream, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the slow request finishes")
        .expect("task");
    assert_eq!(upstream, "old");
    assert_eq!(&body[..], b"first second", "the removed endpoint's request completed in full");
}

/// Three echo servers named one, two and three, in one cluster balanced by `lb`, behind a gateway.
async fn three_endpoints(lb: LoadBalancer) -> Proxy {
    let mut endpoints = Vec::new();
    for name in ["one", "two", "three"] {
        endpoints.push(http_echo(SocketAddr::new(unique_ip(), 0), name).await);
    }
    let mut pool = cluster("pool", &endpoints);
    pool.load_balancer = lb;
    Proxy::start("gateway", &gateway_to("pool", pool), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly_over_three_endpoints() {
    let proxy = three_endpoints(LoadBalancer::RoundRobin).await;
    let c = client();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..300 {
        let (status, headers) = get(&c, proxy.addr(GATEWAY_PORT), "pool", &[]).await;
        assert_eq!(status, StatusCode::OK);
        *seen.entry(header(&headers, "x-upstream").to_owned()).or_default() += 1;
    }
    let expected: BTreeMap<String, u32> = ["one", "three", "two"].iter().map(|n| ((*n).to_owned(), 100)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_hash_on_a_header_keeps_each_value_on_one_endpoint() {
    let proxy = three_endpoints(LoadBalancer::ConsistentHash(HashKey::Header("x-user".into()))).await;
    let c = client();
    let mut used = BTreeMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let mut answered = Vec::new();
        for _ in 0..4 {
            let (status, headers) = get(&c, proxy.addr(GATEWAY_PORT), "pool", &[("x-user", &user)]).await;
            assert_eq!(status, StatusCode::OK);
            answered.push(header(&headers, "x-upstream").to_owned());
        }
        answered.dedup();
        assert_eq!(answered.len(), 1, "{user} went to {answered:?}");
        *used.entry(answered.remove(0)).or_insert(0) += 1;
    }
    assert_eq!(used.len(), 3, "30 users land on every endpoint: {used:?}");
}

/// How long after its tunnel opened a client that sends nothing gets the server's greeting.
async fn greeting_delay(explicit: SocketAddr, target: &str, greeting: &[u8]) -> Duration {
    let (status, head, mut tunnel) = connect_tunnel(explicit, target).await;
    assert_eq!(status, 200, "{head}");
    let started = Instant::now();
    let mut got = vec![0u8; greeting.len()];
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut got))
        .await
        .expect("greeting in time")
        .expect("read");
    assert_eq!(got, greeting);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_ports_greet_without_waiting_for_detection() {
    const GREETING: &[u8] = b"5.7.44-mysql greeting\n";
    // A detection timeout long enough that waiting for it cannot be mistaken for not waiting.
    const DETECT: &str = "1s";
    let mysql = server_first(SocketAddr::new(unique_ip(), 3306), GREETING).await;
    let declared = server_first(SocketAddr::new(unique_ip(), 0), GREETING).await;
    let undeclared = server_first(SocketAddr::new(unique_ip(), 0), GREETING).await;
    let mut config = sidecar_config(
        "app",
        vec![trellis_api::proxy_config::VirtualHost {
            name: "ledger".into(),
            port: declared.port(),
            protocol: Protocol::Tcp,
            domains: vec!["ledger".into()],
            addresses: vec![declared.ip().to_string()],
            routes: Vec::new(),
            tcp: vec![to("ledger", 1)],
        }],
        vec![cluster_with("ledger", &[declared], false, Protocol::Tcp)],
    );
    config.outbound.unknown_destinations = UnknownDestinations::Passthrough;
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _proxy =
        Proxy::start("sidecar", &config, &["--explicit-proxy-addr", &explicit.to_string(), "--detect-timeout", DETECT]);
    let to_3306 = greeting_delay(explicit, &mysql.to_string(), GREETING).await;
    assert!(to_3306 < Duration::from_millis(500), "port 3306 waited {to_3306:?}");
    let to_tcp = greeting_delay(explicit, &declared.to_string(), GREETING).await;
    assert!(to_tcp < Duration::from_millis(500), "a port declared tcp waited {to_tcp:?}");
    let to_unknown = greeting_delay(explicit, &undeclared.to_string(), GREETING).await;
    assert!(
        to_unknown >= Duration::from_millis(900),
        "an undeclared port does wait for detection (the measure can tell): {to_unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_host_with_a_port_matches_its_host_and_a_redirect_keeps_that_port() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "reviews").await;
    let other = http_echo(SocketAddr::new(unique_ip(), 0), "shop").await;
    let redirect = route(
        "moved",
        vec![trellis_api::proxy_config::RouteMatch {
            uri: Some(trellis_api::proxy_config::StringMatcher::Prefix("/old".into())),
            ..Default::default()
        }],
        RouteAction::Redirect { uri: Some("/new".into()), authority: None, scheme: None, port: None, status: 302 },
    );
    let config = gateway_config(
        GATEWAY_PORT,
        vec![
            vhost(
                "reviews",
                GATEWAY_PORT,
                &["reviews.example.com"],
                vec![redirect, route("all", vec![], forward(vec![to("reviews", 1)]))],
            ),
            vhost(
                "shop",
                GATEWAY_PORT,
                &["*.shop.example.com"],
                vec![route("all", vec![], forward(vec![to("shop", 1)]))],
            ),
        ],
        vec![cluster("reviews", &[app]), cluster("shop", &[other])],
    );
    let proxy = Proxy::start("gateway", &config, &[]);
    let gw = proxy.addr(GATEWAY_PORT);
    let c = client();
    // Clients behind a port mapping (9443 -> 8080) name the port they connected to.
    for host in ["reviews.example.com:9443", "reviews.example.com", "reviews.example.com:8080"] {
        let (status, headers) = get(&c, gw, host, &[]).await;
        assert_eq!((status, header(&headers, "x-upstream")), (StatusCode::OK, "reviews"), "Host: {host}");
    }
    let (status, headers) = get(&c, gw, "cart.shop.example.com:9443", &[]).await;
    assert_eq!((status, header(&headers, "x-upstream")), (StatusCode::OK, "shop"));
    let (status, _) = get(&c, gw, "unknown.example.com:9443", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text = raw(gw, "GET /old?x=1 HTTP/1.1\r\nHost: reviews.example.com:9443\r\nConnection: close\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 302"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("location: http://reviews.example.com:9443/new?x=1\r\n"),
        "the redirect keeps the port the client used: {text}"
    );
}
