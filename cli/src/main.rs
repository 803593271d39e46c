//! `trellis`, the Trellis command line. This crate is responsible for turning user commands into
//! calls of the library crates and their results into readable output and exit codes; the logic
//! itself lives in those crates (`trellis_api::analyze` for `analyze`).

mod analyze;
mod binaries;
mod demo;
mod explain;
mod inject;
mod proxy_status;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Trellis: an Istio-compatible service mesh.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Trellis and Istio YAML for errors without a cluster.
    Analyze(analyze::Args),
    /// Run the Istio tutorial's ordering app on this machine (local mode) and check what the tutorial shows.
    Demo(demo::Args),
    /// Show which virtual host, route, destinations and endpoints a request takes, offline from YAML.
    Explain(explain::Args),
    /// Add the sidecar to the Pods and pod templates of Kubernetes YAML (`-f FILE`, `-f -` for stdin).
    Inject(inject::Args),
    /// Local mode: run trellisd on a folder of YAML and print how to start a sidecar beside each process.
    Run(run::Args),
    /// List the proxies connected to trellisd and whether each runs the config it was last sent.
    ProxyStatus(proxy_status::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Inject(args) => inject::run(&args),
        Command::Run(args) => run::run(&args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
    }
}
