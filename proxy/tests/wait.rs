//! `trellis-proxy wait` for real: the process the injector runs as the proxy container's `postStart`
//! hook, against a real `trellis-proxy sidecar` on its own loopback IP. It must keep waiting while
//! nothing listens and while the sidecar answers 503 (no config yet), exit 0 once the sidecar is ready,
//! and exit non-zero with a clear message when the timeout passes first.

mod support;

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{http_get, sidecar_config, unique_ip, write_config};

/// Bound on anything that should happen promptly, generous for a loaded 2-core machine.
const PROMPT: Duration = Duration::from_secs(30);
/// The readiness port `wait` and the sidecar agree on in these tests (the default 15021, on a test IP).
const READINESS_PORT: u16 = 15021;

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        self.0.try_wait().expect("poll the child").is_none()
    }

    /// Waits (bounded) for the exit; its status and the moment it was seen.
    fn exit_within(&mut self, limit: Duration) -> Option<(ExitStatus, Instant)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("poll the child") {
                return Some((status, Instant::now()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Everything the (exited) process wrote on stderr.
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            stderr.read_to_string(&mut text).expect("read stderr");
        }
        text
    }
}

/// Starts `trellis-proxy wait` against `ip`'s readiness port.
fn start_wait(ip: IpAddr, period: &str, timeout: &str) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .arg("wait")
        .args(["--readiness-addr", &SocketAddr::new(ip, READINESS_PORT).to_string()])
        .args(["--period", period, "--timeout", timeout])
        .env_remove("TRELLIS_READINESS_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trellis-proxy wait");
    Running(child)
}

/// Starts `trellis-proxy sidecar` in local mode on `ip`, following `config`, which need not exist yet:
/// until it does the sidecar answers 503 on its readiness port.
fn start_sidecar(ip: IpAddr, config: &Path) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .arg("sidecar")
        .arg("--config")
        .arg(config)
        .args(["--listen-ip", &ip.to_string()])
        .args(["--admin-addr", &format!("{ip}:15000")])
        .args(["--readiness-addr", &format!("{ip}:{READINESS_PORT}")])
        .args(["--prometheus-addr", &format!("{ip}:15090")])
        .args(["--config-poll", "50ms", "--drain-deadline", "1s"])
        .env("TRELLIS_LOG", std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn trellis-proxy sidecar");
    Running(child)
}

/// Polls `ip`'s readiness endpoint until it answers `status` (bounded by [`PROMPT`]).
fn await_readiness_status(ip: IpAddr, status: u16) {
    let deadline = Instant::now() + PROMPT;
    while Instant::now() < deadline {
        if http_get(SocketAddr::new(ip, READINESS_PORT), "/healthz/ready").is_some_and(|(s, _)| s == status) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the sidecar on {ip} never answered {status} on /healthz/ready");
}

/// Lets `wait` poll for `span` and checks it is still waiting.
fn still_waiting_after(wait: &mut Running, span: Duration, phase: &str) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        if !wait.running() {
            let status = wait.0.try_wait().expect("poll the child");
            panic!("wait exited {phase}: {status:?}; stderr: {}", wait.stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wait_exits_zero_only_after_the_sidecar_beside_it_becomes_ready() {
    let ip = unique_ip();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    let mut wait = start_wait(ip, "100ms", "60s");

    // Nothing listens on the readiness port yet: connections are refused, wait keeps trying.
    still_waiting_after(&mut wait, Duration::from_secs(1), "while nothing listened");

    // The sidecar listens but has no config: 503, and wait keeps trying.
    let _sidecar = start_sidecar(ip, &config);
    await_readiness_status(ip, 503);
    still_waiting_after(&mut wait, Duration::from_secs(1), "while the sidecar answered 503");

    // The config appears: the sidecar turns ready and wait returns 0 soon after.
    let written = Instant::now();
    write_config(&config, &sidecar_config("app", Vec::new(), Vec::new()));
    let (status, exited) = wait.exit_within(PROMPT).expect("wait exits once the sidecar is ready");
    let stderr = wait.stderr();
    assert!(status.success(), "wait failed: {status}; stderr: {stderr}");
    assert_eq!(http_get(SocketAddr::new(ip, READINESS_PORT), "/healthz/ready").map(|(s, _)| s), Some(200));
    let url = format!("http://{ip}:{READINESS_PORT}/healthz/ready");
    assert!(stderr.contains(&format!("ready at {url}")), "{stderr}");
    // About 2 s of refused connections and 503s at 100 ms: many attempts before the 200.
    let attempts: u32 = stderr
        .split(" attempts)")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in {stderr:?}"));
    assert!(attempts >= 10, "only {attempts} attempts before ready: {stderr}");
    let latency = exited.duration_since(written);
    eprintln!("wait: {attempts} attempts; exit {latency:?} after the config was written");
    assert!(latency < Duration::from_secs(10), "wait took {latency:?} to notice readiness");
}

#[test]
fn wait_exits_non_zero_after_its_timeout_when_nothing_ever_listens() {
    let ip = unique_ip();
    let started = Instant::now();
    let mut wait = start_wait(ip, "100ms", "2s");
    let (status, exited) = wait.exit_within(PROMPT).expect("wait gives up after its timeout");
    let stderr = wait.stderr();
    let took = exited.duration_since(started);
    eprintln!("wait gave up after {took:?}: {stderr}");
    assert!(!status.success(), "wait succeeded with nothing listening: {stderr}");
    assert!(took >= Duration::from_secs(2), "wait gave up before its 2s timeout: {took:?}");
    assert!(took < Duration::from_secs(15), "wait took {took:?} to give up after a 2s timeout");
    let url = format!("http://{ip}:{READINESS_PORT}/healthz/ready");
    assert!(stderr.contains(&url) && stderr.contains("not ready after 2s"), "{stderr}");
    assert!(stderr.contains("connecting"), "the last failure is named: {stderr}");
}

#[test]
fn wait_exits_non_zero_after_its_timeout_when_the_sidecar_never_gets_a_config() {
    let ip = unique_ip();
    let dir = tempfile::tempdir().expect("tempdir");
    let _sidecar = start_sidecar(ip, &dir.path().join("never-written.json"));
    await_readiness_status(ip, 503);
    let started = Instant::now();
    let mut wait = start_wait(ip, "100ms", "2s");
    let (status, exited) = wait.exit_within(PROMPT).expect("wait gives up after its timeout");
    let stderr = wait.stderr();
    let took = exited.duration_since(started);
    assert!(!status.success(), "wait succeeded against a sidecar that is not ready: {stderr}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(15), "gave up after {took:?}");
    assert!(stderr.contains("503"), "the last answer is named: {stderr}");
}

#[test]
fn a_bad_flag_value_is_refused_naming_the_flag() {
    // Each refused at once (a readiness address that nobody serves would otherwise wait 5 s).
    for (flag, value) in [("--timeout", "soon"), ("--period", "0s"), ("--readiness-addr", "localhost")] {
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"));
        command.args(["wait", flag, value]).env_remove("TRELLIS_READINESS_ADDR");
        if flag != "--timeout" {
            command.args(["--timeout", "5s"]);
        }
        let output = command.output().expect("run trellis-proxy wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("invalid value"), "{flag} {value}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(4), "{flag} {value}: not refused at once");
    }
}
