//! `trellis-ordering`: the Istio tutorial's online ordering app as one small binary, so the tutorial
//! can run on Trellis without pulling its images. Each process plays one role, chosen by `--role`:
//!
//! - `booking` (`booking-service`, port 8080): `GET` or `POST /api/v1/booking` asks inventory and
//!   shipping at once and answers JSON with its own service and version and both answers (status,
//!   version, body). A dependency that gives no answer or a non-2xx one makes booking answer 503 with
//!   `failed: ["inventory"]` and an `error` saying why. Query parameters prefixed `inventory_` or
//!   `shipping_` go to that dependency without the prefix; tracing and identity headers
//!   (`x-request-id`, `x-b3-*`, `b3`, `traceparent`, `tracestate`, `end-user`, `authorization`, ...)
//!   are propagated.
//! - `inventory` (`inventory-service`, port 80): `/api/v1/inventory`.
//! - `shipping` (`shipping-service`, port 80): `/api/v1/shipping`.
//!
//! Inventory and shipping answer `{"service": "inventory", "version": "v1", ...}` and can be made slow
//! or failing per request: `delay_ms=N` (sleep, at most 60000), `fail=1` (answer 503), `status=S`
//! (fail with S, 400 to 599), `fail_percent=P` (fail P% of requests). So
//! `/api/v1/booking?inventory_delay_ms=500&inventory_fail_percent=50` makes inventory slow and flaky.
//!
//! Every role serves `GET /healthz`, and every response carries `x-ordering-service` and
//! `x-ordering-version`. Booking's outbound requests honour `HTTP_PROXY`/`http_proxy` (absolute-form
//! requests to that proxy, which is how local mode routes the app through its sidecar without root)
//! and `NO_PROXY`/`no_proxy`. The process prints `trellis-ordering ROLE VERSION listening on ADDR` on
//! stdout once it accepts connections, and drains on SIGTERM or SIGINT.

mod booking;
mod client;
mod faults;
mod headers;
mod outbound;
mod server;
mod settings;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::client::Client;
use crate::outbound::ProxyEnv;
use crate::server::App;
use crate::settings::{Args, DRAIN_DEADLINE, ENV_HOSTNAME, Settings};

fn main() -> ExitCode {
    let args = Args::parse();
    match start(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("trellis-ordering: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: &Args) -> Result<()> {
    let settings = args.settings(std::env::var(ENV_HOSTNAME).ok())?;
    let proxy = ProxyEnv::from_vars(|name| std::env::var(name).ok())?;
    let filter = EnvFilter::try_new(&args.log).with_context(|| format!("--log: invalid filter {:?}", args.log))?;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(settings, proxy))
}

async fn run(settings: Settings, proxy: ProxyEnv) -> Result<()> {
    let listener = TcpListener::bind(settings.listen).await.with_context(|| format!("--listen {}", settings.listen))?;
    let local = listener.local_addr().context("reading the listening address")?;
    if let Some((host, port)) = &proxy.proxy {
        tracing::info!(proxy = %format!("{host}:{port}"), "outbound requests go through HTTP_PROXY");
    }
    let (role, version) = (settings.role.name(), settings.version.as_str());
    let app = Arc::new(App { client: Client::new(proxy, settings.upstream_timeout), settings });
    // Signal handlers are in place before anyone is told the app is up.
    let mut signals = Signals::new()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(async move {
        let mut stopped = stopped;
        axum::serve(listener, server::router(app))
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "trellis-ordering {role} {version} listening on {local}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    tracing::info!(role, version, %local, "listening");
    tokio::select! {
        result = &mut server => return result.context("server task")?.context("serving"),
        () = signals.recv() => {}
    }
    tracing::info!("draining");
    let _ = stop.send(true);
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(result) => result.context("server task")?.context("serving"),
        Err(_) => {
            tracing::warn!(deadline = ?DRAIN_DEADLINE, "requests still running at the drain deadline; leaving them");
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT, listened for from creation on.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Waits for either signal.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
