//! End to end: the proxy's discovery client (`trellis_proxy::discovery`) against the real push server,
//! in one process over real TCP and HTTP/2. (It lives here because this crate already depends on the
//! proxy for tests; the proxy depending back on the control plane would make a cycle of crates.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use trellis_api::proxy_config::{
    Cluster, Endpoint, LoadBalancer, Node, Protocol, ProxyConfig, ProxyMode, UpstreamTls, VirtualHost, WeightedCluster,
};
use trellis_api::push::{Hello, ProxyStatus};
use trellis_controlplane::push::{FnSource, Options, PushServer};
use trellis_proxy::discovery::{self, Backoff};
use trellis_proxy::drain::Drain;
use trellis_proxy::metrics::Metrics;
use trellis_proxy::state::Store;

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);
/// A quick reconnect schedule, so the test does not wait for production delays.
const QUICK: Backoff = Backoff { base: Duration::from_millis(20), max: Duration::from_millis(200) };

fn cluster(name: &str, port: u16) -> Cluster {
    Cluster {
        name: name.into(),
        service: "backend.shop.svc.cluster.local".into(),
        port: 80,
        subset: String::new(),
        protocol: Protocol::Tcp,
        endpoints: vec![Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            labels: BTreeMap::new(),
            identity: String::new(),
            weight: 1,
            meshed: false,
        }],
        load_balancer: LoadBalancer::default(),
        connection_pool: None,
        outlier_detection: None,
        tls: UpstreamTls::Auto,
        retry_budget: None,
    }
}

/// A config whose backend is reached through cluster `target`; its endpoints listen on `port`.
fn config(target: &str, port: u16) -> ProxyConfig {
    let mut config = ProxyConfig::new("", Node::default(), ProxyMode::Sidecar);
    config.clusters = vec![cluster("outbound|80||backend.shop.svc.cluster.local", port)];
    config.outbound.virtual_hosts = vec![VirtualHost {
        name: "backend.shop.svc.cluster.local".into(),
        port: 80,
        protocol: Protocol::Tcp,
        domains: Vec::new(),
        addresses: vec!["10.96.0.20".into()],
        routes: Vec::new(),
        tcp: vec![WeightedCluster {
            cluster: target.into(),
            weight: 1,
            request_headers: Default::default(),
            response_headers: Default::default(),
        }],
    }];
    config
}

const GOOD: &str = "outbound|80||backend.shop.svc.cluster.local";

/// The mesh as the test edits it, and the source the push server reads.
struct Mesh {
    config: Arc<Mutex<ProxyConfig>>,
    generation: watch::Sender<u64>,
}

impl Mesh {
    fn new(initial: ProxyConfig) -> Self {
        Self { config: Arc::new(Mutex::new(initial)), generation: watch::channel(1).0 }
    }

    fn change(&self, config: ProxyConfig) {
        *self.config.lock().expect("mesh lock") = config;
        self.generation.send_modify(|g| *g += 1);
    }

    /// A push server reading this mesh, serving on `addr` (retrying while the old one lets go of it).
    async fn serve(&self, addr: SocketAddr) -> (PushServer, SocketAddr) {
        let config = self.config.clone();
        let source = FnSource::new(self.generation.subscribe(), move |hello: &Hello| {
            let mut config = config.lock().map_err(|e| e.to_string())?.clone();
            config.node = hello.node.clone();
            Ok(config)
        });
        let options = Options { debounce: Duration::from_millis(10), ..Options::default() };
        let server = PushServer::new(Arc::new(source), options);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("cannot bind {addr}: {err}"),
            }
        };
        let addr = listener.local_addr().expect("address");
        let serving = server.clone();
        tokio::spawn(async move { serving.serve(listener).await });
        (server, addr)
    }
}

fn hello() -> Hello {
    Hello {
        node: Node { id: "web-1.shop".into(), namespace: "shop".into(), ..Node::default() },
        mode: ProxyMode::Sidecar,
        proxy_version: "test".into(),
        ips: Vec::new(),
    }
}

/// Waits until `done` holds, failing with `what` after [`PATIENCE`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The version serving and the port of its backend endpoint.
fn serving(store: &Store) -> Option<(String, u16)> {
    let current = store.current()?;
    Some((current.config.version.clone(), current.config.clusters[0].endpoints[0].address.port()))
}

fn status(server: &PushServer) -> Option<ProxyStatus> {
    server.statuses().proxies.into_iter().find(|p| p.id == "web-1.shop")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_the_control_plane_and_keeps_its_config_while_the_control_plane_is_away() {
    let mesh = Mesh::new(config(GOOD, 8001));
    let (server, addr) = mesh.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let (store, metrics, drain) = (Arc::new(Store::default()), Arc::new(Metrics::new()), Drain::new());
    let proxy = tokio::spawn(discovery::run_with(
        target(&addr.to_string()),
        hello(),
        store.clone(),
        metrics,
        drain.watch(),
        QUICK,
    ));

    eventually("the proxy is ready with the first config", || store.is_loaded()).await;
    assert_eq!(serving(&store), Some(("1".into(), 8001)));
    eventually("the first config is acknowledged", || status(&server).is_some_and(|s| s.in_sync)).await;

    mesh.change(config(GOOD, 8002));
    eventually("the endpoint change is applied", || serving(&store) == Some(("2".into(), 8002))).await;
    eventually("and acknowledged", || status(&server).is_some_and(|s| s.in_sync && s.sent_version == "2")).await;

    mesh.change(config("outbound|80||nowhere", 8003));
    eventually("a config that does not compile is refused", || {
        status(&server).and_then(|s| s.last_error).is_some_and(|e| e.contains("unknown cluster"))
    })
    .await;
    assert_eq!(serving(&store), Some(("2".into(), 8002)), "the last good config keeps serving");
    assert!(!status(&server).expect("listed").in_sync);

    mesh.change(config(GOOD, 8004));
    eventually("the next change applies on top of the refused one", || serving(&store) == Some(("4".into(), 8004)))
        .await;
    eventually("and the proxy is back in sync", || status(&server).is_some_and(|s| s.in_sync)).await;

    server.shutdown();
    eventually("the stream is gone", || status(&server).is_none()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.is_loaded(), "still ready without a control plane");
    assert_eq!(serving(&store), Some(("4".into(), 8004)), "still serving the last config");

    mesh.change(config(GOOD, 8005));
    let (restarted, _) = mesh.serve(addr).await;
    eventually("the proxy reconnects and resyncs", || serving(&store) == Some(("5".into(), 8005))).await;
    eventually("the new server lists it in sync", || status(&restarted).is_some_and(|s| s.in_sync)).await;

    drain.start();
    let ended = tokio::time::timeout(PATIENCE, proxy).await.expect("the client stops when draining");
    ended.expect("the client task").expect("it ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_starts_before_the_control_plane_waits_unready_and_connects_when_it_comes() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address").port()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (store, metrics, drain) = (Arc::new(Store::default()), Arc::new(Metrics::new()), Drain::new());
    let proxy = tokio::spawn(discovery::run_with(
        target(&format!("http://{addr}")),
        hello(),
        store.clone(),
        metrics,
        drain.watch(),
        QUICK,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.is_loaded(), "not ready without a config");

    let mesh = Mesh::new(config(GOOD, 8001));
    let (server, _) = mesh.serve(addr).await;
    eventually("the proxy connects once the control plane listens", || store.is_loaded()).await;
    eventually("and is listed in sync", || status(&server).is_some_and(|s| s.in_sync)).await;
    drain.start();
    let ended = tokio::time::timeout(PATIENCE, proxy).await.expect("the client stops when draining");
    ended.expect("the client task").expect("it ends cleanly");
}

#[test]
fn a_malformed_discovery_address_is_an_error_naming_the_flag() {
    let err = discovery::Target::parse("ftp://trellisd:15012").expect_err("only http and https are spoken").to_string();
    assert!(err.starts_with("invalid value for --discovery-address:"), "{err}");
}

fn target(address: &str) -> discovery::Target {
    discovery::Target::parse(address).expect("an address")
}
