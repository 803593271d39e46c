//! `trellisd`, the Trellis control plane binary: parses flags, starts one source (a folder of YAML in
//! local mode, or the Kubernetes API server), and serves the config push on 15012 with translate over
//! the source's index, until SIGTERM or Ctrl-C.
//!
//! Once it accepts connections it prints `trellisd listening on ADDR` on stdout (so `--listen
//! 127.0.0.1:0` works and `trellis run` knows when to go on); logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;
use trellis_api::mesh::{DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN, MeshSpec};
use trellis_controlplane::ca::{self, CaService, DEFAULT_CA_DIR_NAME};
use trellis_controlplane::jwks::{self, JwksCache};
use trellis_controlplane::push::tls::{ServingNames, ServingTls};
use trellis_controlplane::push::{self, PushServer};
use trellis_controlplane::sources::SharedIndex;
use trellis_controlplane::sources::folder::FolderSource;
use trellis_controlplane::sources::kubernetes::{self, KubernetesSource};
use trellis_controlplane::translated::TranslatedSource;

/// mimalloc: trellisd computes configs on many blocking threads, where glibc's per-thread arenas grow
/// the resident set (the control-plane bench: `make bench-controlplane`). The `system-allocator` feature
/// leaves it out, for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's purge delay in milliseconds: how long memory freed back to its page-sized pools stays
/// resident before it is returned to the system. mimalloc's default (10 ms, then 10 times that for
/// its arenas) kept what a change's computations freed resident across the next one; at 0 it is
/// returned at once (control-plane bench: see `bench/results/controlplane.md`).
pub const ALLOCATOR_PURGE_DELAY_MS: &str = "0";
/// The environment variable mimalloc reads [`ALLOCATOR_PURGE_DELAY_MS`] from (once, before `main`).
pub const ALLOCATOR_PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Address the config push listens on (Istio's istiod port).
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:15012";
/// Log filter at start (`tracing` env-filter syntax).
pub const DEFAULT_LOG: &str = "info";
/// How often the folder is checked for changed files (local mode).
pub const DEFAULT_FOLDER_POLL: &str = "200ms";
/// Environment variable of `--folder`.
pub const FOLDER_ENV: &str = "TRELLIS_FOLDER";
/// Environment variable of `--kubernetes`.
pub const KUBERNETES_ENV: &str = "TRELLIS_KUBERNETES";
/// Environment variable of `--listen`.
pub const LISTEN_ENV: &str = "TRELLIS_LISTEN";
/// Environment variable of `--root-namespace`.
pub const ROOT_NAMESPACE_ENV: &str = "TRELLIS_ROOT_NAMESPACE";
/// Environment variable of `--folder-poll`.
pub const FOLDER_POLL_ENV: &str = "TRELLIS_FOLDER_POLL";
/// Environment variable of `--log`.
pub const LOG_ENV: &str = "TRELLIS_LOG";
/// Environment variable of `--stop-on-stdin-close`.
pub const STOP_ON_STDIN_CLOSE_ENV: &str = "TRELLIS_STOP_ON_STDIN_CLOSE";
/// Environment variable of `--ca-dir`.
pub const CA_DIR_ENV: &str = "TRELLIS_CA_DIR";
/// Environment variable of `--trust-domain`.
pub const TRUST_DOMAIN_ENV: &str = "TRELLIS_TRUST_DOMAIN";
/// Environment variable of `--tls-san` (comma-separated).
pub const TLS_SAN_ENV: &str = "TRELLIS_TLS_SANS";
/// Environment variable of `--workload-cert-ttl`.
pub const WORKLOAD_CERT_TTL_ENV: &str = "TRELLIS_WORKLOAD_CERT_TTL";
/// Default of `--workload-cert-ttl` (the fixed 24 h of workload certificates).
pub const DEFAULT_WORKLOAD_CERT_TTL: &str = "24h";
/// Environment variable of `--disable-ca`.
pub const DISABLE_CA_ENV: &str = "TRELLIS_DISABLE_CA";
/// Environment variables of `--webhook-cert` and `--webhook-key`.
pub const WEBHOOK_CERT_ENV: &str = "TRELLIS_WEBHOOK_CERT";
pub const WEBHOOK_KEY_ENV: &str = "TRELLIS_WEBHOOK_KEY";
/// Address of the sidecar injection webhook, served when its certificate is given.
pub const WEBHOOK_LISTEN_ADDR: &str = "0.0.0.0:15017";
/// What trellisd prints on stdout, followed by the address, once it accepts connections.
pub const LISTENING_LINE: &str = "trellisd listening on";
/// Threads the runtime may start for blocking work beyond one per CPU (the push computes configs on
/// one blocking thread per CPU at a time; the folder scan and short blocking calls take the others).
/// tokio's default (512) let a burst of computations after a change start threads whose allocator
/// heaps then stayed resident: trellisd grew from 10 to 15 threads over the control-plane bench.
pub const EXTRA_BLOCKING_THREADS: usize = 2;
/// How long a stopping trellisd waits for proxies' streams to close.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(6);

/// trellisd: the Trellis control plane. Reads the mesh from a folder of YAML (local mode) or from
/// Kubernetes, and streams each proxy its config.
#[derive(Debug, Parser)]
#[command(name = "trellisd", version, about)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["folder", "kubernetes"])))]
struct Args {
    /// Local mode: read every *.yaml, *.yml and *.json under DIR (recursively), following changes.
    #[arg(long, env = FOLDER_ENV, value_name = "DIR")]
    folder: Option<PathBuf>,
    /// Watch the Kubernetes API server (in-cluster config, else the kubeconfig).
    #[arg(long, env = KUBERNETES_ENV)]
    kubernetes: bool,
    /// Address of the config push (HTTP/2) and of `GET /v1/proxies`.
    #[arg(long, env = LISTEN_ENV, default_value = DEFAULT_LISTEN_ADDR)]
    listen: SocketAddr,
    /// Namespace of mesh-wide policy while no `Mesh` object sets one (`istio-system` is always an alias).
    #[arg(long, env = ROOT_NAMESPACE_ENV, default_value = DEFAULT_ROOT_NAMESPACE, value_name = "NAMESPACE")]
    root_namespace: String,
    /// How often the folder is checked for changes (local mode).
    #[arg(long, env = FOLDER_POLL_ENV, default_value = DEFAULT_FOLDER_POLL, value_parser = parse_duration)]
    folder_poll: Duration,
    /// Log filter (`tracing` env-filter syntax: `info`, `debug`, `trellis_controlplane=debug`).
    #[arg(long, env = LOG_ENV, default_value = DEFAULT_LOG)]
    log: String,
    /// Also stop when standard input closes: a supervisor (`trellis run`) holds its other end, so
    /// trellisd never outlives it, however it ends.
    #[arg(long, env = STOP_ON_STDIN_CLOSE_ENV)]
    stop_on_stdin_close: bool,
    /// Local mode: the CA folder (root-cert.pem and root-key.pem, made if missing; tokens/ holds the
    /// workloads' bootstrap tokens). Default: `.trellis-ca` inside --folder.
    #[arg(long, env = CA_DIR_ENV, value_name = "DIR", conflicts_with = "kubernetes")]
    ca_dir: Option<PathBuf>,
    /// Trust domain of the workload certificates the CA issues (`spiffe://<trust domain>/ns/..`);
    /// default: the `Mesh`'s `trustDomain`, else `cluster.local`.
    #[arg(long, env = TRUST_DOMAIN_ENV, value_name = "DOMAIN")]
    trust_domain: Option<String>,
    /// More names or addresses for trellisd's push-port certificate (besides `localhost`, the
    /// loopback addresses, `trellisd.<root namespace>.svc[.cluster.local]` and a specific --listen
    /// address): the names proxies dial it by.
    #[arg(long = "tls-san", env = TLS_SAN_ENV, value_delimiter = ',', value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Longest lifetime of a workload certificate (proxies renew at half of it).
    #[arg(long, env = WORKLOAD_CERT_TTL_ENV, default_value = DEFAULT_WORKLOAD_CERT_TTL, value_parser = parse_duration)]
    workload_cert_ttl: Duration,
    /// Run no CA (`POST /v1/certificates` answers 404): for proxies given certificates as files.
    #[arg(long, env = DISABLE_CA_ENV)]
    disable_ca: bool,
    /// Serve the sidecar injection webhook on 15017 over HTTPS with this certificate (PEM, reloaded
    /// when it changes); off when absent.
    #[arg(long, env = WEBHOOK_CERT_ENV, value_name = "FILE", requires = "webhook_key")]
    webhook_cert: Option<PathBuf>,
    /// Private key of --webhook-cert (PEM).
    #[arg(long, env = WEBHOOK_KEY_ENV, value_name = "FILE", requires = "webhook_cert")]
    webhook_key: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = trellis_api::duration::parse(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

fn main() -> ExitCode {
    #[cfg(not(feature = "system-allocator"))]
    with_allocator_options();
    let args = Args::parse();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("trellisd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc reads its options from the environment before `main` runs (and setting them from Rust
/// takes `unsafe`): when [`ALLOCATOR_PURGE_DELAY_ENV`] is not set, trellisd runs itself again with it
/// set, in the same process (`exec`: the same pid, arguments and open files). An explicit setting in
/// the environment is kept. If the restart fails, trellisd goes on with mimalloc's default.
#[cfg(not(feature = "system-allocator"))]
fn with_allocator_options() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os(ALLOCATOR_PURGE_DELAY_ENV).is_some() {
        return;
    }
    let Ok(program) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    let err = command.args(args).env(ALLOCATOR_PURGE_DELAY_ENV, ALLOCATOR_PURGE_DELAY_MS).exec();
    eprintln!("trellisd: cannot restart with {ALLOCATOR_PURGE_DELAY_ENV}={ALLOCATOR_PURGE_DELAY_MS} ({err}); going on");
}

fn start(args: Args) -> Result<()> {
    let filter = EnvFilter::try_new(&args.log).with_context(|| format!("invalid value for --log: {:?}", args.log))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let mesh = default_mesh(&args.root_namespace)?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(cpus + EXTRA_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args, mesh))
}

/// The injection webhook decides with the index's Mesh and namespace labels.
struct IndexContext(SharedIndex);

impl trellis_webhook::review::Context for IndexContext {
    fn mesh(&self) -> Arc<MeshSpec> {
        let mesh = self.0.read().mesh().cloned();
        Arc::new(mesh.unwrap_or_else(|| serde_json::from_value(serde_json::json!({})).unwrap_or_default()))
    }

    fn namespace_labels(&self, namespace: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.0.read().namespace(namespace).map(|ns| ns.labels.clone())
    }
}

/// Serves the injection webhook on 15017 when `--webhook-cert` and `--webhook-key` are given.
async fn start_webhook(args: &Args, index: &SharedIndex) -> Result<()> {
    let (Some(cert), Some(key)) = (&args.webhook_cert, &args.webhook_key) else { return Ok(()) };
    let cert = trellis_webhook::tls::ReloadingCert::load(cert, key).context("loading the webhook certificate")?;
    tokio::spawn(cert.clone().watch(trellis_webhook::tls::DEFAULT_RELOAD_POLL));
    let listener =
        TcpListener::bind(WEBHOOK_LISTEN_ADDR).await.with_context(|| format!("binding {WEBHOOK_LISTEN_ADDR}"))?;
    let router = trellis_webhook::server::Webhook::new(Arc::new(IndexContext(index.clone()))).router();
    tokio::spawn(trellis_webhook::server::serve_tls(listener, cert, router, std::future::pending()));
    tracing::info!(address = WEBHOOK_LISTEN_ADDR, "serving the injection webhook");
    Ok(())
}

/// The mesh settings used while no `Mesh` object is given, when `--root-namespace` is not the default.
fn default_mesh(root_namespace: &str) -> Result<Option<MeshSpec>> {
    let valid = !root_namespace.is_empty()
        && root_namespace.len() <= 63
        && root_namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !root_namespace.starts_with('-')
        && !root_namespace.ends_with('-');
    if !valid {
        bail!("invalid value for --root-namespace: {root_namespace:?} is not a namespace name (RFC 1123 label)");
    }
    if root_namespace == DEFAULT_ROOT_NAMESPACE {
        return Ok(None);
    }
    // Through serde, so every other setting is the default a `Mesh` object without it would have.
    let spec = serde_json::from_value(serde_json::json!({ "rootNamespace": root_namespace }))
        .context("the default mesh settings")?;
    Ok(Some(spec))
}

async fn serve(args: Args, mesh: Option<MeshSpec>) -> Result<()> {
    let index = SharedIndex::default();
    if mesh.is_some() {
        index.update(|index| index.set_default_mesh(mesh));
    }
    let Some(source) = start_source(&args, &index).await? else {
        return Ok(());
    };
    start_webhook(&args, &index).await?;
    let trust_domain = trust_domain(&args, &index);
    let ca = start_ca(&args, &trust_domain).await?.map(Arc::new);
    let tls = match &ca {
        Some(ca) => {
            let names = ServingNames::for_namespace(&args.root_namespace, args.listen.ip(), &args.tls_sans);
            let tls = Arc::new(ServingTls::new(ca.clone(), &args.root_namespace, names).context("push port TLS")?);
            tracing::info!(spiffe_id = %tls.spiffe_id(), "push port serves TLS (plain text from loopback only)");
            tokio::spawn(tls.clone().keep_renewed());
            Some(tls)
        }
        None => None,
    };
    let options = push::Options { ca, tls, ..push::Options::default() };
    // Keys of every `jwksUri` are fetched here and pushed inside the configs: proxies never fetch.
    let jwks = JwksCache::new(jwks::Timing::default());
    let server = PushServer::new(Arc::new(TranslatedSource::with_jwks(index, jwks)), options);
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().with_context(|| format!("binding {}", args.listen))?;
    let serving = {
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener).await })
    };
    tracing::info!(address = %local, "serving the config push");
    println!("{LISTENING_LINE} {local}");
    if args.stop_on_stdin_close {
        let closed = stdin_closed();
        tokio::select! {
            () = shutdown_signal() => {}
            _ = closed => tracing::info!("standard input closed"),
        }
    } else {
        shutdown_signal().await;
    }
    tracing::info!("stopping: ending every proxy's stream (proxies keep their configs)");
    server.shutdown();
    let _ = serving.await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    while !server.statuses().proxies.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    source.abort();
    Ok(())
}

/// Starts the source the flags name, once it has read everything there is: the folder's first scan,
/// or every Kubernetes kind listed once. `None` when a signal came first.
async fn start_source(args: &Args, index: &SharedIndex) -> Result<Option<JoinHandle<()>>> {
    if let Some(dir) = &args.folder {
        let mut source = FolderSource::new(dir, index.clone());
        let (source, scan) = tokio::task::spawn_blocking(move || {
            let scan = source.scan();
            (source, scan)
        })
        .await
        .context("reading the folder")?;
        let scan = scan?;
        scan.log();
        tracing::info!(folder = %dir.display(), files = scan.files, objects = scan.objects, "local mode");
        return Ok(Some(tokio::spawn(source.run(args.folder_poll))));
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster config, else the kubeconfig)")?;
    let source = KubernetesSource::new(client, index.clone(), kubernetes::Options::default());
    let mut synced = source.synced();
    let running = tokio::spawn(source.run());
    tracing::info!("listing every watched kind before serving");
    tokio::select! {
        result = synced.wait_for(|synced| *synced) => {
            result.context("the Kubernetes source stopped")?;
        }
        () = shutdown_signal() => {
            running.abort();
            return Ok(None);
        }
    }
    tracing::info!(objects = index.read().len(), "Kubernetes listed");
    Ok(Some(running))
}

/// The trust domain: `--trust-domain`, else the `Mesh`'s (read once at start), else the default.
fn trust_domain(args: &Args, index: &SharedIndex) -> String {
    if let Some(domain) = &args.trust_domain {
        return domain.clone();
    }
    let from_mesh = index.read().mesh().map(|mesh| mesh.trust_domain.clone()).filter(|d| !d.is_empty());
    from_mesh.unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned())
}

/// The mesh CA the flags ask for: kept in a folder in local mode, in the Secret `trellis-ca` of the
/// root namespace in Kubernetes mode.
async fn start_ca(args: &Args, domain: &str) -> Result<Option<CaService>> {
    if args.disable_ca {
        return Ok(None);
    }
    let ttl = args.workload_cert_ttl;
    let ca = match (&args.ca_dir, &args.folder) {
        (Some(dir), _) => local_ca(dir, domain, ttl)?,
        (None, Some(folder)) => local_ca(&folder.join(DEFAULT_CA_DIR_NAME), domain, ttl)?,
        (None, None) => {
            let client = kube::Client::try_default().await.context("connecting to Kubernetes for the CA")?;
            let ca = CaService::kubernetes(client.clone(), &args.root_namespace, domain, ttl).await.context(
                "starting the mesh CA (it needs get and create on Secrets in the root namespace and create on \
                 TokenReviews; --disable-ca runs without it)",
            )?;
            // The trust bundle in every namespace, for as long as trellisd runs.
            tokio::spawn(ca::bundle::publish(client, ca.authority().roots_pem().to_owned()));
            ca
        }
    };
    tracing::info!(trust_domain = domain, ttl = ?ttl, "mesh CA serving POST /v1/certificates");
    Ok(Some(ca))
}

fn local_ca(dir: &std::path::Path, domain: &str, ttl: Duration) -> Result<CaService> {
    CaService::local(dir, domain, ttl).with_context(|| {
        format!(
            "starting the mesh CA in {} (--ca-dir names another folder; --disable-ca runs without it)",
            dir.display()
        )
    })
}

/// Completes once standard input reaches its end. Read on a thread of its own: a blocking read on the
/// runtime's pool would hold up its shutdown while the input stays open.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (closed, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buffer = [0u8; 256];
        while let Ok(1..) = std::io::Read::read(&mut input, &mut buffer) {}
        let _ = closed.send(());
    });
    receiver
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops trellisd");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_or_kubernetes_must_be_named_and_not_both() {
        let err = Args::try_parse_from(["trellisd"]).expect_err("no source");
        assert!(err.to_string().contains("--folder"), "{err}");
        let err = Args::try_parse_from(["trellisd", "--folder", "x", "--kubernetes"]).expect_err("two sources");
        assert!(err.to_string().contains("cannot be used with"), "{err}");
        let args = Args::try_parse_from(["trellisd", "--folder", "mesh"]).expect("a folder");
        assert_eq!(args.listen, DEFAULT_LISTEN_ADDR.parse::<SocketAddr>().expect("an address"));
        assert_eq!(args.root_namespace, DEFAULT_ROOT_NAMESPACE);
        assert_eq!(args.folder_poll, trellis_controlplane::sources::folder::DEFAULT_POLL_INTERVAL);
        assert_eq!((args.trust_domain, args.ca_dir, args.disable_ca), (None, None, false));
        assert_eq!(args.workload_cert_ttl, trellis_controlplane::ca::DEFAULT_WORKLOAD_CERT_TTL);
    }

    #[test]
    fn a_root_namespace_other_than_the_default_becomes_the_default_mesh() {
        assert_eq!(default_mesh(DEFAULT_ROOT_NAMESPACE).expect("valid"), None);
        let mesh = default_mesh("mesh-root").expect("valid").expect("not the default");
        assert_eq!(mesh.root_namespace, "mesh-root");
        assert_eq!(mesh.trust_domain, trellis_api::mesh::DEFAULT_TRUST_DOMAIN, "the rest keeps a Mesh's defaults");
        for bad in ["", "Mesh", "-x", "a_b", &"x".repeat(64)] {
            let err = default_mesh(bad).expect_err("not a namespace").to_string();
            assert!(err.starts_with("invalid value for --root-namespace"), "{err}");
        }
    }

    #[test]
    fn a_poll_interval_must_be_a_positive_duration() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
