//! Mutual TLS between two real proxies with certificates of a test mesh CA: identities reach the
//! application in `x-forwarded-client-cert`, STRICT refuses plaintext, PERMISSIVE takes both, and a
//! peer from another CA or with the wrong identity is refused.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::pki::{Ca, Certs, certs, flags};
use support::upstream::{http_echo, tcp_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_api::proxy_config::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The server side: a `shipping` sidecar in front of an HTTP echo app, with `mode` for every port.
fn shipping(app: SocketAddr, mode: InboundMtls, certs: &Certs) -> Proxy {
    let mut config = sidecar_config("shipping", Vec::new(), Vec::new());
    config.inbound = vec![InboundListener {
        port: INBOUND_CATCH_ALL_PORT,
        protocol: Protocol::Detect,
        mtls: mode,
        authorization: Vec::new(),
        jwt: Vec::new(),
        rate_limits: Vec::new(),
    }];
    let app = app.to_string();
    Proxy::start("sidecar", &config, &flags(certs, &["--inbound-target", &app]))
}

/// The client side: a `booking` sidecar whose explicit proxy sends `shipping` to `server`'s inbound
/// listener, a meshed endpoint expected to be `identity`.
fn booking(server: &Proxy, identity: &str, certs: &Certs, explicit: SocketAddr) -> Proxy {
    let mut meshed = cluster_with("shipping", &[server.addr(15006)], true, Protocol::Http);
    meshed.endpoints[0].identity = identity.to_owned();
    meshed.tls = UpstreamTls::Auto;
    let config = sidecar_config(
        "booking",
        vec![vhost("shipping", 80, &["shipping"], vec![route("all", vec![], forward(vec![to("shipping", 1)]))])],
        vec![meshed],
    );
    let explicit = explicit.to_string();
    Proxy::start("sidecar", &config, &flags(certs, &["--explicit-proxy-addr", &explicit]))
}

async fn get_through(explicit: SocketAddr) -> (u16, String) {
    raw_http1(explicit, "GET http://shipping/orders HTTP/1.1\r\nHost: shipping\r\nConnection: close\r\n\r\n").await
}

/// Sends `request` on a new connection and returns the status and the whole response text.
async fn raw_http1(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_between_proxies_travel_over_mutual_tls_and_the_app_sees_the_caller_in_xfcc() {
    let ca = Ca::new("mesh");
    let (shipping_id, booking_id) = (ca.issue("default", "shipping", DAY), ca.issue("default", "booking", DAY));
    let (server_certs, client_certs) = (certs(&shipping_id), certs(&booking_id));
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server = shipping(app, InboundMtls::Strict, &server_certs);
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client = booking(&server, &shipping_id.spiffe_id, &client_certs, explicit);
    for _ in 0..5 {
        let (status, text) = get_through(explicit).await;
        assert_eq!(status, 200, "{text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("x-seen-version: http/1.1"), "the app sees HTTP/1.1: {text}");
        let xfcc = text
            .lines()
            .find_map(|line| line.strip_prefix("x-seen-x-forwarded-client-cert: "))
            .unwrap_or_else(|| panic!("no x-forwarded-client-cert reached the app: {text}"));
        assert!(xfcc.starts_with("By=spiffe://cluster.local/ns/default/sa/shipping;Hash="), "{xfcc}");
        assert!(xfcc.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/booking"), "{xfcc}");
    }
    let metrics = server.metrics();
    assert!(metrics.contains(r#"trellis_protocol_detections_total{protocol="mtls",timed_out="false"}"#), "{metrics}");
    assert!(!metrics.contains("trellis_inbound_mtls_refused_total{"), "nothing refused: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_while_permissive_serves_it() {
    let ca = Ca::new("mesh");
    let server_certs = certs(&ca.issue("default", "shipping", DAY));
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let strict = shipping(app, InboundMtls::Strict, &server_certs);
    let (status, text) =
        raw_http1(strict.addr(15006), "GET / HTTP/1.1\r\nHost: shipping\r\nConnection: close\r\n\r\n").await;
    assert_eq!((status, text.as_str()), (0, ""), "STRICT closes a plaintext connection without an answer");
    assert!(
        strict.metrics().contains(r#"trellis_inbound_mtls_refused_total{reason="plaintext"} 1"#),
        "{}",
        strict.metrics()
    );

    let permissive = shipping(app, InboundMtls::Permissive, &server_certs);
    let (status, text) =
        raw_http1(permissive.addr(15006), "GET / HTTP/1.1\r\nHost: shipping\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200, "PERMISSIVE serves plaintext: {text}");
    assert!(!text.contains("x-forwarded-client-cert"), "no identity for a plaintext caller: {text}");

    // The same PERMISSIVE port also takes mesh TLS.
    let client_certs = certs(&ca.issue("default", "booking", DAY));
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client = booking(&permissive, "", &client_certs, explicit);
    let (status, text) = get_through(explicit).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("URI=spiffe://cluster.local/ns/default/sa/booking"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_proxy_with_a_certificate_from_another_ca_is_refused() {
    let (mesh, other) = (Ca::new("mesh"), Ca::new("intruder"));
    let server_certs = certs(&mesh.issue("default", "shipping", DAY));
    // The intruder trusts the mesh's root, so only the server's check of its certificate can stop it.
    let mut intruder = other.issue("default", "booking", DAY);
    intruder.roots_pem = mesh.cert_pem.clone();
    let client_certs = certs(&intruder);
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server = shipping(app, InboundMtls::Strict, &server_certs);
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client = booking(&server, "", &client_certs, explicit);
    let (status, text) = get_through(explicit).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("x-trellis-error"), "the client proxy answers for the refused upstream: {text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = server.metrics();
        if metrics.contains(r#"trellis_inbound_mtls_refused_total{reason="handshake"}"#) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server never counted the refused handshake:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_presenting_another_identity_than_the_endpoint_expects_is_refused() {
    let ca = Ca::new("mesh");
    let server_certs = certs(&ca.issue("default", "impostor", DAY));
    let client_certs = certs(&ca.issue("default", "booking", DAY));
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server = shipping(app, InboundMtls::Strict, &server_certs);
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client = booking(&server, "spiffe://cluster.local/ns/default/sa/shipping", &client_certs, explicit);
    let (status, text) = get_through(explicit).await;
    assert_eq!(status, 503, "the client proxy refuses an endpoint that is not who the mesh says: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_between_proxies_is_carried_inside_mutual_tls() {
    let ca = Ca::new("mesh");
    let (server_certs, client_certs) =
        (certs(&ca.issue("default", "db", DAY)), certs(&ca.issue("default", "booking", DAY)));
    let app = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let mut server_config = sidecar_config("db", Vec::new(), Vec::new());
    server_config.inbound = vec![InboundListener {
        port: INBOUND_CATCH_ALL_PORT,
        protocol: Protocol::Detect,
        mtls: InboundMtls::Strict,
        authorization: Vec::new(),
        jwt: Vec::new(),
        rate_limits: Vec::new(),
    }];
    let app_text = app.to_string();
    let server = Proxy::start("sidecar", &server_config, &flags(&server_certs, &["--inbound-target", &app_text]));
    // The client proxy's outbound listener is the TCP service's address (no iptables: the
    // connection's destination is the listener itself).
    let client_ip = unique_ip();
    let listener = SocketAddr::new(client_ip, 15001);
    let mut db = cluster_with("db", &[server.addr(15006)], true, Protocol::Tcp);
    db.tls = UpstreamTls::Auto;
    let mut host = vhost("db", 15001, &["db"], Vec::new());
    host.addresses = vec![client_ip.to_string()];
    host.protocol = Protocol::Tcp;
    host.tcp = vec![to("db", 1)];
    let client_config = sidecar_config("booking", vec![host], vec![db]);
    let _client = Proxy::start_at(client_ip, "sidecar", &client_config, &flags(&client_certs, &[]));
    let mut stream = tokio::net::TcpStream::connect(listener).await.expect("connect");
    stream.write_all(b"over mtls").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await.expect("in time").expect("read");
    assert_eq!(reply, b"over mtlsbye");
    let metrics = server.metrics();
    assert!(metrics.contains(r#"trellis_protocol_detections_total{protocol="mtls",timed_out="false"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_between_proxies_is_tunnelled_inside_mutual_tls() {
    let ca = Ca::new("mesh");
    let (server_certs, client_certs) =
        (certs(&ca.issue("default", "shipping", DAY)), certs(&ca.issue("default", "booking", DAY)));
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server = shipping(app, InboundMtls::Strict, &server_certs);
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _client = booking(&server, "spiffe://cluster.local/ns/default/sa/shipping", &client_certs, explicit);
    let mut stream = tokio::net::TcpStream::connect(explicit).await.expect("connect");
    stream
        .write_all(b"GET http://shipping/chat HTTP/1.1\r\nHost: shipping\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "closed during the handshake: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"hello"[..], b"through mutual TLS"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
    let metrics = server.metrics();
    assert!(metrics.contains(r#"trellis_protocol_detections_total{protocol="mtls",timed_out="false"} 1"#), "{metrics}");
    assert!(!metrics.contains("trellis_inbound_mtls_refused_total{"), "{metrics}");
}
