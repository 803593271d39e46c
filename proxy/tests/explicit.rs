//! The explicit-proxy listener for real: what `CONNECT` and absolute-form requests may reach, how
//! the listener drains, and how it behaves when accepting fails.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::upstream::http_echo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_api::proxy_config::{Protocol, ProxyConfig, VirtualHost};

/// A sidecar reachable through its explicit proxy, with `config` and `extra` flags.
fn sidecar(config: &ProxyConfig, extra: &[&str]) -> (Proxy, SocketAddr) {
    let ip = unique_ip();
    let explicit = SocketAddr::new(ip, 15080);
    let mut args = vec!["--explicit-proxy-addr".to_owned(), explicit.to_string()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Proxy::start_at(ip, "sidecar", config, &args), explicit)
}

/// Reads from `stream` until the peer closes it (or `limit` passes): what arrived, and whether it
/// closed in time.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut bytes)).await.is_ok();
    (bytes, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_requests_to_the_proxys_own_listeners_are_refused() {
    let (proxy, explicit) = sidecar(&sidecar_config("client", Vec::new(), Vec::new()), &[]);
    for port in [15001, 15006, 15080, 15000, 15021, 15090] {
        let target = proxy.addr(port).to_string();
        let (status, head, _) = connect_tunnel(explicit, &target).await;
        assert_eq!(status, 502, "CONNECT {target}: {head}");
        assert!(head.contains("x-trellis-error: destination is this proxy's own listener"), "{head}");
    }
    // An absolute-form request must not reach the loopback-only admin endpoint either.
    let admin = proxy.addr(15000);
    let mut stream = TcpStream::connect(explicit).await.expect("connect");
    stream
        .write_all(
            format!("POST http://{admin}/quitquitquit HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let (response, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_get(proxy.addr(15021), "/healthz/ready").map(|r| r.0), Some(200), "the proxy is not draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_unspecified_address_is_refused() {
    let (_proxy, explicit) = sidecar(&sidecar_config("client", Vec::new(), Vec::new()), &[]);
    for target in ["0.0.0.0:8080", "[::]:8080"] {
        let (status, head, _) = connect_tunnel(explicit, target).await;
        assert_eq!(status, 502, "CONNECT {target}: {head}");
    }
}

/// A known TCP destination `ledger` on `port` without a service address, in protocol `protocol`.
fn unaddressed_ledger(port: u16, protocol: Protocol, endpoint: SocketAddr) -> ProxyConfig {
    let ledger = VirtualHost {
        name: "ledger".into(),
        port,
        protocol,
        domains: vec!["ledger".into()],
        addresses: Vec::new(),
        routes: vec![route("all", vec![], forward(vec![to("ledger", 1)]))],
        tcp: vec![to("ledger", 1)],
    };
    sidecar_config("client", vec![ledger], vec![cluster_with("ledger", &[endpoint], false, protocol)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_tunnel_to_a_mesh_name_without_an_address_never_reaches_this_host() {
    // Whatever listens on this host at the port the name uses is what `0.0.0.0:port` would reach.
    let local = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = local.local_addr().expect("addr").port();
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "ledger-app").await;
    let (_proxy, explicit) = sidecar(&unaddressed_ledger(port, Protocol::Detect, app), &[]);
    let target = format!("ledger:{port}");

    let (status, head, mut tunnel) = connect_tunnel(explicit, &target).await;
    assert_eq!(status, 200, "{head}");
    tunnel.write_all(b"\x00\x01not http, not tls").await.expect("write");
    let (bytes, closed) = read_until_closed(&mut tunnel, Duration::from_secs(5)).await;
    assert!(closed && bytes.is_empty(), "the tunnel is closed without an answer: {bytes:?}");
    let reached = tokio::time::timeout(Duration::from_millis(500), local.accept()).await;
    assert!(reached.is_err(), "the tunnel was passed through to this host's port {port}");

    // HTTP through the same kind of tunnel is routed by its Host, so it still works.
    let (status, head, mut tunnel) = connect_tunnel(explicit, &target).await;
    assert_eq!(status, 200, "{head}");
    tunnel
        .write_all(format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let (bytes, _) = read_until_closed(&mut tunnel, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200") && text.contains("x-upstream: ledger-app"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_tcp_mesh_name_without_an_address_is_refused() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "ledger-app").await;
    let (_proxy, explicit) = sidecar(&unaddressed_ledger(7000, Protocol::Tcp, app), &[]);
    let (status, head, _) = connect_tunnel(explicit, "ledger:7000").await;
    assert_eq!(status, 502, "{head}");
    assert!(head.contains("x-trellis-error: CONNECT target has no address for TCP traffic"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_idle_explicit_connections_and_lets_in_flight_requests_finish() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "slow-app").await;
    let config = sidecar_config(
        "client",
        vec![vhost("slow", 80, &["slow"], vec![route("all", vec![], forward(vec![to("slow", 1)]))])],
        vec![cluster("slow", &[app])],
    );
    let (mut proxy, explicit) = sidecar(&config, &[]);

    // An idle keep-alive connection that has already been served.
    let mut idle = TcpStream::connect(explicit).await.expect("connect");
    idle.write_all(b"GET http://slow/ HTTP/1.1\r\nHost: slow\r\n\r\n").await.expect("write");
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.expect("response");
    assert_eq!(&head, b"HTTP/1.1 200");
    // A request whose body is still on its way.
    let mut busy = TcpStream::connect(explicit).await.expect("connect");
    busy.write_all(
        b"POST http://slow/upload HTTP/1.1\r\nHost: slow\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n",
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let _ = std::process::Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status();
    let terminated = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(1)).await;
    assert!(closed, "an idle connection is closed when the proxy drains, not held until the deadline");

    busy.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.expect("the in-flight request can still send");
    let (response, closed) = read_until_closed(&mut busy, Duration::from_secs(5)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(closed, "the connection closes once its request is answered: {response}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("first ") && response.contains("second"), "the whole body came back: {response}");
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The drain deadline is 2 s: exiting sooner means no connection was left to run it out.
    assert!(terminated.elapsed() < Duration::from_millis(1500), "exited {:?} after SIGTERM", terminated.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_make_the_accept_loop_spin() {
    require("prlimit", "util-linux");
    const FD_LIMIT: usize = 128;
    let ip = unique_ip();
    let explicit = SocketAddr::new(ip, 15080);
    let limit = format!("--nofile={FD_LIMIT}:{FD_LIMIT}");
    let proxy = Proxy::start_wrapped(
        ip,
        "sidecar",
        &sidecar_config("client", Vec::new(), Vec::new()),
        &["--explicit-proxy-addr", &explicit.to_string(), "--concurrency", "1", "--log", "error"],
        &["prlimit", &limit],
    );
    let in_use = proxy.open_fds();
    assert!(in_use > 0 && in_use < FD_LIMIT - 16, "{in_use} descriptors open at start");
    // Enough connections to use every descriptor left, and some more that wait to be accepted.
    let mut clients = Vec::new();
    for _ in 0..(FD_LIMIT - in_use + 16) {
        clients.push(TcpStream::connect(explicit).await.expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.open_fds() < FD_LIMIT {
        assert!(Instant::now() < deadline, "the proxy never used its last descriptor ({} open)", proxy.open_fds());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = proxy.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = proxy.cpu_time().saturating_sub(before);
    assert!(used < Duration::from_millis(250), "the proxy used {used:?} of CPU in 1 s while accepts kept failing");
    drop(clients);
}
