//! The processes of each setup: the app, a `trellis-proxy` pair and an HAProxy pair, their
//! configurations, and a handle that kills a process when it drops (so an error or a panic in the
//! driver leaves nothing running).
//!
//! Both pairs are the same two hops:
//! ```text
//!  oha ──h1──> client proxy ──h2 (multiplexed)──> server proxy ──h1──> app
//! ```
//! Trellis: the client proxy is `trellis-proxy gateway` whose port routes every host to a cluster
//! with one `meshed: true` endpoint, the server proxy's inbound listener (`:15006`); the server proxy
//! is `trellis-proxy sidecar --inbound-target APP`, as in local mode. HAProxy: the client side's
//! backend is `proto h2` with `http-reuse always`, the server side binds `proto h2`.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use trellis_api::proxy_config::ProxyConfig;

/// Port that traffic enters a setup on (the app's port too).
pub const ENTRY_PORT: u16 = 8080;
/// The server-side Trellis proxy's inbound capture port (Istio's 15006).
pub const INBOUND_PORT: u16 = 15006;
/// How long a setup may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process that is killed when the handle drops.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Process {
    /// Spawns `command` with output to `log`, pinned to `cpu` when given (with `taskset`, which
    /// execs the program, so the pid is the program's).
    pub fn spawn(name: &str, program: &Path, args: &[String], cpu: Option<usize>, log: PathBuf) -> Result<Process> {
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Process { name: name.to_owned(), child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{} exited with {status}:\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The setups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Trellis,
    Haproxy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Direct, Kind::Trellis, Kind::Haproxy];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Trellis => "Trellis pair",
            Kind::Haproxy => "HAProxy pair",
        }
    }

    /// A file-name-friendly name.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Trellis => "trellis",
            Kind::Haproxy => "haproxy",
        }
    }
}

/// How a pair of proxies runs.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    /// Data-path threads of each proxy (`--concurrency` / `nbthread`).
    pub threads: usize,
    /// CPUs the client and the server proxy are pinned to.
    pub pin: Option<(usize, usize)>,
}

/// A running proxy pair; traffic enters at `entry`.
#[derive(Debug)]
pub struct Pair {
    pub kind: Kind,
    pub entry: SocketAddr,
    pub client: Process,
    pub server: Process,
}

impl Pair {
    pub fn check_running(&mut self) -> Result<()> {
        self.client.check_running()?;
        self.server.check_running()
    }
}

/// Starts the app on `addr` and waits until it answers.
pub fn start_app(program: &Path, addr: SocketAddr, threads: usize, dir: &Path) -> Result<Process> {
    let args = vec!["--listen".to_owned(), addr.to_string(), "--threads".to_owned(), threads.to_string()];
    let mut app = Process::spawn("app", program, &args, None, dir.join("app.log"))?;
    wait_for_200(addr, &mut [&mut app])?;
    Ok(app)
}

/// The client proxy's config: a gateway port whose routes send every host to the server proxy's
/// inbound listener, marked meshed so the hop between the proxies is multiplexed HTTP/2.
pub fn trellis_client_config(server_inbound: SocketAddr) -> Result<ProxyConfig> {
    let cluster = "outbound|8080||app.bench.svc.cluster.local";
    let value = json!({
        "schema": trellis_api::proxy_config::PROXY_CONFIG_SCHEMA,
        "version": "bench-1",
        "node": {
            "id": "client.bench",
            "namespace": "bench",
            "serviceAccount": "client",
            "identity": "spiffe://cluster.local/ns/bench/sa/client"
        },
        "mode": "gateway",
        "gatewayListeners": [{
            "port": ENTRY_PORT,
            "protocol": "http",
            "virtualHosts": [{
                "name": "app.bench.svc.cluster.local",
                "port": ENTRY_PORT,
                "protocol": "http",
                "domains": ["*"],
                "routes": [{
                    "name": "bench/app/0",
                    "action": {"forward": {"clusters": [{"cluster": cluster, "weight": 1}]}}
                }]
            }]
        }],
        "clusters": [{
            "name": cluster,
            "service": "app.bench.svc.cluster.local",
            "port": ENTRY_PORT,
            "protocol": "http",
            "endpoints": [{"address": server_inbound, "meshed": true}],
            "tls": "disable"
        }]
    });
    checked(value)
}

/// The server proxy's config: a sidecar with no outbound routes; its inbound listener forwards to
/// `--inbound-target`.
pub fn trellis_server_config() -> Result<ProxyConfig> {
    let value = json!({
        "schema": trellis_api::proxy_config::PROXY_CONFIG_SCHEMA,
        "version": "bench-1",
        "node": {
            "id": "app.bench",
            "namespace": "bench",
            "serviceAccount": "app",
            "identity": "spiffe://cluster.local/ns/bench/sa/app"
        },
        "mode": "sidecar"
    });
    checked(value)
}

fn checked(value: serde_json::Value) -> Result<ProxyConfig> {
    let config: ProxyConfig = serde_json::from_value(value).context("the bench's ProxyConfig does not parse")?;
    let issues = config.check();
    if issues.has_errors() {
        bail!("the bench's ProxyConfig is invalid: {:?}", issues.into_vec());
    }
    Ok(config)
}

/// Starts a Trellis pair: the client gateway on `client_ip:8080`, the server sidecar on `server_ip`.
pub fn start_trellis(
    program: &Path,
    dir: &Path,
    (client_ip, server_ip): (IpAddr, IpAddr),
    app: SocketAddr,
    options: PairOptions,
) -> Result<Pair> {
    let server_config = dir.join("trellis-server.json");
    let client_config = dir.join("trellis-client.json");
    std::fs::write(&server_config, serde_json::to_vec_pretty(&trellis_server_config()?)?)?;
    let inbound = SocketAddr::new(server_ip, INBOUND_PORT);
    std::fs::write(&client_config, serde_json::to_vec_pretty(&trellis_client_config(inbound)?)?)?;
    let args = |mode: &str, config: &Path, ip: IpAddr| -> Vec<String> {
        let mut args = vec![mode.to_owned(), "--config".to_owned(), config.display().to_string()];
        for (flag, value) in [
            ("--listen-ip", ip.to_string()),
            ("--admin-addr", format!("{ip}:15000")),
            ("--readiness-addr", format!("{ip}:15021")),
            ("--prometheus-addr", format!("{ip}:15090")),
            ("--concurrency", options.threads.to_string()),
            ("--drain-deadline", "1s".to_owned()),
            ("--log", "warn".to_owned()),
        ] {
            args.extend([flag.to_owned(), value]);
        }
        args
    };
    let mut server_args = args("sidecar", &server_config, server_ip);
    server_args.extend(["--inbound-target".to_owned(), app.to_string()]);
    let (client_cpu, server_cpu) = options.pin.unzip();
    let log = |side: &str| dir.join(format!("trellis-{side}.log"));
    let server = Process::spawn("trellis server proxy", program, &server_args, server_cpu, log("server"))?;
    let client_args = args("gateway", &client_config, client_ip);
    let client = Process::spawn("trellis client proxy", program, &client_args, client_cpu, log("client"))?;
    let mut pair = Pair { kind: Kind::Trellis, entry: SocketAddr::new(client_ip, ENTRY_PORT), client, server };
    wait_for_200(pair.entry, &mut [&mut pair.client, &mut pair.server])?;
    Ok(pair)
}

/// Settings both HAProxy processes share: no logging, keep-alive, generous timeouts.
fn haproxy_common(threads: usize) -> String {
    format!(
        "global\n    nbthread {threads}\n    maxconn 4096\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    \
         timeout http-keep-alive 60s\n\n"
    )
}

/// HAProxy client side: HTTP/1.1 in on `bind`, multiplexed clear-text HTTP/2 out to `server_side`.
pub fn haproxy_client_config(bind: SocketAddr, server_side: SocketAddr, threads: usize) -> String {
    format!(
        "{}frontend client_in\n    bind {bind}\n    default_backend to_server_side\n\n\
         backend to_server_side\n    http-reuse always\n    server server_side {server_side} proto h2\n",
        haproxy_common(threads)
    )
}

/// HAProxy server side: clear-text HTTP/2 in on `bind`, HTTP/1.1 keep-alive out to the app.
pub fn haproxy_server_config(bind: SocketAddr, app: SocketAddr, threads: usize) -> String {
    format!(
        "{}frontend server_in\n    bind {bind} proto h2\n    default_backend app\n\n\
         backend app\n    http-reuse safe\n    server app {app}\n",
        haproxy_common(threads)
    )
}

/// Starts an HAProxy pair: client side on `client_ip:8080`, server side on `server_ip:8080`.
pub fn start_haproxy(
    program: &Path,
    dir: &Path,
    (client_ip, server_ip): (IpAddr, IpAddr),
    app: SocketAddr,
    options: PairOptions,
) -> Result<Pair> {
    let entry = SocketAddr::new(client_ip, ENTRY_PORT);
    let server_side = SocketAddr::new(server_ip, ENTRY_PORT);
    let server_config = dir.join("haproxy-server.cfg");
    let client_config = dir.join("haproxy-client.cfg");
    std::fs::write(&server_config, haproxy_server_config(server_side, app, options.threads))?;
    std::fs::write(&client_config, haproxy_client_config(entry, server_side, options.threads))?;
    // -db: stay in the foreground, no master process, so the pid is the one serving process.
    let args = |config: &Path| vec!["-db".to_owned(), "-f".to_owned(), config.display().to_string()];
    let (client_cpu, server_cpu) = options.pin.unzip();
    let log = |side: &str| dir.join(format!("haproxy-{side}.log"));
    let server = Process::spawn("haproxy server side", program, &args(&server_config), server_cpu, log("server"))?;
    let client = Process::spawn("haproxy client side", program, &args(&client_config), client_cpu, log("client"))?;
    let mut pair = Pair { kind: Kind::Haproxy, entry, client, server };
    wait_for_200(pair.entry, &mut [&mut pair.client, &mut pair.server])?;
    Ok(pair)
}

/// Waits until a GET to `addr` answers 200, failing early if one of `processes` exits.
pub fn wait_for_200(addr: SocketAddr, processes: &mut [&mut Process]) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        for process in processes.iter_mut() {
            process.check_running()?;
        }
        if http_status(addr) == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing answered 200 on {addr} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status of a one-shot HTTP/1.1 `GET /` to `addr`, if any.
pub fn http_status(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET / HTTP/1.1\r\nHost: app.bench\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text).ok()?;
    String::from_utf8_lossy(&text).split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trellis_client_routes_every_host_to_one_meshed_endpoint_in_plain_text() {
        let inbound: SocketAddr = "127.90.1.3:15006".parse().expect("addr");
        let config = trellis_client_config(inbound).expect("valid config");
        let cluster = &config.clusters[0];
        assert_eq!(cluster.endpoints.len(), 1);
        assert!(cluster.endpoints[0].meshed, "meshed, so the proxies speak HTTP/2 to each other");
        assert_eq!(cluster.endpoints[0].address, inbound);
        assert_eq!(config.gateway_listeners[0].virtual_hosts[0].domains, vec!["*".to_owned()]);
        trellis_server_config().expect("valid config");
    }

    #[test]
    fn the_haproxy_pair_speaks_h2_between_its_two_sides() {
        let (a, b, app) = (
            "127.0.0.2:8080".parse().expect("a"),
            "127.0.0.3:8080".parse().expect("b"),
            "127.0.0.4:8080".parse().expect("app"),
        );
        let client = haproxy_client_config(a, b, 2);
        assert!(client.contains("bind 127.0.0.2:8080\n"), "{client}");
        assert!(client.contains("server server_side 127.0.0.3:8080 proto h2"), "{client}");
        assert!(client.contains("nbthread 2"), "{client}");
        let server = haproxy_server_config(b, app, 1);
        assert!(server.contains("bind 127.0.0.3:8080 proto h2"), "{server}");
        assert!(server.contains("server app 127.0.0.4:8080\n"), "{server}");
    }
}
