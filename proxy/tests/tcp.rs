//! Opaque TCP and TLS through the proxy for real: half-close, server-speaks-first, SNI routing.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::upstream::{server_first, tcp_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_api::proxy_config::{InboundListener, InboundMtls, Protocol, ProxyConfig, VirtualHost};

/// A sidecar whose inbound listener stands in front of `app` (local mode, no iptables).
fn inbound_sidecar(app: SocketAddr, declared: Option<Protocol>) -> Proxy {
    let mut config = sidecar_config("db", Vec::new(), Vec::new());
    if let Some(protocol) = declared {
        config.inbound = vec![InboundListener {
            // Local mode: the application's port selects the inbound listener.
            port: app.port(),
            protocol,
            mtls: InboundMtls::Disable,
            authorization: Vec::new(),
            jwt: Vec::new(),
            rate_limits: Vec::new(),
        }];
    }
    Proxy::start("sidecar", &config, &["--inbound-target", &app.to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_works_and_a_half_closed_client_still_receives_the_reply() {
    let app = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let proxy = inbound_sidecar(app, None);
    let mut stream = TcpStream::connect(proxy.addr(15006)).await.expect("connect");
    stream.write_all(b"ping ").await.expect("write");
    stream.write_all(b"pong").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(reply, b"ping pongbye", "the echo, then the server's own last words after our half-close");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains(r#"trellis_tcp_received_bytes_total{direction="Inbound",cluster="inbound"} 9"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"trellis_tcp_sent_bytes_total{direction="Inbound",cluster="inbound"} 12"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_speaks_first_port_is_answered_without_waiting_for_detection() {
    let app = server_first(SocketAddr::new(unique_ip(), 0), b"220 mail.example ESMTP\r\n").await;
    let proxy = inbound_sidecar(app, Some(Protocol::Tcp));
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr(15006)).await.expect("connect");
    let mut greeting = [0u8; 24];
    stream.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"220 mail.example ESMTP\r\n");
    assert!(
        started.elapsed() < Duration::from_millis(80),
        "greeting took {:?}; detection must not delay it",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_silent_client_falls_back_to_tcp_after_the_detection_timeout() {
    let app = server_first(SocketAddr::new(unique_ip(), 0), b"* OK IMAP ready\r\n").await;
    let proxy = inbound_sidecar(app, None);
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr(15006)).await.expect("connect");
    let mut greeting = [0u8; 17];
    stream.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"* OK IMAP ready\r\n");
    assert!(started.elapsed() < Duration::from_secs(1), "fell back in {:?}", started.elapsed());
    assert!(proxy.metrics().contains(r#"trellis_protocol_detections_total{protocol="tcp",timed_out="true"} 1"#));
}

/// Records the first bytes each connection sends, for SNI checks.
async fn recorder(addr: SocketAddr) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 2048];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(buf[..n].to_vec()).await;
        }
    });
    (bound, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_passed_through_to_the_cluster_their_sni_names() {
    require("curl", "curl");
    let (one, mut one_rx) = recorder(SocketAddr::new(unique_ip(), 0)).await;
    let (two, mut two_rx) = recorder(SocketAddr::new(unique_ip(), 0)).await;
    let tls_host = |name: &str, cluster: &str| VirtualHost {
        name: name.into(),
        port: 443,
        protocol: Protocol::Tls,
        domains: vec![name.into()],
        addresses: Vec::new(),
        routes: Vec::new(),
        tcp: vec![to(cluster, 1)],
    };
    let mut c1 = cluster("one", &[one]);
    let mut c2 = cluster("two", &[two]);
    c1.protocol = Protocol::Tls;
    c2.protocol = Protocol::Tls;
    let config: ProxyConfig =
        sidecar_config("web", vec![tls_host("one.example", "one"), tls_host("two.example", "two")], vec![c1, c2]);
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _proxy = Proxy::start("sidecar", &config, &["--explicit-proxy-addr", &explicit.to_string()]);
    for (name, rx) in [("two.example", &mut two_rx), ("one.example", &mut one_rx)] {
        // curl tunnels through CONNECT and starts TLS with the name as SNI; the recorder is no TLS
        // server, so curl fails after the ClientHello, which is all this test needs.
        let _ = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-k",
                "--max-time",
                "3",
                "--proxy",
                &format!("http://{explicit}"),
                &format!("https://{name}/"),
            ])
            .status()
            .await;
        let hello = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a connection arrived")
            .expect("bytes");
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(hello.windows(name.len()).any(|w| w == name.as_bytes()), "the ClientHello names {name}");
    }
}
