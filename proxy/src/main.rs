//! `trellis-proxy`: the binary. Parses flags, sets up logging and the runtime, and runs one mode:
//! `sidecar` (capture listeners), `gateway` (gateway ports), `init` (iptables rules) or `wait` (block
//! until the sidecar beside it is ready: the injected `postStart` hook). Its config comes from a file it
//! watches (`--config`) or from the control plane (`--discovery-address`).

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};
use trellis_api::proxy_config::{Node, ProxyMode};
use trellis_proxy::admin::{self, AdminState};
use trellis_proxy::drain::Drain;
use trellis_proxy::http::Side;
use trellis_proxy::metrics::Metrics;
use trellis_proxy::settings::{ServeArgs, Settings};
use trellis_proxy::state::{self, Store};
use trellis_proxy::tls::MeshTls;
use trellis_proxy::workers::{self, Common, ListenerKind, Workers};
use trellis_proxy::{discovery, identity, init, wait};

/// mimalloc: as fast as glibc's allocator on the request path, with less memory held per thread, and
/// the same allocator whichever libc the binary is linked with (the release build is static musl).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The static musl build takes its `memcpy`, `memmove`, `memset` and `memcmp` from trellis-fastmem:
// musl's copy every moved future and header with `rep movsq` and compare byte by byte.
use trellis_fastmem as _;

/// The Trellis proxy.
#[derive(Debug, Parser)]
#[command(name = "trellis-proxy", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run beside a workload: outbound capture, inbound capture, admin, readiness, metrics.
    Sidecar(ServeArgs),
    /// Run as an ingress or egress gateway on the ports its config lists.
    Gateway(ServeArgs),
    /// Write the iptables rules that send a pod's traffic through the sidecar, then exit.
    Init(init::InitArgs),
    /// Wait until the proxy's readiness endpoint answers 200, or fail after --timeout (the postStart
    /// hook that holds the app when native sidecars are off).
    Wait(wait::WaitArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Sidecar(args) => serve(&args, "sidecar"),
        Mode::Gateway(args) => serve(&args, "gateway"),
        Mode::Init(args) => init::run(&args).map_err(anyhow::Error::from),
        // The message already ends with its cause; `{:#}` of the chain would print it twice.
        Mode::Wait(args) => wait::run(&args).map_err(|err| anyhow::Error::msg(err.to_string())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("trellis-proxy: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs, mode: &'static str) -> Result<()> {
    let settings = Arc::new(args.settings(mode)?);
    let filter = EnvFilter::try_new(&args.log).with_context(|| format!("invalid value for --log: {:?}", args.log))?;
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry().with(filter).with(tracing_subscriber::fmt::layer().with_target(false)).init();
    let set_log_filter: admin::SetLogFilter = Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    // This thread runs the control side (config reloads, admin, signals, drain); the data path runs
    // on the workers (see `trellis_proxy::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(settings, set_log_filter))
}

async fn run(settings: Arc<Settings>, set_log_filter: admin::SetLogFilter) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::default());
    let drain = Drain::new();
    // Empty until a certificate source publishes an identity; until then the proxy speaks plaintext.
    let tls = Arc::new(MeshTls::default());
    follow_config(&settings, &store, &metrics, &drain);
    let identity = identity::start(&settings, drain.watch())?;
    tokio::spawn(tls.clone().follow(identity.clone()));
    let common = Common {
        store: store.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        tls: tls.clone(),
        drain: drain.watch(),
        identity: identity.clone(),
    };
    let workers = Workers::start(&common)?;
    if settings.mode == "gateway" {
        let mut bound = BTreeSet::new();
        bind_gateway_ports(&common, &workers, &mut bound);
        tokio::spawn(gateway_ports(common.clone(), workers, bound));
    } else {
        let ip = settings.listen_ip;
        for (port, side) in [(settings.outbound_port, Side::Outbound), (settings.inbound_port, Side::Inbound)] {
            for listener in workers::bind_all(ip, port)? {
                workers.serve(&listener, ListenerKind::Data(side))?;
            }
        }
        if let Some(addr) = settings.explicit_proxy_addr {
            workers.serve(&workers::bind(addr)?, ListenerKind::Explicit)?;
        }
    }
    // Readiness is served only once the data listeners are bound, so "ready" means "accepting".
    let admin_state = AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        drain: drain.clone(),
        set_log_filter,
        identity,
    };
    spawn_admin(&settings, admin_state)?;
    tracing::info!(mode = settings.mode, concurrency = settings.concurrency, "trellis-proxy started");
    let watch = drain.watch();
    tokio::select! {
        () = shutdown_signal() => drain.start(),
        () = watch.signaled() => {}
    }
    tracing::info!(open = drain.open_connections(), deadline = ?settings.drain_deadline, "draining");
    if !drain.wait_closed(settings.drain_deadline).await {
        tracing::warn!(open = drain.open_connections(), "drain deadline passed with connections open");
    }
    Ok(())
}

/// Keeps `store` up to date from the control plane or the config file, on this (control) thread. The
/// proxy is ready once a first config is serving.
fn follow_config(settings: &Settings, store: &Arc<Store>, metrics: &Arc<Metrics>, drain: &Drain) {
    if let Some(target) = settings.control_plane().ok().flatten() {
        let mode = if settings.mode == "gateway" { ProxyMode::Gateway } else { ProxyMode::Sidecar };
        let node = Node {
            id: settings.node_id.clone(),
            namespace: settings.namespace.clone(),
            service_account: settings.service_account.clone(),
            // The control plane computes the SPIFFE identity from the namespace and service account.
            identity: String::new(),
            labels: settings.labels.clone(),
        };
        let hello = discovery::hello(node, mode, settings.instance_ips.clone());
        tracing::info!(control_plane = %target, tls = target.uses_tls(), node = %settings.node_id, "following the control plane");
        let following = discovery::run(target, hello, store.clone(), metrics.clone(), drain.watch());
        tokio::spawn(async move {
            if let Err(err) = following.await {
                tracing::error!(error = %err, "cannot follow the control plane");
            }
        });
        return;
    }
    let Some(path) = settings.config.clone() else { return };
    if let Err(err) = store.load_file(&path, metrics) {
        tracing::warn!(error = %err, "no config yet; not ready until a valid one appears");
    }
    tokio::spawn(state::watch_file(path, settings.config_poll, store.clone(), metrics.clone(), drain.watch()));
}

/// Serves admin, readiness and metrics on this (control) thread, off the data path.
fn spawn_admin(settings: &Settings, state: AdminState) -> Result<()> {
    let bind = |addr: std::net::SocketAddr| -> Result<tokio::net::TcpListener> {
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true).with_context(|| format!("binding {addr}"))?;
        tokio::net::TcpListener::from_std(listener).with_context(|| format!("binding {addr}"))
    };
    let admin = bind(settings.admin_addr)?;
    let readiness = bind(settings.readiness_addr)?;
    let prometheus = bind(settings.prometheus_addr)?;
    tokio::spawn(admin::serve(admin, admin::admin_router(state.clone())));
    tokio::spawn(admin::serve(readiness, admin::readiness_router(state.clone())));
    tokio::spawn(admin::serve(prometheus, admin::prometheus_router(state)));
    Ok(())
}

/// Binds each gateway port the current config lists that is not bound yet.
fn bind_gateway_ports(common: &Common, workers: &Workers, bound: &mut BTreeSet<u16>) {
    let Some(current) = common.store.current() else { return };
    for &port in current.gateway.keys() {
        if bound.contains(&port) {
            continue;
        }
        let served = workers::bind_all(common.settings.listen_ip, port).and_then(|listeners| {
            listeners.iter().try_for_each(|listener| workers.serve(listener, ListenerKind::Data(Side::Gateway)))
        });
        match served {
            Ok(()) => {
                bound.insert(port);
                tracing::info!(port, "gateway listening");
            }
            Err(err) => tracing::warn!(error = %err, "cannot bind gateway port"),
        }
    }
}

/// Binds gateway ports as later configs add them.
async fn gateway_ports(common: Common, workers: Workers, mut bound: BTreeSet<u16>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(common.settings.config_poll) => {}
            () = common.drain.signaled() => break,
        }
        bind_gateway_ports(&common, &workers, &mut bound);
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
