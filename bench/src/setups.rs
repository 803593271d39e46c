//! The processes of each setup: the app, `trellis-proxy` pairs and HAProxy pairs, their
//! configurations, and a handle that kills a process when it drops (so an error or a panic in the
//! driver leaves nothing running).
//!
//! Every pair is the same two hops:
//! ```text
//!  oha ──h1──> client proxy ──h2 (multiplexed; TLS 1.3 in the TLS pairs)──> server proxy ──h1──> app
//! ```
//! Trellis: the client proxy is `trellis-proxy gateway` whose port routes every host to a cluster
//! with one `meshed: true` endpoint, the server proxy's inbound listener (`:15006`), under Istio's
//! default retry policy (what `trellisd` gives a route whose VirtualService sets no `retries`); the server proxy
//! is `trellis-proxy sidecar --inbound-target APP`, as in local mode. In the mTLS pair both proxies
//! have a mesh identity (`--tls-cert/--tls-key/--tls-roots`), the client's cluster is `istioMutual`
//! with the app's SPIFFE ID on the endpoint, and the server's inbound is STRICT for every port, so a
//! plaintext hop would be refused. HAProxy: the client side's backend is `proto h2` with
//! `http-reuse always`, the server side binds `proto h2`; in the TLS pair both sides present a
//! certificate and verify the other's against the same root (`verify required`).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;
use trellis_api::proxy_config::{INBOUND_CATCH_ALL_PORT, ProxyConfig, RetryPolicy};

use crate::pki::{self, PkiFiles};

/// Port that traffic enters a setup on (the app's port too).
pub const ENTRY_PORT: u16 = 8080;
/// The server-side Trellis proxy's inbound capture port (Istio's 15006).
pub const INBOUND_PORT: u16 = trellis_api::ports::INBOUND;
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

/// A command running `program`, confined to `cpu` when given with `taskset` (which execs the
/// program, so the child's pid is the program's).
pub fn pinned(program: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Process {
    /// Spawns `command` with output to `log`, pinned to `cpu` when given (with `taskset`, which
    /// execs the program, so the pid is the program's).
    pub fn spawn(name: &str, program: &Path, args: &[String], cpu: Option<usize>, log: PathBuf) -> Result<Process> {
        let mut command = pinned(program, cpu);
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    Trellis,
    Haproxy,
    /// The Trellis pair with mutual TLS between the proxies.
    TrellisMtls,
    /// The HAProxy pair with mutual TLS between its sides.
    HaproxyTls,
    /// The plain Trellis pair with every resilience feature configured but not firing.
    TrellisResilient,
}

impl Kind {
    /// Every setup, in the order they take turns.
    pub const ALL: [Kind; 6] =
        [Kind::Direct, Kind::Trellis, Kind::Haproxy, Kind::TrellisMtls, Kind::HaproxyTls, Kind::TrellisResilient];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Trellis => "Trellis pair",
            Kind::Haproxy => "HAProxy pair",
            Kind::TrellisMtls => "Trellis mTLS pair",
            Kind::HaproxyTls => "HAProxy TLS pair",
            Kind::TrellisResilient => "Trellis pair, resilience on",
        }
    }

    /// A file-name-friendly name (also what `trellis-bench --setups` takes).
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Trellis => "trellis",
            Kind::Haproxy => "haproxy",
            Kind::TrellisMtls => "trellis-mtls",
            Kind::HaproxyTls => "haproxy-tls",
            Kind::TrellisResilient => "trellis-resilient",
        }
    }

    /// The setup named `slug` (see [`Kind::slug`]).
    pub fn from_slug(slug: &str) -> Result<Kind> {
        let known = || Kind::ALL.map(Kind::slug).join(", ");
        Kind::ALL
            .into_iter()
            .find(|k| k.slug() == slug)
            .with_context(|| format!("unknown setup {slug:?} (known: {})", known()))
    }

    /// Whether the hop between the pair's proxies is mutual TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Kind::TrellisMtls | Kind::HaproxyTls)
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

/// Starts the app on `addr` (pinned to `cpu` when given) and waits until it answers.
pub fn start_app(program: &Path, addr: SocketAddr, threads: usize, cpu: Option<usize>, dir: &Path) -> Result<Process> {
    ensure_free(addr)?;
    let args = vec!["--listen".to_owned(), addr.to_string(), "--threads".to_owned(), threads.to_string()];
    let mut app = Process::spawn("app", program, &args, cpu, dir.join("app.log"))?;
    wait_for_200(addr, &mut [&mut app])?;
    Ok(app)
}

/// The client proxy's config: a gateway port whose routes send every host to the server proxy's
/// inbound listener, marked meshed so the hop between the proxies is multiplexed HTTP/2. With
/// `server_identity`, the hop is mesh mutual TLS (`istioMutual`: never plain text) and the server
/// must present that SPIFFE ID; without, it is plain text.
pub fn trellis_client_config(server_inbound: SocketAddr, server_identity: Option<&str>) -> Result<ProxyConfig> {
    checked(client_config_value(server_inbound, server_identity))
}

/// [`trellis_client_config`] with every resilience setting of the route and the cluster configured
/// but not firing: a route timeout, retries, a fault delay and abort on 0% of requests, a mirror of
/// 0% (to a second cluster), a connection pool with limits far above the load, outlier detection.
/// (The server side adds a local rate limit: [`trellis_resilient_server_config`].)
pub fn trellis_resilient_client_config(server_inbound: SocketAddr, mirror: SocketAddr) -> Result<ProxyConfig> {
    let mut value = client_config_value(server_inbound, None);
    let route = &mut value["gatewayListeners"][0]["virtualHosts"][0]["routes"][0];
    route["timeout"] = json!("15s");
    route["retries"] = json!({"attempts": 2, "perTryTimeout": "5s", "retryOn": ["5xx", "connect-failure", "reset"]});
    route["fault"] = json!({
        "delay": {"fixedDelay": "1s", "percentage": 0.0},
        "abort": {"httpStatus": 503, "percentage": 0.0}
    });
    route["mirrors"] = json!([{"cluster": "outbound|8080||mirror.bench.svc.cluster.local", "percentage": 0.0}]);
    let cluster = &mut value["clusters"][0];
    cluster["connectionPool"] = json!({
        "maxConnections": 100_000, "maxPendingRequests": 100_000, "maxRequests": 100_000, "maxRetries": 1_000
    });
    cluster["outlierDetection"] = json!({
        "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 100
    });
    let Some(clusters) = value["clusters"].as_array_mut() else { bail!("the bench config has no clusters") };
    clusters.push(json!({
        "name": "outbound|8080||mirror.bench.svc.cluster.local",
        "service": "mirror.bench.svc.cluster.local",
        "port": ENTRY_PORT,
        "protocol": "http",
        "endpoints": [{"address": mirror}],
        "tls": "disable"
    }));
    checked(value)
}

fn client_config_value(server_inbound: SocketAddr, server_identity: Option<&str>) -> serde_json::Value {
    let cluster = "outbound|8080||app.bench.svc.cluster.local";
    let (tls, identity) = match server_identity {
        Some(identity) => ("istioMutual", identity),
        None => ("disable", ""),
    };
    json!({
        "schema": trellis_api::proxy_config::PROXY_CONFIG_SCHEMA,
        "version": "bench-1",
        "node": {
            "id": "client.bench",
            "namespace": "bench",
            "serviceAccount": "client",
            "identity": pki::spiffe_id(pki::CLIENT_SERVICE_ACCOUNT)
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
                    "action": {"forward": {"clusters": [{"cluster": cluster, "weight": 1}]}},
                    // What trellisd gives every route whose VirtualService sets no `retries`.
                    "retries": RetryPolicy::istio_default()
                }]
            }]
        }],
        "clusters": [{
            "name": cluster,
            "service": "app.bench.svc.cluster.local",
            "port": ENTRY_PORT,
            "protocol": "http",
            "endpoints": [{"address": server_inbound, "meshed": true, "identity": identity}],
            "tls": tls
        }]
    })
}

/// The server proxy's config: a sidecar with no outbound routes; its inbound listener forwards to
/// `--inbound-target`. With `strict_mtls`, every inbound port (the catch-all listener) is STRICT:
/// only mesh mutual TLS is served. Without, no inbound listener is declared (PERMISSIVE, and with no
/// certificate that means plain text).
pub fn trellis_server_config(strict_mtls: bool) -> Result<ProxyConfig> {
    checked(server_config_value(strict_mtls))
}

/// [`trellis_server_config`] in plain text with a local rate limit on every inbound port that the
/// load never reaches (a million requests per second): the inbound side of "resilience on".
pub fn trellis_resilient_server_config() -> Result<ProxyConfig> {
    let mut value = server_config_value(false);
    value["inbound"] = json!([{
        "port": INBOUND_CATCH_ALL_PORT,
        "mtls": "permissive",
        "rateLimits": [{
            "policy": "bench/never-reached",
            "rule": 0,
            "maxTokens": 1_000_000,
            "tokensPerFill": 1_000_000,
            "fillInterval": "1s",
            "statusCode": 429
        }]
    }]);
    checked(value)
}

fn server_config_value(strict_mtls: bool) -> serde_json::Value {
    let mut value = json!({
        "schema": trellis_api::proxy_config::PROXY_CONFIG_SCHEMA,
        "version": "bench-1",
        "node": {
            "id": "app.bench",
            "namespace": "bench",
            "serviceAccount": "app",
            "identity": pki::spiffe_id(pki::APP_SERVICE_ACCOUNT)
        },
        "mode": "sidecar"
    });
    if strict_mtls {
        value["inbound"] = json!([{"port": INBOUND_CATCH_ALL_PORT, "mtls": "strict"}]);
    }
    value
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
/// With `tls`, the proxies get the client and app identities and speak mutual TLS to each other
/// (checked: the server refuses a plaintext request). With `resilient` (plain text only), the
/// client's route and cluster carry every resilience setting, none firing.
pub fn start_trellis(
    program: &Path,
    dir: &Path,
    (client_ip, server_ip): (IpAddr, IpAddr),
    app: SocketAddr,
    options: PairOptions,
    tls: Option<&PkiFiles>,
    resilient: bool,
) -> Result<Pair> {
    let kind = match (tls, resilient) {
        (Some(_), _) => Kind::TrellisMtls,
        (None, true) => Kind::TrellisResilient,
        (None, false) => Kind::Trellis,
    };
    let slug = kind.slug();
    let server_config = dir.join(format!("{slug}-server.json"));
    let client_config = dir.join(format!("{slug}-client.json"));
    let server = match kind {
        Kind::TrellisResilient => trellis_resilient_server_config()?,
        _ => trellis_server_config(tls.is_some())?,
    };
    std::fs::write(&server_config, serde_json::to_vec_pretty(&server)?)?;
    let inbound = SocketAddr::new(server_ip, INBOUND_PORT);
    let app_identity = pki::spiffe_id(pki::APP_SERVICE_ACCOUNT);
    let server_identity = tls.map(|_| app_identity.as_str());
    let client = match kind {
        // The mirror's cluster points at the app too; at 0% it never gets a request.
        Kind::TrellisResilient => trellis_resilient_client_config(inbound, app)?,
        _ => trellis_client_config(inbound, server_identity)?,
    };
    std::fs::write(&client_config, serde_json::to_vec_pretty(&client)?)?;
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
    let mut client_args = args("gateway", &client_config, client_ip);
    if let Some(files) = tls {
        server_args.extend(files.app.trellis_flags(&files.roots));
        client_args.extend(files.client.trellis_flags(&files.roots));
    }
    let (client_cpu, server_cpu) = options.pin.unzip();
    let log = |side: &str| dir.join(format!("{slug}-{side}.log"));
    let name = |side: &str| format!("{} {side} proxy", kind.label());
    let server = Process::spawn(&name("server"), program, &server_args, server_cpu, log("server"))?;
    let client = Process::spawn(&name("client"), program, &client_args, client_cpu, log("client"))?;
    let mut pair = Pair { kind, entry: SocketAddr::new(client_ip, ENTRY_PORT), client, server };
    wait_for_200(pair.entry, &mut [&mut pair.client, &mut pair.server])?;
    if tls.is_some() {
        refuses_plaintext(kind, inbound)?;
    }
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

/// The files one side of the HAProxy TLS pair presents and trusts.
#[derive(Debug, Clone, Copy)]
pub struct HaproxyTls<'a> {
    /// The mesh root both sides verify the other's certificate against.
    pub roots: &'a Path,
    /// This side's certificate and key in one PEM file.
    pub bundle: &'a Path,
}

impl HaproxyTls<'_> {
    /// TLS settings shared by the client's `server` and the server's `bind` line: this side's
    /// certificate, the peer's verified against the root (HAProxy checks the chain only; it cannot
    /// match a URI SAN), TLS 1.3 as between Trellis proxies, HTTP/2 by ALPN.
    fn settings(&self) -> String {
        format!(
            "ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3 alpn h2",
            self.bundle.display(),
            self.roots.display()
        )
    }
}

/// HAProxy client side: HTTP/1.1 in on `bind`, multiplexed HTTP/2 out to `server_side`, in clear
/// text, or over TLS with `tls`.
pub fn haproxy_client_config(
    bind: SocketAddr,
    server_side: SocketAddr,
    threads: usize,
    tls: Option<HaproxyTls<'_>>,
) -> String {
    let tls = tls.map_or(String::new(), |tls| format!(" {}", tls.settings()));
    format!(
        "{}frontend client_in\n    bind {bind}\n    default_backend to_server_side\n\n\
         backend to_server_side\n    http-reuse always\n    server server_side {server_side} proto h2{tls}\n",
        haproxy_common(threads)
    )
}

/// HAProxy server side: HTTP/2 in on `bind` (clear text, or TLS with `tls`), HTTP/1.1 keep-alive out
/// to the app.
pub fn haproxy_server_config(bind: SocketAddr, app: SocketAddr, threads: usize, tls: Option<HaproxyTls<'_>>) -> String {
    let tls = tls.map_or(String::new(), |tls| format!(" {}", tls.settings()));
    format!(
        "{}frontend server_in\n    bind {bind} proto h2{tls}\n    default_backend app\n\n\
         backend app\n    http-reuse safe\n    server app {app}\n",
        haproxy_common(threads)
    )
}

/// Starts an HAProxy pair: client side on `client_ip:8080`, server side on `server_ip:8080`. With
/// `tls`, the sides speak mutual TLS to each other with the client and app certificates (checked:
/// the server side refuses a plaintext request).
pub fn start_haproxy(
    program: &Path,
    dir: &Path,
    (client_ip, server_ip): (IpAddr, IpAddr),
    app: SocketAddr,
    options: PairOptions,
    tls: Option<&PkiFiles>,
) -> Result<Pair> {
    let kind = if tls.is_some() { Kind::HaproxyTls } else { Kind::Haproxy };
    let slug = kind.slug();
    let entry = SocketAddr::new(client_ip, ENTRY_PORT);
    let server_side = SocketAddr::new(server_ip, ENTRY_PORT);
    let server_config = dir.join(format!("{slug}-server.cfg"));
    let client_config = dir.join(format!("{slug}-client.cfg"));
    let client_tls = tls.map(|f| HaproxyTls { roots: &f.roots, bundle: &f.client.bundle });
    let server_tls = tls.map(|f| HaproxyTls { roots: &f.roots, bundle: &f.app.bundle });
    std::fs::write(&server_config, haproxy_server_config(server_side, app, options.threads, server_tls))?;
    std::fs::write(&client_config, haproxy_client_config(entry, server_side, options.threads, client_tls))?;
    // -db: stay in the foreground, no master process, so the pid is the one serving process.
    let args = |config: &Path| vec!["-db".to_owned(), "-f".to_owned(), config.display().to_string()];
    let (client_cpu, server_cpu) = options.pin.unzip();
    let log = |side: &str| dir.join(format!("{slug}-{side}.log"));
    let name = |side: &str| format!("{} {side} side", kind.label());
    let server = Process::spawn(&name("server"), program, &args(&server_config), server_cpu, log("server"))?;
    let client = Process::spawn(&name("client"), program, &args(&client_config), client_cpu, log("client"))?;
    let mut pair = Pair { kind, entry, client, server };
    wait_for_200(pair.entry, &mut [&mut pair.client, &mut pair.server])?;
    if tls.is_some() {
        refuses_plaintext(kind, server_side)?;
    }
    Ok(pair)
}

/// Fails unless a plaintext request straight to `server_side` goes unanswered: the proof that the
/// 200 through a TLS pair crossed its middle hop encrypted.
fn refuses_plaintext(kind: Kind, server_side: SocketAddr) -> Result<()> {
    let status = http_status(server_side);
    ensure!(
        status.is_none(),
        "the {}'s server side answered a plaintext request with {status:?}: the hop is not mutual TLS only",
        kind.label()
    );
    Ok(())
}

/// How often a starting process is checked on.
const START_POLL: Duration = Duration::from_millis(50);

/// Waits until a GET to `addr` answers 200, failing early if one of `processes` exits.
pub fn wait_for_200(addr: SocketAddr, processes: &mut [&mut Process]) -> Result<()> {
    wait_until(
        processes,
        START_TIMEOUT,
        START_POLL,
        || http_status(addr) == Some(200),
        || format!("nothing answered 200 on {addr}"),
    )
}

/// Waits until `addr` accepts a connection (closed at once), failing early if one of `processes`
/// exits.
pub fn wait_for_listener(addr: SocketAddr, processes: &mut [&mut Process]) -> Result<()> {
    wait_until(
        processes,
        START_TIMEOUT,
        START_POLL,
        || TcpStream::connect(addr).is_ok(),
        || format!("nothing listened on {addr}"),
    )
}

/// Polls `ready` every `poll` until it holds, for at most `timeout`, failing early if one of
/// `processes` exits; `what` says what did not happen.
pub fn wait_until(
    processes: &mut [&mut Process],
    timeout: Duration,
    poll: Duration,
    mut ready: impl FnMut() -> bool,
    what: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for process in processes.iter_mut() {
            process.check_running()?;
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} within {timeout:?}", what());
        }
        std::thread::sleep(poll);
    }
}

/// Fails when something already listens on `addr` (a process left from an earlier run would
/// otherwise answer in place of the one the bench starts, which cannot bind).
pub fn ensure_free(addr: SocketAddr) -> Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(err) => bail!("{addr} is taken ({err}): is a process from an earlier run still listening there?"),
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
mod tests;
