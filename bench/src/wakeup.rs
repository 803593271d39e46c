//! The wake-up probe: what this machine charges a process for being woken by a message and
//! answering it, measured in the same run as the proxies so that their CPU and latency at the
//! target rate can be read next to it.
//!
//! Two plain processes (`trellis-bench-echo`, blocking sockets, no runtime, no parsing) ping-pong
//! a 1 KiB message over loopback TCP at the target rate: the pinger sends at each tick and waits for
//! the echo. Per message, the echo server is woken once, reads once, writes once and wakes one other
//! process. A proxy is woken twice per request (by the request and by the response), reads and
//! writes each, and wakes the process on the other side each time. The probe runs with both
//! processes on one CPU, on different CPUs and unpinned, because on a virtual machine a process
//! woken on a vCPU that was idle can be charged far more than the work itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::procstat;
use crate::setups::Process;

/// Messages per second: the rate the CPU and latency targets are stated at.
pub const PROBE_RATE: u32 = crate::report::TARGET_RATE;
/// Messages measured per placement.
pub const PROBE_MESSAGES: usize = 5000;
/// Messages sent (and discarded) before each measured run.
pub const PROBE_WARMUP_MESSAGES: usize = 500;
/// Size of each message, as the bench's responses.
pub const PROBE_MESSAGE_BYTES: usize = 1024;
/// Taken off `q x n` before rounding a percentile's rank up, against float error.
const RANK_ROUNDING: f64 = 1e-9;

/// What the pinger prints: round-trip percentiles and its own CPU time per message.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PingOutcome {
    pub messages: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub cpu_us_per_message: f64,
}

impl PingOutcome {
    /// Percentiles (nearest rank) of `round_trips`, which it sorts, and `cpu_ns` spread over them.
    pub fn from_round_trips(round_trips: &mut [Duration], cpu_ns: u64) -> Self {
        round_trips.sort_unstable();
        let n = round_trips.len();
        let at = |q: f64| {
            // Less a hair, so that a rank the float product overshoots (0.999 x 1000) stays exact.
            let rank = ((q * n as f64 - RANK_ROUNDING).ceil() as usize).clamp(1, n.max(1));
            round_trips.get(rank - 1).map_or(0.0, |d| d.as_nanos() as f64 / 1e3)
        };
        PingOutcome {
            messages: n,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            cpu_us_per_message: if n == 0 { 0.0 } else { cpu_ns as f64 / 1e3 / n as f64 },
        }
    }
}

/// Where the two processes run: CPUs for the echo server and the pinger, `None` unpinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub label: &'static str,
    pub echo_cpu: Option<usize>,
    pub ping_cpu: Option<usize>,
}

/// Both processes on CPU 0: the echo server is woken on a vCPU the pinger keeps busy.
pub const SAME_CPU: Placement = Placement { label: "same CPU", echo_cpu: Some(0), ping_cpu: Some(0) };
/// The echo server on CPU 0, the pinger on CPU 1: every message wakes a vCPU that was idle.
pub const DIFFERENT_CPUS: Placement = Placement { label: "different CPUs", echo_cpu: Some(0), ping_cpu: Some(1) };
/// Wherever the scheduler puts them.
pub const UNPINNED: Placement = Placement { label: "unpinned", echo_cpu: None, ping_cpu: None };
/// The placements probed, in order: the two extremes, then the scheduler's choice.
pub const PLACEMENTS: [Placement; 3] = [SAME_CPU, DIFFERENT_CPUS, UNPINNED];
/// Wake-ups of a proxy per request: the request and the response each wake it.
pub const PROXY_WAKEUPS_PER_REQUEST: f64 = 2.0;

/// One placement's measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WakeupRun {
    pub placement: Placement,
    /// CPU time of the echo server per message (woken once, one read, one write, one wake-up sent).
    pub echo_us_per_message: f64,
    pub ping: PingOutcome,
}

impl WakeupRun {
    /// What [`PROXY_WAKEUPS_PER_REQUEST`] of the echo server's messages are charged, in vCPU per
    /// 1,000 per second: a proxy's wake-ups per request, were each charged as the echo server's.
    pub fn two_wakeups_vcpu_per_1000(&self) -> f64 {
        PROXY_WAKEUPS_PER_REQUEST * self.echo_us_per_message / 1000.0
    }
}

/// Runs the probe at every placement the machine has CPUs for, the echo server on `addr`.
pub fn probe(echo: &Path, dir: &Path, addr: SocketAddr, nproc: usize) -> Result<Vec<WakeupRun>> {
    let mut runs = Vec::new();
    for placement in PLACEMENTS {
        let needs = placement.echo_cpu.max(placement.ping_cpu).map_or(1, |cpu| cpu + 1);
        if needs > nproc {
            continue;
        }
        runs.push(probe_placement(echo, dir, addr, placement, PROBE_MESSAGES)?);
    }
    Ok(runs)
}

/// One placement: the echo server started on `addr`, a warm-up, then `messages` measured.
pub fn probe_placement(
    echo: &Path,
    dir: &Path,
    addr: SocketAddr,
    placement: Placement,
    messages: usize,
) -> Result<WakeupRun> {
    crate::setups::ensure_free(addr)?;
    let slug = placement.label.replace(' ', "-");
    let args = vec!["serve".to_owned(), "--listen".to_owned(), addr.to_string()];
    let mut server = Process::spawn("echo", echo, &args, placement.echo_cpu, dir.join(format!("echo-{slug}.log")))?;
    // The server takes connections one at a time: this one, closed at once, leaves it to the pinger.
    crate::setups::wait_for_listener(addr, &mut [&mut server])?;
    ping(echo, addr, placement.ping_cpu, PROBE_WARMUP_MESSAGES)?;
    let pid = server.pid().to_string();
    let before = procstat::task_cpu_ns(&pid)?;
    let outcome = ping(echo, addr, placement.ping_cpu, messages)?;
    let echo_ns = procstat::task_cpu_ns(&pid)? - before;
    server.check_running()?;
    let run =
        WakeupRun { placement, echo_us_per_message: echo_ns as f64 / 1e3 / outcome.messages as f64, ping: outcome };
    eprintln!(
        "    wake-up probe, {}: echo {:.1} µs CPU per message, pinger {:.1} µs, round trip p50 {:.0} µs, p99 {:.0} µs",
        placement.label, run.echo_us_per_message, outcome.cpu_us_per_message, outcome.p50_us, outcome.p99_us
    );
    Ok(run)
}

/// Runs the pinger (pinned to `cpu` when given) for `messages` and reads its outcome.
fn ping(echo: &Path, addr: SocketAddr, cpu: Option<usize>, messages: usize) -> Result<PingOutcome> {
    let mut command = crate::setups::pinned(echo, cpu);
    command.arg("ping").arg("--to").arg(addr.to_string());
    command.arg("--rate").arg(PROBE_RATE.to_string()).arg("--count").arg(messages.to_string());
    command.arg("--size").arg(PROBE_MESSAGE_BYTES.to_string());
    let output = command.output().with_context(|| format!("running {} ping", echo.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} ping failed ({}): {}",
        echo.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("reading the pinger's outcome {:?}", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_by_nearest_rank_from_the_sorted_round_trips() {
        let mut trips: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let outcome = PingOutcome::from_round_trips(&mut trips, 2_000_000);
        assert_eq!(outcome.messages, 1000);
        assert_eq!(outcome.p50_us, 500.0);
        assert_eq!(outcome.p99_us, 990.0);
        assert_eq!(outcome.p999_us, 999.0);
        assert_eq!(outcome.cpu_us_per_message, 2.0);
    }

    #[test]
    fn no_round_trips_give_zeros_not_a_panic() {
        let outcome = PingOutcome::from_round_trips(&mut [], 0);
        assert_eq!((outcome.messages, outcome.p99_us, outcome.cpu_us_per_message), (0, 0.0, 0.0));
    }

    #[test]
    fn two_wakeups_are_read_as_vcpu_per_thousand_per_second() {
        let ping = PingOutcome { messages: 1, p50_us: 0.0, p99_us: 0.0, p999_us: 0.0, cpu_us_per_message: 0.0 };
        let run = WakeupRun { placement: DIFFERENT_CPUS, echo_us_per_message: 40.0, ping };
        // 2 x 40 µs per request at 1,000 requests per second is 80 ms per second.
        assert!((run.two_wakeups_vcpu_per_1000() - 0.08).abs() < 1e-12);
    }
}
