//! The demo's child processes: finding the binaries (next to `trellis`, then on `PATH`), starting each
//! with its output in a log file, noticing one that died, and stopping every one of them on the way out
//! (each is also killed if its handle is dropped, so an early return or a panic leaves none behind).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::binaries;
use anyhow::{Context as _, Result, bail};

use super::plan::{Binary, Launch, PROXY_VARIABLES};

/// Lines of a log shown when its process died or a check failed.
pub const LOG_TAIL_LINES: usize = 12;
/// How long a stopped process may take to be reaped.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where each binary the demo runs lives.
#[derive(Debug, Clone)]
pub struct Binaries {
    paths: Vec<(Binary, PathBuf)>,
}

impl Binaries {
    /// Finds every binary: in `dir` when given, else next to the running executable, then on `PATH`.
    pub fn find(dir: Option<&Path>) -> Result<Binaries> {
        let search: Vec<PathBuf> = match dir {
            Some(dir) => vec![dir.to_owned()],
            None => binaries::search_dirs(),
        };
        let mut paths = Vec::new();
        let mut missing = Vec::new();
        for binary in Binary::ALL {
            match binaries::locate(binary.file_name(), &search) {
                Some(path) => paths.push((binary, path)),
                None => missing.push(binary),
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|b| b.file_name()).collect();
            let packages: Vec<String> = missing.iter().map(|b| format!("-p {}", b.package())).collect();
            let searched: Vec<String> = search.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "cannot find {} (searched {}); build {} with `cargo build --release {}` or run `make demo`",
                names.join(", "),
                if searched.is_empty() { "nowhere: no PATH".to_owned() } else { searched.join(", ") },
                if missing.len() == 1 { "it" } else { "them" },
                packages.join(" ")
            );
        }
        Ok(Binaries { paths })
    }

    pub fn path(&self, binary: Binary) -> &Path {
        self.paths.iter().find(|(b, _)| *b == binary).map_or(Path::new(binary.file_name()), |(_, p)| p)
    }

    /// The folders the binaries came from, for the banner.
    pub fn folders(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.paths.iter().filter_map(|(_, p)| p.parent()).map(|p| p.display().to_string()).collect();
        out.dedup();
        out
    }
}

/// One started process.
#[derive(Debug)]
struct Running {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

/// Every process the demo started.
#[derive(Debug)]
pub struct Supervisor {
    binaries: Binaries,
    logs: PathBuf,
    running: Vec<Running>,
}

impl Supervisor {
    /// A supervisor starting `binaries`, writing one log per process into `logs`.
    pub fn new(binaries: Binaries, logs: PathBuf) -> Result<Supervisor> {
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        Ok(Supervisor { binaries, logs, running: Vec::new() })
    }

    /// Starts `launch`, its stdout and stderr going to `<logs>/<name>.log`.
    pub fn start(&mut self, launch: &Launch) -> Result<()> {
        let log = self.logs.join(format!("{}.log", launch.name.replace(' ', "-")));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("opening {}", log.display()))?;
        let program = self.binaries.path(launch.binary);
        let mut command = tokio::process::Command::new(program);
        command.args(&launch.args).stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
        // Its own process group: a Ctrl-C in the terminal reaches the demo, which stops every child itself.
        command.process_group(0);
        for name in PROXY_VARIABLES {
            command.env_remove(name);
        }
        // Logs go to files: no colour codes in them.
        command.env("NO_COLOR", "1");
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().with_context(|| format!("starting {} ({})", launch.name, program.display()))?;
        self.running.push(Running { name: launch.name.clone(), child, log });
        Ok(())
    }

    /// Fails, naming the process and showing the end of its log, if any started process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for running in &mut self.running {
            if let Ok(Some(status)) = running.child.try_wait() {
                bail!(
                    "{} exited ({status}); the end of its log ({}):\n{}",
                    running.name,
                    running.log.display(),
                    tail(&running.log, LOG_TAIL_LINES)
                );
            }
        }
        Ok(())
    }

    /// The end of every process's log, for a failed run.
    pub fn tails(&self) -> String {
        self.running
            .iter()
            .map(|r| format!("--- {} ({})\n{}", r.name, r.log.display(), tail(&r.log, LOG_TAIL_LINES)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many processes are running.
    pub fn count(&self) -> usize {
        self.running.len()
    }

    /// Kills every process (the newest first, so nothing reconnects to what is gone) and reaps it.
    pub async fn stop_all(&mut self) {
        for running in self.running.iter_mut().rev() {
            let _ = running.child.start_kill();
        }
        for mut running in self.running.drain(..).rev() {
            if tokio::time::timeout(STOP_TIMEOUT, running.child.wait()).await.is_err() {
                eprintln!("trellis demo: {} did not stop within {} s", running.name, STOP_TIMEOUT.as_secs());
            }
        }
    }
}

/// The last `lines` lines of the file at `path` (or why it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() { "(empty)".to_owned() } else { all[start..].join("\n") }
        }
        Err(err) => format!("(cannot read: {err})"),
    }
}
