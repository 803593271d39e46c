//! `trellis-proxy`: the binary. Parses flags, sets up logging and the runtime, and runs one mode:
//! `sidecar` (capture listeners), `gateway` (gateway ports) or `init` (iptables rules).

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};
use trellis_proxy::admin::{self, AdminState};
use trellis_proxy::drain::Drain;
use trellis_proxy::http::{Clients, Shared, Side};
use trellis_proxy::metrics::Metrics;
use trellis_proxy::settings::{ServeArgs, Settings};
use trellis_proxy::state::{self, Store};
use trellis_proxy::{init, listener};

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Sidecar(args) => serve(&args, "sidecar"),
        Mode::Gateway(args) => serve(&args, "gateway"),
        Mode::Init(args) => init::run(&args).map_err(anyhow::Error::from),
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.concurrency)
        .thread_name("trellis-data")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(settings, set_log_filter))
}

async fn run(settings: Arc<Settings>, set_log_filter: admin::SetLogFilter) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::default());
    let drain = Drain::new();
    if let Err(err) = store.load_file(&settings.config, &metrics) {
        tracing::warn!(error = %err, "no config yet; not ready until a valid one appears");
    }
    tokio::spawn(state::watch_file(
        settings.config.clone(),
        settings.config_poll,
        store.clone(),
        metrics.clone(),
        drain.watch(),
    ));
    let admin_state = AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        drain: drain.clone(),
        set_log_filter,
    };
    let shared = Shared {
        store: store.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        clients: Clients::new(settings.pool_idle_timeout),
        drain: drain.watch(),
    };
    if settings.mode == "gateway" {
        let mut bound = BTreeSet::new();
        bind_gateway_ports(&shared, &mut bound).await;
        tokio::spawn(gateway_ports(shared.clone(), bound));
    } else {
        let ip = settings.listen_ip;
        let outbound = listener::bind((ip, settings.outbound_port).into()).await?;
        let inbound = listener::bind((ip, settings.inbound_port).into()).await?;
        tokio::spawn(listener::serve(shared.clone(), outbound, Side::Outbound));
        tokio::spawn(listener::serve(shared.clone(), inbound, Side::Inbound));
        if let Some(addr) = settings.explicit_proxy_addr {
            let explicit = listener::bind(addr).await?;
            tokio::spawn(listener::serve_explicit(shared.clone(), explicit));
        }
    }
    // Readiness is served only once the data listeners are bound, so "ready" means "accepting".
    spawn_admin(&settings, admin_state).await?;
    tracing::info!(mode = settings.mode, "trellis-proxy started");
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

/// Serves admin, readiness and metrics on a thread of their own, off the data path.
async fn spawn_admin(settings: &Settings, state: AdminState) -> Result<()> {
    let admin = std::net::TcpListener::bind(settings.admin_addr)
        .with_context(|| format!("binding admin {}", settings.admin_addr))?;
    let readiness = std::net::TcpListener::bind(settings.readiness_addr)
        .with_context(|| format!("binding readiness {}", settings.readiness_addr))?;
    let prometheus = std::net::TcpListener::bind(settings.prometheus_addr)
        .with_context(|| format!("binding prometheus {}", settings.prometheus_addr))?;
    for listener in [&admin, &readiness, &prometheus] {
        listener.set_nonblocking(true).context("admin listener")?;
    }
    std::thread::Builder::new()
        .name("trellis-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(error = %err, "admin runtime failed to start");
                    return;
                }
            };
            runtime.block_on(async move {
                let listeners = (
                    tokio::net::TcpListener::from_std(admin),
                    tokio::net::TcpListener::from_std(readiness),
                    tokio::net::TcpListener::from_std(prometheus),
                );
                let (Ok(admin), Ok(readiness), Ok(prometheus)) = listeners else {
                    tracing::error!("admin listeners could not be registered");
                    return;
                };
                tokio::join!(
                    admin::serve(admin, admin::admin_router(state.clone())),
                    admin::serve(readiness, admin::readiness_router(state.clone())),
                    admin::serve(prometheus, admin::prometheus_router(state)),
                );
            });
        })
        .context("starting the admin thread")?;
    Ok(())
}

/// Binds each gateway port the current config lists that is not bound yet.
async fn bind_gateway_ports(shared: &Shared, bound: &mut BTreeSet<u16>) {
    let Some(current) = shared.store.current() else { return };
    for &port in current.gateway.keys() {
        if bound.contains(&port) {
            continue;
        }
        match listener::bind((shared.settings.listen_ip, port).into()).await {
            Ok(l) => {
                bound.insert(port);
                tracing::info!(port, "gateway listening");
                tokio::spawn(listener::serve(shared.clone(), l, Side::Gateway));
            }
            Err(err) => tracing::warn!(error = %err, "cannot bind gateway port"),
        }
    }
}

/// Binds gateway ports as later configs add them.
async fn gateway_ports(shared: Shared, mut bound: BTreeSet<u16>) {
    let watch = shared.drain.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(shared.settings.config_poll) => {}
            () = watch.signaled() => return,
        }
        bind_gateway_ports(&shared, &mut bound).await;
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
