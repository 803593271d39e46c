//! `trellis-webhook`: the sidecar injection webhook on its own (trellisd serves the same on 15017).
//! Serves `/inject`, `/healthz` and `/metrics` over HTTPS with a certificate reloaded from its files,
//! deciding with the Mesh read from `--mesh` (the defaults when absent). Prints
//! `trellis-webhook listening on ADDR` once it accepts connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use trellis_api::mesh::MeshSpec;
use trellis_webhook::review::StaticContext;
use trellis_webhook::server::{Webhook, serve_tls};
use trellis_webhook::tls::{DEFAULT_RELOAD_POLL, ReloadingCert};

/// What the binary prints on stdout once it listens.
pub const LISTENING_LINE: &str = "trellis-webhook listening on";
const DEFAULT_LISTEN: &str = "0.0.0.0:15017";
const DEFAULT_LOG: &str = "info";

/// The sidecar injection webhook (AdmissionReview v1 over HTTPS).
#[derive(Debug, Parser)]
#[command(name = "trellis-webhook", version, about)]
struct Args {
    #[arg(long, env = "TRELLIS_WEBHOOK_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Serving certificate chain (PEM, leaf first); reloaded when it changes.
    #[arg(long, env = "TRELLIS_WEBHOOK_CERT", value_name = "FILE")]
    cert: PathBuf,
    /// Private key of --cert (PEM).
    #[arg(long, env = "TRELLIS_WEBHOOK_KEY", value_name = "FILE")]
    key: PathBuf,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "TRELLIS_WEBHOOK_RELOAD_POLL", default_value = "2s", value_parser = parse_duration)]
    reload_poll: Duration,
    /// A `Mesh` object (or its spec) in YAML or JSON; the Mesh defaults when absent.
    #[arg(long, env = "TRELLIS_WEBHOOK_MESH", value_name = "FILE")]
    mesh: Option<PathBuf>,
    #[arg(long, env = "TRELLIS_LOG", default_value = DEFAULT_LOG)]
    log: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    trellis_api::duration::parse(text).map_err(|err| err.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("trellis-webhook: invalid value for --log: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("trellis-webhook: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let mesh = read_mesh(args.mesh.as_deref())?;
    let cert = ReloadingCert::load(&args.cert, &args.key).context("loading the serving certificate")?;
    let poll = if args.reload_poll.is_zero() { DEFAULT_RELOAD_POLL } else { args.reload_poll };
    tokio::spawn(cert.clone().watch(poll));
    let webhook = Webhook::new(Arc::new(StaticContext(Arc::new(mesh))));
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("the listening address")?;
    tracing::info!(address = %local, "serving the injection webhook");
    println!("{LISTENING_LINE} {local}");
    serve_tls(listener, cert, webhook.router(), shutdown_signal()).await;
    Ok(())
}

fn read_mesh(path: Option<&std::path::Path>) -> Result<MeshSpec> {
    let Some(path) = path else {
        return serde_json::from_value(json!({})).context("the default mesh settings");
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_saphyr::from_str(&text).with_context(|| format!("{}: not YAML", path.display()))?;
    let spec = if value.get("kind").and_then(Value::as_str) == Some("Mesh") {
        value.get("spec").cloned().unwrap_or_else(|| json!({}))
    } else {
        value
    };
    serde_json::from_value(spec).with_context(|| format!("{}: not a Mesh spec", path.display()))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
