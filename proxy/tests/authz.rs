//! AuthorizationPolicy enforced by a real server proxy on requests and connections that arrive over
//! mutual TLS from real client proxies: ALLOW by principal, DENY over ALLOW, `spec: {}` denying all,
//! and a denied TCP connection closed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::pki::{Ca, certs, flags};
use support::upstream::{http_echo, tcp_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_api::istio::authorization_policy::Rule;
use trellis_api::proxy_config::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn policy(name: &str, action: AuthorizationAction, rules_yaml: &str) -> AuthorizationRule {
    let rules: Vec<Rule> = serde_saphyr::from_str(rules_yaml).expect("rules YAML");
    AuthorizationRule { policy: format!("default/{name}"), action, rules }
}

fn strict_with(policies: Vec<AuthorizationRule>) -> ProxyConfig {
    let mut config = sidecar_config("shipping", Vec::new(), Vec::new());
    config.inbound = vec![InboundListener {
        port: INBOUND_CATCH_ALL_PORT,
        protocol: Protocol::Detect,
        mtls: InboundMtls::Strict,
        authorization: policies,
        jwt: Vec::new(),
        rate_limits: Vec::new(),
    }];
    config
}

/// A client sidecar for workload `sa` whose explicit proxy sends `shipping` to `server`.
fn client(ca: &Ca, sa: &str, server: &Proxy) -> (Proxy, SocketAddr, support::pki::Certs) {
    let certs = certs(&ca.issue("default", sa, DAY));
    let mut meshed = cluster_with("shipping", &[server.addr(15006)], true, Protocol::Http);
    meshed.tls = UpstreamTls::Auto;
    let config = sidecar_config(
        sa,
        vec![vhost("shipping", 80, &["shipping"], vec![route("all", vec![], forward(vec![to("shipping", 1)]))])],
        vec![meshed],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let explicit_text = explicit.to_string();
    let proxy = Proxy::start("sidecar", &config, &flags(&certs, &["--explicit-proxy-addr", &explicit_text]));
    (proxy, explicit, certs)
}

async fn request(explicit: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(explicit).await.expect("connect");
    let head = format!("{method} http://shipping{path} HTTP/1.1\r\nHost: shipping\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_policy_admits_the_named_principal_and_denies_others_with_rbac_403() {
    let ca = Ca::new("mesh");
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server_certs = certs(&ca.issue("default", "shipping", DAY));
    let allow_booking = policy(
        "allow-booking",
        AuthorizationAction::Allow,
        "- from: [{source: {principals: [cluster.local/ns/default/sa/booking]}}]",
    );
    let app_text = app.to_string();
    let server = Proxy::start(
        "sidecar",
        &strict_with(vec![allow_booking]),
        &flags(&server_certs, &["--inbound-target", &app_text]),
    );
    let (_booking, booking_explicit, _c1) = client(&ca, "booking", &server);
    let (_stranger, stranger_explicit, _c2) = client(&ca, "stranger", &server);
    let (status, text) = request(booking_explicit, "GET", "/orders").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = request(stranger_explicit, "GET", "/orders").await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(body(&text), "RBAC: access denied", "{text}");
    assert!(server.metrics().contains(r#"trellis_authorization_denied_total{protocol="http"} 1"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_deny_wins_over_an_allow_and_an_empty_allow_denies_everything() {
    let ca = Ca::new("mesh");
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let server_certs = certs(&ca.issue("default", "shipping", DAY));
    let allow_all = policy("allow-all", AuthorizationAction::Allow, "- {}");
    let deny_delete = policy("deny-delete", AuthorizationAction::Deny, "- to: [{operation: {methods: [DELETE]}}]");
    let app_text = app.to_string();
    let server = Proxy::start(
        "sidecar",
        &strict_with(vec![deny_delete, allow_all]),
        &flags(&server_certs, &["--inbound-target", &app_text]),
    );
    let (_booking, explicit, _c) = client(&ca, "booking", &server);
    assert_eq!(request(explicit, "GET", "/orders").await.0, 200);
    let (status, text) = request(explicit, "DELETE", "/orders/1").await;
    assert_eq!((status, body(&text)), (403, "RBAC: access denied"), "{text}");

    // `spec: {}` with ALLOW: an ALLOW policy that matches nothing.
    server.update(&strict_with(vec![policy("nothing", AuthorizationAction::Allow, "[]")]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = request(explicit, "GET", "/orders").await;
        if status == 403 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the empty ALLOW policy never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tcp_connection_is_closed_without_reaching_the_app() {
    let ca = Ca::new("mesh");
    let app = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let deny_stranger = policy(
        "deny-stranger",
        AuthorizationAction::Deny,
        "- from: [{source: {principals: [cluster.local/ns/default/sa/stranger]}}]",
    );
    let server_certs = certs(&ca.issue("default", "db", DAY));
    let app_text = app.to_string();
    let server = Proxy::start(
        "sidecar",
        &strict_with(vec![deny_stranger]),
        &flags(&server_certs, &["--inbound-target", &app_text]),
    );
    for (sa, allowed) in [("booking", true), ("stranger", false)] {
        let client_certs = certs(&ca.issue("default", sa, DAY));
        let ip = unique_ip();
        let mut db = cluster_with("db", &[server.addr(15006)], true, Protocol::Tcp);
        db.tls = UpstreamTls::Auto;
        let mut host = vhost("db", 15001, &["db"], Vec::new());
        host.addresses = vec![ip.to_string()];
        host.protocol = Protocol::Tcp;
        host.tcp = vec![to("db", 1)];
        let _client =
            Proxy::start_at(ip, "sidecar", &sidecar_config(sa, vec![host], vec![db]), &flags(&client_certs, &[]));
        let mut stream = tokio::net::TcpStream::connect(SocketAddr::new(ip, 15001)).await.expect("connect");
        stream.write_all(b"hello").await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
        let expected: &[u8] = if allowed { b"hellobye" } else { b"" };
        assert_eq!(reply, expected, "{sa}");
    }
    assert!(
        server.metrics().contains(r#"trellis_authorization_denied_total{protocol="tcp"} 1"#),
        "{}",
        server.metrics()
    );
}
