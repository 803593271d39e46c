//! `trellis run -f DIR`: local mode. Starts `trellisd` on the folder (found next to `trellis`, then on
//! `PATH`), waits until it accepts proxies, prints how to start a sidecar beside each workload of the
//! folder ([`plan`]), and keeps `trellisd` running until Ctrl-C. Changes to the folder apply while it
//! runs; `trellis proxy-status` shows which proxies follow it.

mod plan;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use trellis_controlplane::ca::{self, DEFAULT_CA_DIR_NAME};
use trellis_controlplane::sources::SharedIndex;
use trellis_controlplane::sources::folder::FolderSource;

/// Where `trellisd` listens unless `--listen` says otherwise: loopback only, as local mode needs.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:15012";
/// Environment variable of `--listen`.
pub const LISTEN_ENV: &str = "TRELLIS_RUN_LISTEN";
/// The control plane's program name.
pub const TRELLISD: &str = "trellisd";
/// The proxy's program name.
pub const PROXY: &str = "trellis-proxy";
/// What `trellisd` prints on stdout, before its address, once it accepts proxies.
pub const LISTENING_LINE: &str = "trellisd listening on";
/// How long `trellisd` may take to read the folder and listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `trellisd` may take to stop gracefully (it ends every proxy's stream) before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Exit code when `trellisd` stopped by itself (it failed).
pub const EXIT_CONTROL_PLANE_FAILED: u8 = 1;
/// Exit code when local mode could not start (no folder, no `trellisd`, an address taken).
pub const EXIT_CANNOT_START: u8 = 2;

/// Flags of `trellis run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder of YAML trellisd serves: ServiceEntries and WorkloadEntries (one per local process, on
    /// its own loopback address) and Istio policy. Read recursively; changes apply while it runs.
    #[arg(short = 'f', long = "filename", value_name = "DIR")]
    pub folder: PathBuf,
    /// Address of trellisd's config push, which the proxies connect to.
    #[arg(long, env = LISTEN_ENV, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

/// Runs `trellis run`.
pub fn run(args: &Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("trellis run: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_CANNOT_START);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("trellis run: {err:#}");
            ExitCode::from(EXIT_CANNOT_START)
        }
    }
}

async fn serve(args: &Args) -> Result<ExitCode> {
    if !args.folder.is_dir() {
        bail!("{} is not a folder (-f names the folder of the mesh's YAML)", args.folder.display());
    }
    let trellisd = crate::binaries::find(TRELLISD).ok_or_else(|| {
        anyhow!(
            "cannot find {TRELLISD} next to {} or on PATH; build it with `cargo build -p trellis-controlplane --bin \
             {TRELLISD}`",
            std::env::current_exe().map_or_else(|_| "trellis".to_owned(), |p| p.display().to_string())
        )
    })?;
    let proxy = crate::binaries::find(PROXY).map_or_else(|| PROXY.to_owned(), |path| path.display().to_string());
    let mut child = Command::new(&trellisd)
        .arg("--folder")
        .arg(&args.folder)
        .args(["--listen", &args.listen.to_string(), "--stop-on-stdin-close"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", trellisd.display()))?;
    // trellisd stops when this end closes: on Ctrl-C, and however trellis itself ends.
    let lifeline = child.stdin.take();
    let listening = match tokio::time::timeout(START_TIMEOUT, listening(&mut child)).await {
        Ok(result) => result?,
        Err(_) => bail!("{TRELLISD} did not listen within {} s", START_TIMEOUT.as_secs()),
    };
    let control_plane = connectable(listening);
    let folder = args.folder.clone();
    let index = tokio::task::spawn_blocking(move || {
        let index = SharedIndex::default();
        FolderSource::new(&folder, index.clone()).scan().map(|_| index)
    })
    .await
    .context("reading the folder")??;
    // trellisd's CA keeps its root and the workloads' bootstrap tokens in the folder (git-ignored).
    let ca_dir = args.folder.join(DEFAULT_CA_DIR_NAME);
    let launches = plan::plan(&index.read(), control_plane, &proxy, Some(&ca_dir));
    for (identity, _) in launches.iter().filter_map(|launch| launch.token.as_ref()) {
        ca::mint_token(&ca_dir, identity).with_context(|| format!("minting the bootstrap token of {identity:?}"))?;
    }
    println!(
        "trellisd serves the mesh in {} on {control_plane} (local mode: edits to the folder apply while it runs).\n\
         Proxy status: trellis proxy-status --control-plane {control_plane}\n\
         Ctrl-C stops trellisd; proxies keep their last config until it is back.\n",
        args.folder.display()
    );
    print!("{}", plan::render(&launches));
    tokio::select! {
        status = child.wait() => {
            let status = status.context("waiting for trellisd")?;
            eprintln!("trellis run: {TRELLISD} stopped by itself ({status}); see its log above");
            Ok(ExitCode::from(EXIT_CONTROL_PLANE_FAILED))
        }
        () = interrupted() => {
            drop(lifeline);
            stop(&mut child).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits for `trellisd`'s listening line and returns its address; its later output is copied to ours.
async fn listening(child: &mut Child) -> Result<SocketAddr> {
    let stdout = child.stdout.take().context("trellisd's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::select! {
        line = lines.next_line() => line.context("reading trellisd's output")?,
        status = child.wait() => bail!("{TRELLISD} stopped before listening ({}); see its log above",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())),
    };
    let Some(line) = line else { bail!("{TRELLISD} closed its output before listening; see its log above") };
    let address = line
        .strip_prefix(LISTENING_LINE)
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| anyhow!("unexpected first line from {TRELLISD}: {line:?}"))?;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
    });
    Ok(address)
}

/// The address proxies on this machine use for a listener bound to `address` (the unspecified address
/// is reached through loopback).
pub fn connectable(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port())),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port())),
        other => other,
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Waits for `trellisd` to stop (its input closed, and a terminal's Ctrl-C reaches it too), then kills it.
async fn stop(child: &mut Child) {
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    eprintln!("trellis run: {TRELLISD} stopped");
}
