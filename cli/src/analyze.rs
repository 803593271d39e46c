//! `trellis analyze`: reads files, folders and stdin, prints one line per problem.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use trellis_api::Severity;
use trellis_api::analyze::{self, Source};

/// Exit code when the input has no errors (warnings allowed).
pub const EXIT_OK: u8 = 0;
/// Exit code when at least one error was found.
pub const EXIT_ERRORS: u8 = 1;
/// Exit code when some input could not be read.
pub const EXIT_UNREADABLE: u8 = 2;
/// File extensions read from folders.
pub const YAML_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders to analyze (folders are read recursively: *.yaml, *.yml, *.json); `-` reads stdin.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Also a way to name files, as with `kubectl apply -f`.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Print only errors, not warnings.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let paths: Vec<&PathBuf> = args.paths.iter().chain(&args.files).collect();
    if paths.is_empty() {
        eprintln!("trellis analyze: no input; name files or folders, or `-` for stdin");
        return ExitCode::from(EXIT_UNREADABLE);
    }
    let mut sources = Vec::new();
    let mut unreadable = false;
    for path in paths {
        if let Err(err) = collect(path, &mut sources) {
            eprintln!("trellis analyze: {err:#}");
            unreadable = true;
        }
    }
    let report = analyze::analyze(&sources);
    let mut out = std::io::stdout().lock();
    for finding in report.findings.iter().filter(|f| !args.quiet || f.issue.severity == Severity::Error) {
        // A closed pipe (`| head`) is not an error of the analysis.
        if writeln!(out, "{finding}").is_err() {
            break;
        }
    }
    let errors = report.findings.iter().filter(|f| f.issue.severity == Severity::Error).count();
    let warnings = report.findings.len() - errors;
    eprintln!("{} file(s), {} object(s): {errors} error(s), {warnings} warning(s)", sources.len(), report.documents);
    if unreadable {
        ExitCode::from(EXIT_UNREADABLE)
    } else if errors > 0 {
        ExitCode::from(EXIT_ERRORS)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

fn collect(path: &Path, sources: &mut Vec<Source>) -> Result<()> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("reading stdin")?;
        sources.push(Source { name: "<stdin>".to_owned(), bytes });
        return Ok(());
    }
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read folder {}", path.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read folder {}", path.display()))?;
        entries.sort();
        for entry in entries {
            let is_yaml = entry.extension().and_then(|e| e.to_str()).is_some_and(|e| YAML_EXTENSIONS.contains(&e));
            if entry.is_dir() || is_yaml {
                collect(&entry, sources)?;
            }
        }
        return Ok(());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    sources.push(Source { name: path.display().to_string(), bytes });
    Ok(())
}
