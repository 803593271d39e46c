//! `trellis`, the Trellis command line. This crate is responsible for turning user commands into
//! calls of the library crates and their results into readable output and exit codes; the logic
//! itself lives in those crates (`trellis_api::analyze` for `analyze`).

mod analyze;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
    }
}
