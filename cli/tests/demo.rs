//! `trellis demo` end to end, as CI and users run it: the real `trellis` binary starts the real
//! `trellisd`, `trellis-proxy` and `trellis-ordering` binaries found next to it, drives the tutorial, and
//! must leave no process behind, whether it ends on its own (`--once`) or on Ctrl-C.
//!
//! The sibling binaries are built into the same target folder first, by `trellis-test-support` with
//! the tests' own cargo command, so `cargo test --workspace` works from a clean clone. Each test uses its own
//! loopback /24, so the tests, and a demo a developer is running, do not collide.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one demo run may take with debug binaries on a busy machine.
const PATIENCE: Duration = Duration::from_secs(240);

/// The `trellis` binary under test.
fn trellis() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trellis"))
}

/// Builds `trellisd`, `trellis-proxy` and `trellis-ordering` next to `trellis` (once per test binary).
fn build_siblings() {
    let dir = trellis().parent().expect("trellis lives in a folder").to_owned();
    for name in ["trellisd", "trellis-proxy", "trellis-ordering"] {
        let built = trellis_test_support::workspace_binary(name);
        assert_eq!(built.parent(), Some(dir.as_path()), "{name} is built next to trellis");
    }
}

/// A loopback /24 of its own for each demo of this test run: 127.88.x.0/24.
fn unique_subnet() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
    format!("127.88.{}.0/24", (std::process::id() * 4 + n) % 250 + 1)
}

/// Processes whose command line names `subnet`'s addresses (what the demo started and left running).
fn leftovers(subnet: &str) -> Vec<String> {
    let prefix = subnet.trim_end_matches("0/24");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|line| line.contains(prefix) && !line.contains(" demo "))
        .collect()
}

/// Waits until no process of `subnet` is left, failing after a few seconds with what remains.
fn assert_cleaned_up(subnet: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(subnet);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the demo left processes running: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `trellis demo` whose stdout arrives line by line.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut command = Command::new(trellis());
        command.arg("demo").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TRELLIS_DEMO_") {
                command.env_remove(name);
            }
        }
        // Started from another directory: the demo must not depend on the current one.
        command.current_dir(std::env::temp_dir());
        let mut child = command.spawn().expect("trellis demo starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Demo { child, lines, stdout: String::new(), stderr: Some(stderr) }
    }

    /// Reads stdout until a line contains `text`; panics with the output so far after [`PATIENCE`].
    fn wait_for_line(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!("never printed {text:?}; stdout so far:\n{}", self.stdout);
    }

    /// Waits for the demo to exit; returns its status, stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting works") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the demo did not finish within {} s; stdout so far:\n{}", PATIENCE.as_secs(), self.stdout);
            }
            while let Ok(line) = self.lines.try_recv() {
                self.stdout.push_str(&line);
                self.stdout.push('\n');
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        (status, std::mem::take(&mut self.stdout), stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_enforced_checks_passed(stdout: &str, stderr: &str) {
    let enforced = [
        "PASS  discovery",
        "PASS  route",
        "PASS  split",
        "PASS  circuit breaking",
        "PASS  mTLS",
        "PASS  JWT",
        "PASS  metrics",
    ];
    for check in enforced {
        assert!(stdout.contains(check), "no {check:?} in the report\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
    assert!(stdout.contains(" passed, 0 failed"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("FAIL  "), "stdout:\n{stdout}\nstderr:\n{stderr}");
}

#[test]
fn the_demo_runs_the_tutorial_once_passes_every_enforced_check_and_leaves_nothing_running() {
    build_siblings();
    let subnet = unique_subnet();
    let demo = Demo::start(&["--once", "--subnet", &subnet]);
    let (status, stdout, stderr) = demo.finish();
    assert!(status.success(), "exit {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_enforced_checks_passed(&stdout, &stderr);
    for step in ["01-order-service.yaml", "03-shipping-split.yaml", "06-require-jwt.yaml"] {
        assert!(stdout.contains(step), "the progress names step {step}:\n{stdout}");
    }
    assert!(stdout.contains("shipping v1 "), "the split is reported:\n{stdout}");
    assert!(!stdout.contains("Try it"), "--once does not go live:\n{stdout}");
    assert_cleaned_up(&subnet);
}

#[test]
fn ctrl_c_in_live_mode_stops_every_process_the_demo_started() {
    build_siblings();
    let subnet = unique_subnet();
    let mut demo = Demo::start(&["--subnet", &subnet, "--requests", "200"]);
    demo.wait_for_line("Try it while the demo runs");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!leftovers(&subnet).is_empty(), "the mesh runs while the demo is live");
    let pid = demo.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let (status, stdout, stderr) = demo.finish();
    assert!(status.success(), "exit {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_enforced_checks_passed(&stdout, &stderr);
    assert!(stdout.contains("stopping every process it started"), "{stdout}");
    assert_cleaned_up(&subnet);
}

#[test]
fn a_missing_binary_is_named_with_the_command_that_builds_it() {
    let empty = tempfile::tempdir().expect("tempdir");
    let output =
        Command::new(trellis()).args(["demo", "--once", "--bin-dir"]).arg(empty.path()).output().expect("trellis runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot find trellisd, trellis-proxy, trellis-ordering"), "{stderr}");
    assert!(stderr.contains("make demo"), "{stderr}");
    assert!(Path::new(&empty.path()).read_dir().expect("readable").next().is_none(), "nothing written there");
}
