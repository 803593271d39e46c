//! `trellis demo`: the Istio tutorial's ordering app on this machine, without Kubernetes or root. It
//! starts `trellisd` in local mode on a fresh folder, the ordering apps (booking, inventory, shipping v1
//! and v2) each with a sidecar, and an ingress gateway; applies `examples/tutorial/` step by step; drives
//! traffic through the gateway and reports what a user would check (the route, the 90/10 split, circuit
//! breaking, mTLS, JWT, metrics). Then it keeps the mesh running with a live one-line summary until
//! Ctrl-C, or with `--once` exits 0 only if every check of an enforced feature passed (circuit breaking
//! is shown but skipped until the proxy enforces it).
//!
//! Security as in a cluster: `trellisd` runs the mesh CA, the demo mints a bootstrap token per identity
//! (`<folder>/.trellis-ca/tokens/`) and hands each proxy its own (`--ca-token-file`), and waits until every
//! proxy holds a certificate; from step 05 on sidecars refuse plain text. Step 06 needs the keys of the
//! tutorial's JWT issuer, which the tutorial fetches from GitHub: the demo makes a key of its own, serves
//! its key set on the subnet's `.101:8080`, points the step's `jwksUri` there and signs the token it books
//! with (`--jwt` gives one instead and keeps GitHub's `jwksUri`), so it runs offline.
//!
//! The other binaries are found next to `trellis` (then on `PATH`), so `target/release/trellis demo`
//! works from any directory; every process the demo starts is stopped when it ends, fails or is
//! interrupted. Modules: [`plan`] (addresses, flags, identities, local-mode YAML), [`steps`] (the
//! tutorial files and their adaptations, sync state), [`checks`] and [`report`] (pure verdicts and
//! text), [`issuer`] (the demo's JWT key, key set and tokens), [`client`], [`procs`], [`script`] and
//! [`live`] (the I/O).

mod checks;
mod client;
mod issuer;
mod live;
mod plan;
mod procs;
mod report;
mod script;
mod steps;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::process::ExitCode;

use script::Demo;

/// Bookings the split check sends by default.
pub const DEFAULT_SPLIT_REQUESTS: usize = 500;
/// Bookings per second in live mode by default.
pub const DEFAULT_LIVE_RPS: u32 = 20;
/// Exit code when the user interrupted the script (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when the demo could not start (a binary missing, an address taken).
pub const EXIT_CANNOT_START: u8 = 2;

/// Flags of `trellis demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run the script once and exit: 0 when every check passed (skipped checks do not count), 1 when
    /// one failed.
    #[arg(long)]
    pub once: bool,
    /// The loopback /24 the demo's processes bind, one address each.
    #[arg(long, env = "TRELLIS_DEMO_SUBNET", default_value = plan::DEFAULT_SUBNET, value_parser = parse_subnet)]
    pub subnet: plan::Subnet,
    /// Bookings sent to measure the shipping split.
    #[arg(long, env = "TRELLIS_DEMO_REQUESTS", default_value_t = DEFAULT_SPLIT_REQUESTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub requests: usize,
    /// Bookings per second through the gateway in live mode.
    #[arg(long, env = "TRELLIS_DEMO_RPS", default_value_t = DEFAULT_LIVE_RPS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rps: u32,
    /// Folder with the tutorial's files (01-order-service.yaml ...); by default the copy built into trellis.
    #[arg(long, value_name = "DIR")]
    pub tutorial: Option<PathBuf>,
    /// Folder holding trellisd, trellis-proxy and trellis-ordering; by default next to trellis, then PATH.
    #[arg(long, env = "TRELLIS_DEMO_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// A JWT of the tutorial's issuer, for the allowed case of step 06 and for live traffic. By default
    /// the demo signs one with a key of its own and points step 06's jwksUri at that key's set; with
    /// this flag the tutorial's jwksUri (on GitHub) is kept, so it needs the network.
    #[arg(long, env = "TRELLIS_DEMO_JWT", value_name = "TOKEN")]
    pub jwt: Option<String>,
}

fn parse_subnet(text: &str) -> Result<plan::Subnet, String> {
    text.parse()
}

/// Runs `trellis demo`.
pub fn run(args: &Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("trellis demo: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_CANNOT_START);
        }
    };
    runtime.block_on(run_async(args))
}

async fn run_async(args: &Args) -> ExitCode {
    let mut demo = match Demo::prepare(args) {
        Ok(demo) => demo,
        Err(err) => {
            eprintln!("trellis demo: {err:#}");
            return ExitCode::from(EXIT_CANNOT_START);
        }
    };
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    let scripted = tokio::select! {
        result = demo.script() => Some(result),
        () = &mut interrupted => None,
    };
    let passed = match scripted {
        None => {
            println!("\ntrellis demo: interrupted; stopping every process it started");
            demo.finish(false).await;
            return ExitCode::from(EXIT_INTERRUPTED);
        }
        Some(Err(err)) => {
            eprintln!("trellis demo: {err:#}");
            demo.finish(true).await;
            return ExitCode::FAILURE;
        }
        Some(Ok(())) => {
            println!("\n{}", report::report(&demo.checks));
            report::all_passed(&demo.checks)
        }
    };
    let mut failed = !passed;
    if !args.once {
        tokio::select! {
            result = demo.live(args.rps) => if let Err(err) = result {
                eprintln!("\ntrellis demo: {err:#}");
                failed = true;
            },
            () = &mut interrupted => println!("\ntrellis demo: stopping every process it started"),
        }
    }
    demo.finish(failed).await;
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Completes on Ctrl-C, SIGTERM or SIGHUP.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();
    async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = next(&mut term) => {}
        () = next(&mut hangup) => {}
    }
}
