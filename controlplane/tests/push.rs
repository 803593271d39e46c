//! The push server over real TCP and HTTP/2, with a scripted proxy and a fake config source.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use trellis_api::proxy_config::{Cluster, Endpoint, LoadBalancer, Node, Protocol, ProxyConfig, ProxyMode, UpstreamTls};
use trellis_api::push::{
    CONTENT_TYPE, ClientMessage, Delta, Hello, LineDecoder, ProxyStatus, ProxyStatusList, STREAM_PATH, ServerMessage,
    decode, encode,
};
use trellis_controlplane::push::{ConfigSource, Options, PushServer};

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(5);

fn cluster(service: usize, endpoints: usize) -> Cluster {
    let fqdn = format!("svc-{service:03}.shop.svc.cluster.local");
    Cluster {
        name: format!("outbound|80||{fqdn}"),
        service: fqdn,
        port: 80,
        subset: String::new(),
        protocol: Protocol::Http,
        endpoints: (0..endpoints).map(|e| endpoint(service, e)).collect(),
        load_balancer: LoadBalancer::default(),
        connection_pool: None,
        outlier_detection: None,
        tls: UpstreamTls::Auto,
        retry_budget: None,
    }
}

fn endpoint(service: usize, index: usize) -> Endpoint {
    Endpoint {
        address: format!("10.1.{service}.{}:8080", index + 1).parse().expect("address"),
        labels: BTreeMap::new(),
        identity: String::new(),
        weight: 1,
        meshed: true,
    }
}

/// A source whose config (the same for every proxy but its node) the test edits.
struct FakeSource {
    config: Mutex<ProxyConfig>,
    generation: watch::Sender<u64>,
}

impl FakeSource {
    fn new(services: usize) -> Arc<Self> {
        let mut config = ProxyConfig::new("ignored", Node::default(), ProxyMode::Sidecar);
        config.clusters = (0..services).map(|s| cluster(s, 10)).collect();
        Arc::new(Self { config: Mutex::new(config), generation: watch::channel(1).0 })
    }

    /// Edits the config and moves the generation.
    fn change(&self, edit: impl FnOnce(&mut ProxyConfig)) {
        edit(&mut self.config.lock().expect("config lock"));
        self.generation.send_modify(|g| *g += 1);
    }
}

impl ConfigSource for FakeSource {
    fn config_for(&self, hello: &Hello) -> Result<ProxyConfig, String> {
        if hello.node.id.starts_with("unknown") {
            return Err(format!("no workload named {}", hello.node.id));
        }
        let mut config = self.config.lock().expect("config lock").clone();
        config.node = hello.node.clone();
        Ok(config)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

fn options() -> Options {
    Options { debounce: Duration::from_millis(20), max_delay: Duration::from_millis(100), ..Options::default() }
}

async fn start(source: Arc<FakeSource>) -> (PushServer, SocketAddr) {
    let server = PushServer::new(source, options());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (server, addr)
}

fn hello(id: &str) -> Hello {
    Hello {
        node: Node { id: id.into(), namespace: "shop".into(), ..Node::default() },
        mode: ProxyMode::Sidecar,
        proxy_version: "test".into(),
        ips: Vec::new(),
    }
}

/// A scripted proxy: one HTTP/2 stream, messages written and read by the test.
struct Proxy {
    tx: mpsc::Sender<Bytes>,
    body: Incoming,
    decoder: LineDecoder,
}

/// The proxy's half of the stream: lines the test queues.
struct Outgoing(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Outgoing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

impl Proxy {
    /// Opens a stream whose first line is `first`; returns the response status and, on 200, the proxy.
    async fn open(addr: SocketAddr, first: &[u8]) -> (StatusCode, Result<Proxy, String>) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tx.send(Bytes::copy_from_slice(first)).await.expect("queue the first line");
        let request = Request::post(format!("http://{addr}{STREAM_PATH}"))
            .header("content-type", CONTENT_TYPE)
            .body(Outgoing(rx))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.into_body().collect().await.expect("body").to_bytes();
            return (status, Err(String::from_utf8_lossy(&text).into_owned()));
        }
        let proxy = Proxy { tx, body: response.into_body(), decoder: LineDecoder::new(64 << 20) };
        (status, Ok(proxy))
    }

    async fn connect(addr: SocketAddr, id: &str) -> Proxy {
        let (status, proxy) = Self::open(addr, &encode(&ClientMessage::Hello(hello(id))).expect("encode")).await;
        assert_eq!(status, StatusCode::OK, "{proxy:?}");
        proxy.expect("a stream")
    }

    async fn send(&self, message: ClientMessage) {
        self.tx.send(Bytes::from(encode(&message).expect("encode"))).await.expect("stream open");
    }

    /// The next message, `None` when the stream ended or nothing came within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<ServerMessage> {
        let read = async {
            loop {
                if let Some(line) = self.decoder.next_line().expect("a sane line") {
                    return Some(decode::<ServerMessage>(line).expect("a server message"));
                }
                let frame = self.body.frame().await?.ok()?;
                if let Ok(data) = frame.into_data() {
                    self.decoder.push(&data);
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    async fn next(&mut self) -> ServerMessage {
        self.next_within(PATIENCE).await.expect("a message from the server")
    }

    async fn delta(&mut self) -> Delta {
        match self.next().await {
            ServerMessage::Delta(delta) => *delta,
            other => panic!("expected a delta, got {other:?}"),
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proxy")
    }
}

/// The status of `id` once `ready` holds, or a failure naming the last status seen.
async fn status_when(server: &PushServer, id: &str, ready: impl Fn(&ProxyStatus) -> bool) -> ProxyStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = server.statuses().proxies.into_iter().find(|p| p.id == id);
        match status {
            Some(status) if ready(&status) => return status,
            _ if tokio::time::Instant::now() > deadline => panic!("status of {id} never got there: {status:?}"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// `GET /v1/proxies` over plain HTTP/1.1, as `curl` would.
async fn status_over_http1(addr: SocketAddr) -> ProxyStatusList {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /v1/proxies HTTP/1.1\r\nhost: trellisd\r\nconnection: close\r\n\r\n").await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("a status list")
}

#[tokio::test]
async fn a_proxy_gets_a_snapshot_then_only_the_cluster_that_changed() {
    let source = FakeSource::new(100);
    let (server, addr) = start(source.clone()).await;
    let mut proxy = Proxy::connect(addr, "web-1.shop").await;
    let ServerMessage::Snapshot(snapshot) = proxy.next().await else { panic!("the first message is a snapshot") };
    assert_eq!((snapshot.version.as_str(), snapshot.clusters.len()), ("1", 100));
    assert_eq!(snapshot.node.id, "web-1.shop", "the config is the one computed for this proxy");
    let status = status_when(&server, "web-1.shop", |_| true).await;
    assert_eq!((status.sent_version.as_str(), status.acked_version.as_deref(), status.in_sync), ("1", None, false));
    let snapshot_bytes = status.sent_bytes;

    proxy.send(ClientMessage::Ack { version: "1".into() }).await;
    status_when(&server, "web-1.shop", |s| s.in_sync).await;

    source.change(|config| config.clusters[42].endpoints.push(endpoint(42, 10)));
    let delta = proxy.delta().await;
    assert_eq!((delta.base_version.as_str(), delta.version.as_str()), ("1", "2"));
    let names: Vec<&str> = delta.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["outbound|80||svc-042.shop.svc.cluster.local"]);
    assert_eq!(delta.clusters[0].endpoints.len(), 11);
    assert!(delta.removed_clusters.is_empty() && delta.outbound.is_none() && delta.node.is_none());
    let status = status_when(&server, "web-1.shop", |s| s.sent_version == "2").await;
    assert!(!status.in_sync, "sent but not acknowledged: {status:?}");
    let delta_bytes = status.sent_bytes - snapshot_bytes;
    assert!(delta_bytes < 2_000, "the delta took {delta_bytes} bytes (the snapshot {snapshot_bytes})");

    proxy.send(ClientMessage::Ack { version: "2".into() }).await;
    status_when(&server, "web-1.shop", |s| s.in_sync).await;
    let listed = status_over_http1(addr).await;
    assert_eq!(listed.proxies.len(), 1);
    let row = &listed.proxies[0];
    assert_eq!((row.id.as_str(), row.acked_version.as_deref(), row.in_sync), ("web-1.shop", Some("2"), true));
}

#[tokio::test]
async fn a_change_that_does_not_touch_the_proxy_sends_nothing_and_a_burst_sends_one_delta() {
    let source = FakeSource::new(10);
    let (_server, addr) = start(source.clone()).await;
    let mut proxy = Proxy::connect(addr, "web-1.shop").await;
    proxy.next().await;
    source.change(|_| {});
    assert_eq!(proxy.next_within(Duration::from_millis(300)).await, None, "nothing changed for this proxy");
    for n in 0..10 {
        source.change(|config| config.clusters[3].endpoints.push(endpoint(3, 10 + n)));
    }
    let delta = proxy.delta().await;
    assert_eq!(delta.version, "12", "the burst is coalesced into its last generation");
    assert_eq!(delta.clusters[0].endpoints.len(), 20);
    assert_eq!(proxy.next_within(Duration::from_millis(300)).await, None, "one delta for the whole burst");
}

#[tokio::test]
async fn a_refused_config_is_listed_with_its_error_and_a_resync_gets_a_snapshot() {
    let source = FakeSource::new(5);
    let (server, addr) = start(source.clone()).await;
    let mut proxy = Proxy::connect(addr, "web-1.shop").await;
    proxy.next().await;
    proxy.send(ClientMessage::Ack { version: "1".into() }).await;
    source.change(|config| {
        config.clusters.remove(0);
    });
    let delta = proxy.delta().await;
    assert_eq!(delta.removed_clusters, ["outbound|80||svc-000.shop.svc.cluster.local"]);
    proxy.send(ClientMessage::Nack { version: "2".into(), error: "route to a missing cluster".into() }).await;
    let status = status_when(&server, "web-1.shop", |s| s.last_error.is_some()).await;
    assert_eq!(status.last_error.as_deref(), Some("refused version 2: route to a missing cluster"));
    assert_eq!((status.acked_version.as_deref(), status.in_sync), (Some("1"), false));

    proxy.send(ClientMessage::Resync { version: "2".into(), error: "lost track".into() }).await;
    let ServerMessage::Snapshot(snapshot) = proxy.next().await else { panic!("a resync is answered with a snapshot") };
    assert_eq!((snapshot.version.as_str(), snapshot.clusters.len()), ("2", 4));
    proxy.send(ClientMessage::Ack { version: "2".into() }).await;
    let status = status_when(&server, "web-1.shop", |s| s.in_sync).await;
    assert_eq!(status.last_error, None, "acknowledging the current version clears the refusal");
}

#[tokio::test]
async fn streams_that_start_wrong_or_have_no_config_are_refused_with_a_reason() {
    let (server, addr) = start(FakeSource::new(1)).await;
    let (status, text) = Proxy::open(addr, b"{\"ack\":{\"version\":\"1\"}}\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(text.expect_err("refused").trim(), "the first message of a stream must be a hello");
    let (status, text) = Proxy::open(addr, b"not json\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.expect_err("refused").contains("invalid message \"not json\""));
    let first = encode(&ClientMessage::Hello(hello("unknown-1.shop"))).expect("encode");
    let (status, text) = Proxy::open(addr, &first).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.expect_err("refused").contains("no workload named unknown-1.shop"));
    assert!(server.statuses().proxies.is_empty(), "refused streams are not listed");
}

#[tokio::test]
async fn a_proxy_that_leaves_is_no_longer_listed_and_shutdown_ends_every_stream() {
    let source = FakeSource::new(3);
    let (server, addr) = start(source.clone()).await;
    let mut leaving = Proxy::connect(addr, "a.shop").await;
    let mut staying = Proxy::connect(addr, "b.shop").await;
    leaving.next().await;
    staying.next().await;
    assert_eq!(server.statuses().proxies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a.shop", "b.shop"]);
    drop(leaving);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.statuses().proxies.len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", server.statuses());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown();
    assert_eq!(staying.next_within(PATIENCE).await, None, "the stream ends");
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline + PATIENCE, "the server still listens");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stream_stays_open_on_its_last_config_when_the_source_stops_changing_for_good() {
    let (generation, generations) = watch::channel(7);
    let source = trellis_controlplane::push::FnSource::new(generations, |hello: &Hello| {
        Ok(ProxyConfig::new("ignored", hello.node.clone(), ProxyMode::Sidecar))
    });
    let server = PushServer::new(Arc::new(source), options());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let mut proxy = Proxy::connect(addr, "web-1.shop").await;
    assert_eq!(proxy.next().await.version(), "7");
    drop(generation);
    proxy.send(ClientMessage::Ack { version: "7".into() }).await;
    status_when(&server, "web-1.shop", |s| s.in_sync).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.statuses().proxies.len(), 1, "the stream is still open");
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
async fn get_over_http1(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: trellisd\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

#[tokio::test]
async fn the_config_last_sent_to_a_proxy_can_be_read_by_its_id() {
    let source = FakeSource::new(3);
    let (_server, addr) = start(source.clone()).await;
    let mut proxy = Proxy::connect(addr, "web-1.shop").await;
    let ServerMessage::Snapshot(_) = proxy.next().await else { panic!("the first message is a snapshot") };
    source.change(|config| config.clusters[1].endpoints.push(endpoint(1, 7)));
    let delta = proxy.delta().await;

    let (status, body) = get_over_http1(addr, "/v1/config?proxy=web-1%2Eshop").await;
    assert_eq!(status, 200, "{body}");
    let config: ProxyConfig = serde_json::from_str(&body).expect("a ProxyConfig");
    assert_eq!(config.version, delta.version, "the config of the last delta, not of the snapshot");
    assert_eq!(config.node.id, "web-1.shop");
    let endpoints: Vec<usize> = config.clusters.iter().map(|c| c.endpoints.len()).collect();
    assert_eq!(endpoints, [10, 11, 10]);

    let (status, body) = get_over_http1(addr, "/v1/config?proxy=nobody.shop").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no proxy \"nobody.shop\" is connected"), "{body}");
    let (status, body) = get_over_http1(addr, "/v1/config").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("usage: /v1/config?proxy="), "{body}");
}
