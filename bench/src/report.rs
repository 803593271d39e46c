//! The measurements of one bench run and the markdown report made from them (`bench/results/proxy.md`).

use crate::oha::Outcome;
use crate::procstat::Memory;
use crate::setups::Kind;
use crate::wakeup::WakeupRun;

mod markdown;

/// Target: added p99 latency of the Trellis pair at 1,000 rps, in ms.
pub const TARGET_ADDED_P99_MS: f64 = 0.10;
/// Target: added p99 latency of the Trellis mTLS pair at 1,000 rps, in ms.
pub const TARGET_MTLS_ADDED_P99_MS: f64 = 0.15;
/// Target: CPU seconds per proxy per 1,000 requests (= vCPU per 1,000 rps).
pub const TARGET_CPU_PER_1000: f64 = 0.05;
/// Target: peak RSS per proxy at 1,000 rps over 64 connections, in MiB.
pub const TARGET_RSS_MIB: f64 = 8.0;
/// The rate the latency and CPU targets are stated at.
pub const TARGET_RATE: u32 = 1000;
/// Most a pair's p99 may grow with every resilience feature configured but not firing, in percent.
pub const TARGET_RESILIENCE_P99_GROWTH_PERCENT: f64 = 10.0;

/// CPU and memory of one proxy over one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Time on CPU during the run, by the scheduler's count ([`crate::procstat::process_cpu_ns`]).
    pub cpu_seconds: f64,
    /// `utime + stime` during the run (`/proc/PID/stat`): the same time in whole 10 ms clock ticks.
    pub stat_seconds: f64,
    /// Of which stime: the kernel's work for the process (system calls, the loopback network stack),
    /// which a proxy can only lower by making fewer calls.
    pub system_seconds: f64,
    /// Memory read right after the run.
    pub memory: Memory,
}

/// One setup under one load.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub kind: Kind,
    pub outcome: Outcome,
    /// Client- and server-side proxy; `None` for direct.
    pub proxies: Option<(Usage, Usage)>,
    /// Wall time of the measured run, in seconds.
    pub seconds: f64,
    /// What the whole machine did during the run.
    pub machine: Machine,
    /// The outcome of each round, when the load ran in several (interleaved with the other setups).
    pub rounds: Vec<Outcome>,
    /// CPU seconds of the client and the server proxy in each round, as `rounds` (empty for direct).
    pub round_cpu: Vec<(f64, f64)>,
    /// Rounds measured again because something outside the bench kept the machine busy.
    pub redone: u32,
    /// Rounds that stayed disturbed after all their retries (the quietest attempt counts).
    pub disturbed: u32,
}

/// CPU use of the whole machine during a run, in vCPUs (CPU seconds per second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Machine {
    /// All CPUs' busy time (user, system, irq, softirq, steal).
    pub busy: f64,
    /// Of which the bench's own processes (oha, the app, the proxies, the driver); the rest is kernel
    /// work not charged to a process (loopback softirq) and anything else running on the machine.
    pub bench: f64,
    /// Of which time the hypervisor gave to other guests.
    pub steal: f64,
}

impl Run {
    /// Rounds of the same setup and load as one run: outcomes combined (median percentiles), CPU and
    /// time added up, memory as after the last round but with the highest peak (`VmHWM`) any round
    /// read (the kernel's high-water mark can read lower later, after memory went back), machine load
    /// averaged over time.
    pub fn combine(rounds: Vec<Run>) -> Option<Run> {
        let last = rounds.last()?.clone();
        let seconds: f64 = rounds.iter().map(|r| r.seconds).sum();
        let outcomes: Vec<Outcome> = rounds.iter().map(|r| r.outcome.clone()).collect();
        let weighted =
            |pick: fn(&Machine) -> f64| rounds.iter().map(|r| pick(&r.machine) * r.seconds).sum::<f64>() / seconds;
        let proxies = last.proxies.map(|(client, server)| {
            let cpu =
                |side: fn(&(Usage, Usage)) -> f64| rounds.iter().filter_map(|r| r.proxies.as_ref().map(side)).sum();
            let peak = |side: fn(&(Usage, Usage)) -> u64| {
                rounds.iter().filter_map(|r| r.proxies.as_ref().map(side)).max().unwrap_or_default()
            };
            let client_memory = Memory { hwm_kib: peak(|p| p.0.memory.hwm_kib), ..client.memory };
            let server_memory = Memory { hwm_kib: peak(|p| p.1.memory.hwm_kib), ..server.memory };
            (
                Usage {
                    cpu_seconds: cpu(|p| p.0.cpu_seconds),
                    stat_seconds: cpu(|p| p.0.stat_seconds),
                    system_seconds: cpu(|p| p.0.system_seconds),
                    memory: client_memory,
                },
                Usage {
                    cpu_seconds: cpu(|p| p.1.cpu_seconds),
                    stat_seconds: cpu(|p| p.1.stat_seconds),
                    system_seconds: cpu(|p| p.1.system_seconds),
                    memory: server_memory,
                },
            )
        });
        Some(Run {
            kind: last.kind,
            outcome: Outcome::combine(&outcomes),
            proxies,
            seconds,
            machine: Machine { busy: weighted(|m| m.busy), bench: weighted(|m| m.bench), steal: weighted(|m| m.steal) },
            rounds: outcomes,
            round_cpu: rounds.iter().flat_map(|r| r.round_cpu.iter().copied()).collect(),
            redone: rounds.iter().map(|r| r.redone).sum(),
            disturbed: rounds.iter().map(|r| r.disturbed).sum(),
        })
    }

    /// `seconds` of the client and the server proxy per 1,000 successful requests.
    fn per_1000(&self, seconds: fn(&Usage) -> f64) -> Option<(f64, f64)> {
        let (client, server) = self.proxies?;
        let thousands = self.outcome.ok as f64 / 1000.0;
        Some((seconds(&client) / thousands, seconds(&server) / thousands))
    }

    /// CPU seconds per 1,000 successful requests of the client and the server proxy.
    pub fn cpu_per_1000(&self) -> Option<(f64, f64)> {
        self.per_1000(|u| u.cpu_seconds)
    }

    /// [`Run::cpu_per_1000`] by `utime + stime` (`/proc/PID/stat`) instead of the scheduler's count.
    pub fn stat_per_1000(&self) -> Option<(f64, f64)> {
        self.per_1000(|u| u.stat_seconds)
    }

    /// Of [`Run::stat_per_1000`], the kernel's part (system time) of the client and the server proxy.
    pub fn system_per_1000(&self) -> Option<(f64, f64)> {
        self.per_1000(|u| u.system_seconds)
    }

    /// Successful requests per CPU second of the client and of the server proxy (`None` when either
    /// was charged no CPU time).
    pub fn per_core(&self) -> Option<(f64, f64)> {
        let (client, server) = self.proxies?;
        let ok = self.outcome.ok as f64;
        (client.cpu_seconds > 0.0 && server.cpu_seconds > 0.0)
            .then(|| (ok / client.cpu_seconds, ok / server.cpu_seconds))
    }

    /// The pair's [`Run::per_core`] (its busier proxy's) by `utime + stime` instead of the scheduler's
    /// count.
    pub fn stat_per_core(&self) -> Option<f64> {
        let (client, server) = self.proxies?;
        let busier = client.stat_seconds.max(server.stat_seconds);
        (busier > 0.0).then(|| self.outcome.ok as f64 / busier)
    }

    /// The pair's throughput per core in each round: successful requests per CPU second of its
    /// busier proxy (`None` for a round whose proxies were charged no CPU time).
    pub fn round_per_core(&self) -> Vec<Option<f64>> {
        let rounds = self.rounds.iter().zip(&self.round_cpu);
        let per_core = |ok: u64, cpu: f64| (cpu > 0.0).then(|| ok as f64 / cpu);
        rounds.map(|(outcome, &(client, server))| per_core(outcome.ok, client.max(server))).collect()
    }

    /// Requests that did not succeed, not counting those oha aborts at the end of its duration.
    pub fn failed(&self) -> u64 {
        self.outcome.non_2xx + self.outcome.errors
    }
}

/// All setups under one load.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub rate: u32,
    pub connections: u32,
    pub runs: Vec<Run>,
}

impl Point {
    pub fn run(&self, kind: Kind) -> Option<&Run> {
        self.runs.iter().find(|r| r.kind == kind)
    }

    /// (p50, p99, p99.9) of `kind` minus those of direct, in ms.
    pub fn added(&self, kind: Kind) -> Option<(f64, f64, f64)> {
        let run = &self.run(kind)?.outcome;
        let direct = &self.run(Kind::Direct)?.outcome;
        Some((run.p50_ms - direct.p50_ms, run.p99_ms - direct.p99_ms, run.p999_ms - direct.p999_ms))
    }
}

/// The machine, the versions and the run's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory: String,
    /// (tool, version) pairs.
    pub versions: Vec<(String, String)>,
    pub command: String,
}

/// The knobs of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The setups measured, in the order they took turns.
    pub setups: Vec<Kind>,
    pub rates: Vec<u32>,
    pub connections: u32,
    pub seconds: u64,
    pub rounds: u64,
    pub warmup_seconds: u64,
    pub rss_rate: u32,
    pub rss_connections: u32,
    pub max_seconds: u64,
    /// Rounds the unthrottled runs are split into.
    pub max_rounds: u64,
    /// Data-path threads of each proxy in the fixed-rate and memory runs.
    pub threads: usize,
    pub app_threads: usize,
    /// A round is redone when the machine's busy time beyond the bench's exceeds this (vCPUs).
    pub max_other_vcpu: f64,
    /// How often a round may be redone.
    pub retries: u32,
    /// How many rounds may be redone in all.
    pub retry_budget: u32,
}

/// Everything a bench run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    pub environment: Environment,
    pub settings: Settings,
    /// Fixed-rate runs, proxies started once and kept across rates.
    pub rates: Vec<Point>,
    /// The memory run: fresh proxies, `rss_rate` over `rss_connections`.
    pub memory: Option<Point>,
    /// Memory of the memory run's proxies (client, server) right after start, before any load.
    pub idle_memory: Vec<(Kind, Memory, Memory)>,
    /// Unthrottled runs: fresh single-threaded proxies, each pinned to its own CPU.
    pub max: Vec<Run>,
    /// The target rate with every process of each setup on one vCPU (fresh proxies and app).
    pub one_vcpu: Option<Point>,
    /// The wake-up probe, one run per placement.
    pub wakeup: Vec<WakeupRun>,
    /// Per log file, the warning and error lines found in it.
    pub log_findings: Vec<(String, Vec<String>)>,
    pub elapsed_seconds: f64,
}

/// Seconds of each round when `seconds` of a load are split into `rounds` (at least one of each).
pub fn round_seconds(seconds: u64, rounds: u64) -> u64 {
    (seconds / rounds.max(1)).max(1)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `VmRSS` with its anonymous and file-backed parts.
fn split(memory: &Memory) -> String {
    format!("{:.1} MiB ({:.1} + {:.1})", mib(memory.rss_kib), mib(memory.anon_kib), mib(memory.file_kib))
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "**pass**",
        Some(false) => "**FAIL**",
        None => "not measured",
    }
}

/// One target: what it asks, the Trellis setup and the HAProxy setup it is read from with their
/// values, and whether it is met (`None`: a setup was not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: String,
    pub trellis: (Kind, String),
    pub haproxy: (Kind, String),
    pub pass: Option<bool>,
}

fn ratio(a: f64, b: f64) -> String {
    if b.abs() < 1e-12 || !a.is_finite() || !b.is_finite() { "n/a".to_owned() } else { format!("{:.2}x", a / b) }
}

impl Results {
    fn point(&self, rate: u32) -> Option<&Point> {
        self.rates.iter().find(|p| p.rate == rate)
    }

    fn max_run(&self, kind: Kind) -> Option<&Run> {
        self.max.iter().find(|r| r.kind == kind)
    }

    /// The pair's throughput per core: successful requests per CPU second of its busier proxy.
    pub fn per_core(&self, kind: Kind) -> Option<f64> {
        self.max_run(kind)?.per_core().map(|(c, s)| c.min(s))
    }

    /// Added p99 of `kind` at the target rate, in ms.
    fn added_p99(&self, kind: Kind) -> Option<f64> {
        self.point(TARGET_RATE)?.added(kind).map(|a| a.1)
    }

    /// p99 of `kind` at the target rate, in ms.
    fn p99(&self, kind: Kind) -> Option<f64> {
        Some(self.point(TARGET_RATE)?.run(kind)?.outcome.p99_ms)
    }

    /// CPU seconds per 1,000 requests of `kind`'s busier proxy at the target rate.
    fn cpu_per_1000(&self, kind: Kind) -> Option<f64> {
        self.point(TARGET_RATE)?.run(kind)?.cpu_per_1000().map(|(c, s)| c.max(s))
    }

    /// Peak RSS of `kind`'s larger proxy in the memory run, in MiB.
    fn peak_rss_mib(&self, kind: Kind) -> Option<f64> {
        let (c, s) = self.memory.as_ref()?.run(kind)?.proxies?;
        Some(mib(c.memory.hwm_kib.max(s.memory.hwm_kib)))
    }

    /// The targets: four for the plain-text pairs, two for the TLS pairs.
    pub fn targets(&self) -> Vec<Target> {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.3} ms"));
        let target = |what: String, (t, h): (Kind, Kind), show: &dyn Fn(Kind) -> String, pass: Option<bool>| Target {
            what,
            trellis: (t, show(t)),
            haproxy: (h, show(h)),
            pass,
        };
        let plain = (Kind::Trellis, Kind::Haproxy);
        let tls = (Kind::TrellisMtls, Kind::HaproxyTls);
        let added = |kind| ms(self.added_p99(kind));
        let p99 = |kind| self.p99(kind).map_or("-".into(), |v| format!("{v:.3} ms p99"));
        let cpu = |kind| self.cpu_per_1000(kind).map_or("-".into(), |v| format!("{v:.4} vCPU"));
        let rss = |kind| self.peak_rss_mib(kind).map_or("-".into(), |v| format!("{v:.1} MiB"));
        let per_core = |kind| self.per_core(kind).map_or("-".into(), |v| format!("{v:.0} rps/core"));
        let (t, h) = (self.added_p99(Kind::Trellis), self.added_p99(Kind::Haproxy));
        let (tm, ht) = (self.added_p99(Kind::TrellisMtls), self.added_p99(Kind::HaproxyTls));
        let (rate, conns) = (self.settings.rss_rate, self.settings.rss_connections);
        vec![
            target(
                format!("added p99 at {TARGET_RATE} rps <= {TARGET_ADDED_P99_MS:.2} ms and below the HAProxy pair's"),
                plain,
                &added,
                t.zip(h).map(|(t, h)| t <= TARGET_ADDED_P99_MS && t < h),
            ),
            target(
                format!(
                    "CPU per proxy per 1,000 rps (busier proxy, at {TARGET_RATE} rps) <= {TARGET_CPU_PER_1000} vCPU"
                ),
                plain,
                &cpu,
                self.cpu_per_1000(Kind::Trellis).map(|t| t <= TARGET_CPU_PER_1000),
            ),
            target(
                format!("peak RSS per proxy at {rate} rps over {conns} connections <= {TARGET_RSS_MIB} MiB"),
                plain,
                &rss,
                self.peak_rss_mib(Kind::Trellis).map(|t| t <= TARGET_RSS_MIB),
            ),
            target(
                "throughput per proxy core >= the HAProxy pair's".to_owned(),
                plain,
                &per_core,
                self.per_core(Kind::Trellis).zip(self.per_core(Kind::Haproxy)).map(|(t, h)| t >= h),
            ),
            target(
                format!("mTLS pair adds <= {TARGET_MTLS_ADDED_P99_MS:.2} ms p99 at {TARGET_RATE} rps"),
                tls,
                &added,
                tm.map(|t| t <= TARGET_MTLS_ADDED_P99_MS),
            ),
            target(
                format!("mTLS pair below the HAProxy TLS pair (added p99 at {TARGET_RATE} rps)"),
                tls,
                &added,
                tm.zip(ht).map(|(t, h)| t < h),
            ),
            target(
                format!(
                    "resilience configured but not firing adds <= {TARGET_RESILIENCE_P99_GROWTH_PERCENT}% to the \
                     pair's p99 at {TARGET_RATE} rps"
                ),
                (Kind::TrellisResilient, Kind::Trellis),
                &p99,
                self.p99(Kind::TrellisResilient)
                    .zip(self.p99(Kind::Trellis))
                    .map(|(r, t)| r <= t * (1.0 + TARGET_RESILIENCE_P99_GROWTH_PERCENT / 100.0)),
            ),
        ]
    }

    /// `a` next to `b` in this run: (measure, a, b, a / b) for every measure both have.
    pub fn side_by_side(&self, a: Kind, b: Kind) -> Vec<[String; 4]> {
        let mut rows = Vec::new();
        let mut row = |measure: String, values: Option<(f64, f64)>, show: &dyn Fn(f64) -> String| {
            if let Some((x, y)) = values {
                rows.push([measure, show(x), show(y), ratio(x, y)]);
            }
        };
        let ms = |v: f64| format!("{v:+.3} ms");
        for point in &self.rates {
            let added = |kind| point.added(kind).map(|a| a.0);
            row(format!("added p50 at {} rps", point.rate), added(a).zip(added(b)), &ms);
        }
        for point in &self.rates {
            let added = |kind| point.added(kind).map(|a| a.1);
            row(format!("added p99 at {} rps", point.rate), added(a).zip(added(b)), &ms);
        }
        for point in &self.rates {
            let cpu = |kind| point.run(kind).and_then(Run::cpu_per_1000).map(|(c, s)| c + s);
            let measure = format!("CPU of both proxies per 1k req at {} rps", point.rate);
            row(measure, cpu(a).zip(cpu(b)), &|v| format!("{v:.4} s"));
        }
        if let Some(point) = &self.memory {
            let measure = format!("peak RSS of the larger proxy, {} conns", point.connections);
            row(measure, self.peak_rss_mib(a).zip(self.peak_rss_mib(b)), &|v| format!("{v:.1} MiB"));
        }
        row("rps per proxy core".to_owned(), self.per_core(a).zip(self.per_core(b)), &|v| format!("{v:.0}"));
        rows
    }
}

#[cfg(test)]
mod tests;
