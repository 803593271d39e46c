//! Test harness: runs the real `trellis-proxy` binary, real upstream servers on loopback, and writes
//! `ProxyConfig` files. Each test gets its own loopback IP (127.77.x.y) so tests run in parallel
//! without port collisions, and every process is killed when its handle drops.
#![allow(dead_code)]

pub mod faulty;
pub mod overload;
pub mod pki;
pub mod upstream;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_api::proxy_config::*;

/// A loopback IP nobody else in this test run uses: 127.77.x.y with y in 1..=254, x from the test
/// binary's pid (test binaries run one after another) and a counter.
pub fn unique_ip() -> IpAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let third = ((std::process::id() % 64) as u16 * 4 + n / 254) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 77, third, (n % 254) as u8 + 1))
}

/// A running proxy process.
pub struct Proxy {
    child: Child,
    pub ip: IpAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts `trellis-proxy <mode>` with `config`, all its listeners on a fresh loopback IP.
    pub fn start(mode: &str, config: &ProxyConfig, extra: &[&str]) -> Proxy {
        Self::start_at(unique_ip(), mode, config, extra)
    }

    /// Starts `trellis-proxy <mode>` with all its listeners on `ip`.
    pub fn start_at(ip: IpAddr, mode: &str, config: &ProxyConfig, extra: &[&str]) -> Proxy {
        Self::spawn(ip, mode, config, extra, Stdio::inherit())
    }

    /// Starts like [`Proxy::start`] with the proxy's stdout (where the access log goes) collected line
    /// by line as it is written, into the returned list.
    pub fn start_collecting_stdout(
        mode: &str,
        config: &ProxyConfig,
        extra: &[&str],
    ) -> (Proxy, Arc<Mutex<Vec<String>>>) {
        let mut proxy = Self::spawn(unique_ip(), mode, config, extra, Stdio::piped());
        let stdout = proxy.child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().expect("lines").push(line);
            }
        });
        (proxy, lines)
    }

    fn spawn(ip: IpAddr, mode: &str, config: &ProxyConfig, extra: &[&str], stdout: Stdio) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.json");
        write_config(&config_path, config);
        let child = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
            .arg(mode)
            .arg("--config")
            .arg(&config_path)
            .args(["--listen-ip", &ip.to_string()])
            .args(["--admin-addr", &format!("{ip}:15000")])
            .args(["--readiness-addr", &format!("{ip}:15021")])
            .args(["--prometheus-addr", &format!("{ip}:15090")])
            .args(["--config-poll", "50ms", "--drain-deadline", "2s"])
            .args(extra)
            .env("TRELLIS_LOG", std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .expect("spawn trellis-proxy");
        let mut proxy = Proxy { child, ip, config_path, _dir: dir };
        proxy.wait_ready();
        proxy
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }

    /// Blocks until `/healthz/ready` answers 200.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("proxy on {} exited before becoming ready: {status}", self.ip);
            }
            if let Some((200, _)) = http_get(self.addr(15021), "/healthz/ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("proxy on {} never became ready", self.ip);
    }

    /// Replaces the config file (atomically, as a control plane or operator would).
    pub fn update(&self, config: &ProxyConfig) {
        write_config(&self.config_path, config);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn metrics(&self) -> String {
        http_get(self.addr(15090), "/stats/prometheus").map(|(_, body)| body).unwrap_or_default()
    }
}

/// Writes a config file atomically (write to a temp file, then rename).
pub fn write_config(path: &Path, config: &ProxyConfig) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(config).expect("serialize")).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// A tiny blocking HTTP/1.0 GET for admin endpoints: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path)
}

pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

pub fn node(name: &str) -> Node {
    Node {
        id: format!("{name}.default"),
        namespace: "default".into(),
        service_account: name.into(),
        identity: format!("spiffe://cluster.local/ns/default/sa/{name}"),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
    }
}

/// A cluster of plain (not meshed) endpoints.
pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> Cluster {
    cluster_with(name, endpoints, false, Protocol::Http)
}

pub fn cluster_with(name: &str, endpoints: &[SocketAddr], meshed: bool, protocol: Protocol) -> Cluster {
    Cluster {
        name: name.into(),
        service: name.into(),
        port: 80,
        subset: String::new(),
        protocol,
        endpoints: endpoints
            .iter()
            .map(|a| Endpoint { address: *a, labels: BTreeMap::new(), identity: String::new(), weight: 1, meshed })
            .collect(),
        load_balancer: LoadBalancer::RoundRobin,
        connection_pool: None,
        outlier_detection: None,
        tls: UpstreamTls::Disable,
        retry_budget: None,
    }
}

pub fn to(cluster: &str, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: cluster.into(),
        weight,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

pub fn route(name: &str, matches: Vec<RouteMatch>, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        matches,
        action,
        timeout: None,
        retries: None,
        fault: None,
        mirrors: Vec::new(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

pub fn forward(targets: Vec<WeightedCluster>) -> RouteAction {
    RouteAction::Forward { clusters: targets, rewrite: None }
}

pub fn vhost(name: &str, port: u16, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        port,
        protocol: Protocol::Http,
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        addresses: Vec::new(),
        routes,
        tcp: Vec::new(),
    }
}

/// A gateway config with one HTTP port and the given virtual hosts.
pub fn gateway_config(port: u16, vhosts: Vec<VirtualHost>, clusters: Vec<Cluster>) -> ProxyConfig {
    let mut config = ProxyConfig::new("1", node("ingress"), ProxyMode::Gateway);
    config.gateway_listeners = vec![GatewayListener { port, protocol: Protocol::Http, virtual_hosts: vhosts }];
    config.clusters = clusters;
    config
}

/// A sidecar config with outbound virtual hosts.
pub fn sidecar_config(name: &str, vhosts: Vec<VirtualHost>, clusters: Vec<Cluster>) -> ProxyConfig {
    let mut config = ProxyConfig::new("1", node(name), ProxyMode::Sidecar);
    config.outbound.virtual_hosts = vhosts;
    config.clusters = clusters;
    config
}

/// Whether a command exists on this machine.
pub fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Asserts a command exists, failing (not skipping) with the package to install: CI installs them.
pub fn require(command: &str, package: &str) {
    assert!(have(command), "`{command}` is required for this test: apt-get install -y {package} (.ci/run does)");
}

impl Proxy {
    /// Like [`Proxy::start_at`], with the proxy's command run through `wrapper` (e.g.
    /// `["prlimit", "--nofile=64"]`), which must exec the command it is given.
    pub fn start_wrapped(ip: IpAddr, mode: &str, config: &ProxyConfig, extra: &[&str], wrapper: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.json");
        write_config(&config_path, config);
        let child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_trellis-proxy"))
            .arg(mode)
            .arg("--config")
            .arg(&config_path)
            .args(["--listen-ip", &ip.to_string()])
            .args(["--admin-addr", &format!("{ip}:15000")])
            .args(["--readiness-addr", &format!("{ip}:15021")])
            .args(["--prometheus-addr", &format!("{ip}:15090")])
            .args(["--config-poll", "50ms", "--drain-deadline", "2s"])
            .args(extra)
            .env("TRELLIS_LOG", std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn trellis-proxy");
        let mut proxy = Proxy { child, ip, config_path, _dir: dir };
        proxy.wait_ready();
        proxy
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // Linux reports both in clock ticks of 1/100 s (USER_HZ).
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }

    /// Open file descriptors of the process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }
}

/// The value of the series in a Prometheus exposition whose name and labels are exactly `series`
/// (`name{labels}`), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Opens a `CONNECT target` tunnel through the explicit proxy at `proxy`: the response's status and
/// head, and the stream (the tunnel when the status is 200).
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> (u16, String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy).await.expect("connect to the explicit proxy");
    stream.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("the CONNECT response in time")
            .expect("read");
        assert_eq!(n, 1, "connection closed before the CONNECT response ended: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, stream)
}
