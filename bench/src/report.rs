//! The measurements of one bench run and the markdown report made from them (`bench/results/proxy.md`).

use std::fmt::Write as _;

use crate::oha::Outcome;
use crate::procstat::Memory;
use crate::setups::Kind;

/// Target: added p99 latency of the Trellis pair at 1,000 rps, in ms.
pub const TARGET_ADDED_P99_MS: f64 = 0.10;
/// Target: CPU seconds per proxy per 1,000 requests (= vCPU per 1,000 rps).
pub const TARGET_CPU_PER_1000: f64 = 0.05;
/// Target: peak RSS per proxy at 1,000 rps over 64 connections, in MiB.
pub const TARGET_RSS_MIB: f64 = 8.0;
/// The rate the latency and CPU targets are stated at.
pub const TARGET_RATE: u32 = 1000;

/// CPU and memory of one proxy over one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// utime + stime spent during the run.
    pub cpu_seconds: f64,
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
    /// time added up, memory as after the last round, machine load averaged over time.
    pub fn combine(rounds: Vec<Run>) -> Option<Run> {
        let last = rounds.last()?.clone();
        let seconds: f64 = rounds.iter().map(|r| r.seconds).sum();
        let outcomes: Vec<Outcome> = rounds.iter().map(|r| r.outcome.clone()).collect();
        let weighted =
            |pick: fn(&Machine) -> f64| rounds.iter().map(|r| pick(&r.machine) * r.seconds).sum::<f64>() / seconds;
        let proxies = last.proxies.map(|(client, server)| {
            let cpu =
                |side: fn(&(Usage, Usage)) -> f64| rounds.iter().filter_map(|r| r.proxies.as_ref().map(side)).sum();
            (
                Usage { cpu_seconds: cpu(|p| p.0.cpu_seconds), memory: client.memory },
                Usage { cpu_seconds: cpu(|p| p.1.cpu_seconds), memory: server.memory },
            )
        });
        Some(Run {
            kind: last.kind,
            outcome: Outcome::combine(&outcomes),
            proxies,
            seconds,
            machine: Machine { busy: weighted(|m| m.busy), bench: weighted(|m| m.bench), steal: weighted(|m| m.steal) },
            rounds: outcomes,
            redone: rounds.iter().map(|r| r.redone).sum(),
            disturbed: rounds.iter().map(|r| r.disturbed).sum(),
        })
    }

    /// CPU seconds per 1,000 successful requests of the client and the server proxy.
    pub fn cpu_per_1000(&self) -> Option<(f64, f64)> {
        let (client, server) = self.proxies?;
        let thousands = self.outcome.ok as f64 / 1000.0;
        Some((client.cpu_seconds / thousands, server.cpu_seconds / thousands))
    }

    /// Successful requests per CPU second of the client and of the server proxy.
    pub fn per_core(&self) -> Option<(f64, f64)> {
        let (client, server) = self.proxies?;
        let ok = self.outcome.ok as f64;
        Some((ok / client.cpu_seconds, ok / server.cpu_seconds))
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
    pub rates: Vec<u32>,
    pub connections: u32,
    pub seconds: u64,
    pub rounds: u64,
    pub warmup_seconds: u64,
    pub rss_rate: u32,
    pub rss_connections: u32,
    pub max_seconds: u64,
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
    /// Per log file, the warning and error lines found in it.
    pub log_findings: Vec<(String, Vec<String>)>,
    pub elapsed_seconds: f64,
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

    /// The four targets: (what, Trellis, HAProxy, pass).
    pub fn targets(&self) -> Vec<(String, String, String, Option<bool>)> {
        let mut rows = Vec::new();
        let at = self.point(TARGET_RATE);
        let added_p99 = |kind| at.and_then(|p| p.added(kind)).map(|a| a.1);
        let (t, h) = (added_p99(Kind::Trellis), added_p99(Kind::Haproxy));
        rows.push((
            format!("added p99 at {TARGET_RATE} rps <= {TARGET_ADDED_P99_MS:.2} ms and below the HAProxy pair's"),
            t.map_or("-".into(), |v| format!("{v:+.3} ms")),
            h.map_or("-".into(), |v| format!("{v:+.3} ms")),
            t.zip(h).map(|(t, h)| t <= TARGET_ADDED_P99_MS && t < h),
        ));
        let cpu = |kind| at.and_then(|p| p.run(kind)?.cpu_per_1000()).map(|(c, s)| c.max(s));
        let (t, h) = (cpu(Kind::Trellis), cpu(Kind::Haproxy));
        rows.push((
            format!("CPU per proxy per 1,000 rps (busier proxy, at {TARGET_RATE} rps) <= {TARGET_CPU_PER_1000} vCPU"),
            t.map_or("-".into(), |v| format!("{v:.4} vCPU")),
            h.map_or("-".into(), |v| format!("{v:.4} vCPU")),
            t.map(|t| t <= TARGET_CPU_PER_1000),
        ));
        let rss = |kind| {
            let (c, s) = self.memory.as_ref()?.run(kind)?.proxies?;
            Some(mib(c.memory.hwm_kib.max(s.memory.hwm_kib)))
        };
        let (t, h) = (rss(Kind::Trellis), rss(Kind::Haproxy));
        let (rate, conns) = (self.settings.rss_rate, self.settings.rss_connections);
        rows.push((
            format!("peak RSS per proxy at {rate} rps over {conns} connections <= {TARGET_RSS_MIB} MiB"),
            t.map_or("-".into(), |v| format!("{v:.1} MiB")),
            h.map_or("-".into(), |v| format!("{v:.1} MiB")),
            t.map(|t| t <= TARGET_RSS_MIB),
        ));
        let (t, h) = (self.per_core(Kind::Trellis), self.per_core(Kind::Haproxy));
        rows.push((
            "throughput per proxy core >= the HAProxy pair's".to_owned(),
            t.map_or("-".into(), |v| format!("{v:.0} rps/core")),
            h.map_or("-".into(), |v| format!("{v:.0} rps/core")),
            t.zip(h).map(|(t, h)| t >= h),
        ));
        rows
    }

    /// The report, in markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.write_markdown(&mut md).expect("writing to a String cannot fail");
        md
    }

    fn write_markdown(&self, md: &mut String) -> std::fmt::Result {
        let env = &self.environment;
        let s = &self.settings;
        writeln!(md, "# trellis-proxy benchmark: a Trellis pair vs an HAProxy pair vs direct\n")?;
        writeln!(
            md,
            "Generated by `make bench-proxy` on {} in {:.0} s. All three setups were measured in this one run, \
             taking turns (for each load: direct, Trellis, HAProxy, then again, {} rounds), so the ratios below \
             compare like with like.\n",
            env.date, self.elapsed_seconds, s.rounds
        )?;
        writeln!(md, "![latency percentiles per setup and rate](proxy.svg)\n")?;

        writeln!(md, "## Targets\n")?;
        writeln!(md, "| target | Trellis pair | HAProxy pair | result |\n|---|---|---|---|")?;
        for (what, t, h, pass) in self.targets() {
            writeln!(md, "| {what} | {t} | {h} | {} |", verdict(pass))?;
        }
        writeln!(
            md,
            "\n\"Added\" latency is the setup's percentile minus the direct run's percentile at the same rate. \
             vCPU per 1,000 rps equals CPU seconds per 1,000 requests. Throughput per core is successful \
             requests per CPU second of the pair's busier proxy in the unthrottled run (see below).\n"
        )?;

        writeln!(md, "## Machine and versions\n")?;
        writeln!(md, "- CPU: {} ({} vCPUs by `nproc`)", env.cpu_model, env.nproc)?;
        writeln!(md, "- memory: {}; kernel: {}", env.memory, env.kernel)?;
        for (tool, version) in &env.versions {
            writeln!(md, "- {tool}: {version}")?;
        }
        writeln!(md)?;

        writeln!(md, "## Setups\n")?;
        writeln!(
            md,
            "```text\n\
             direct:   oha ─h1─> app\n\
             Trellis:  oha ─h1─> trellis-proxy gateway ─h2c (pooled, multiplexed)─> trellis-proxy sidecar :15006 ─h1─> app\n\
             HAProxy:  oha ─h1─> haproxy (client side) ─h2c (http-reuse always)─> haproxy (server side) ─h1─> app\n\
             ```\n"
        )?;
        writeln!(
            md,
            "- **app**: `trellis-bench-app`, a hyper HTTP/1.1 keep-alive server answering every request with \
             1 KiB ({} worker thread(s)).\n\
             - **Trellis pair** (two release-build `trellis-proxy` processes): traffic enters the client proxy \
             in `gateway` mode, as an ingress gateway or a local-mode client would send it: a plain HTTP/1.1 \
             request on a gateway port whose virtual host (`*`) routes to a cluster with one `meshed: true` \
             endpoint, the server proxy's inbound listener `:15006`. Meshed means the proxies speak HTTP/2 to \
             each other over pooled connections, HTTP/1 requests carried with the orig-proto marker. The server \
             proxy is `trellis-proxy sidecar --inbound-target APP` (local mode, no iptables) and hands the \
             request to the app as HTTP/1.1. No mTLS: the proxy has no TLS yet, so both pairs are plain text. \
             Access logs are off (the `ProxyConfig` default); `--log warn`.\n\
             - **HAProxy pair** (Debian's `haproxy`, two processes run with `-db`): the client side's backend \
             is `proto h2` with `http-reuse always`, the server side binds `proto h2` and keeps HTTP/1.1 \
             keep-alive connections to the app. No logging.\n\
             - Fixed-rate and memory runs: each proxy has {} data-path threads (`--concurrency {}` / `nbthread {}`), \
             unpinned. Each setup sits on its own loopback addresses (127.90.x.y).\n\
             - Load: `oha -q RATE --latency-correction -c {} -z {}s` (coordinated-omission corrected), {} rounds \
             per setup and load ({} s measured in all), the setups taking turns round by round; a {} s warm-up run \
             at the same rate precedes each round and is discarded. A percentile in the tables is the median of \
             the rounds' percentiles (each round's p99 is listed too); counts and CPU are summed over the rounds. \
             CPU is utime+stime from `/proc/PID/stat` before and after each measured round; memory is \
             `VmHWM`/`VmRSS` from `/proc/PID/status` after the last round.\n",
            s.app_threads,
            s.threads,
            s.threads,
            s.threads,
            s.connections,
            s.seconds / s.rounds.max(1),
            s.rounds,
            s.seconds,
            s.warmup_seconds
        )?;

        writeln!(md, "## Latency at fixed rates ({} connections, 1 KiB responses)\n", s.connections)?;
        writeln!(
            md,
            "The last column is the whole machine's CPU use during the run, in vCPUs of {}: all busy time, \
             then the part charged to the bench's own processes (oha, app, proxies, driver) and the part the \
             hypervisor stole. Busy time beyond the bench's is loopback networking done in softirq context \
             and anything else running on the machine; a round where it exceeded {:.2} vCPU was measured again \
             (up to {} times per round and {} in all, keeping the quietest attempt), since other work on a 2-vCPU machine moves the tails \
             by milliseconds.\n",
            env.nproc, s.max_other_vcpu, s.retries, s.retry_budget
        )?;
        writeln!(
            md,
            "| rate | setup | achieved rps | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | p99 of each round | ok | failed | machine vCPU busy (bench / steal) |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for point in &self.rates {
            write_latency_rows(md, point)?;
        }
        writeln!(md)?;

        writeln!(md, "## CPU and memory per proxy at fixed rates\n")?;
        writeln!(
            md,
            "CPU seconds per 1,000 requests (= vCPU per 1,000 rps), and the peak RSS (`VmHWM`, so far in the \
             process's life: the proxies run through all rates in order) after the run.\n"
        )?;
        writeln!(
            md,
            "| rate | setup | CPU client / 1k req | CPU server / 1k req | vCPU client | vCPU server | peak RSS client | peak RSS server |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|"
        )?;
        for point in &self.rates {
            for run in point.runs.iter().filter(|r| r.kind != Kind::Direct) {
                let (Some((c, sv)), Some((uc, us))) = (run.cpu_per_1000(), run.proxies) else { continue };
                writeln!(
                    md,
                    "| {} | {} | {c:.4} s | {sv:.4} s | {:.3} | {:.3} | {:.1} MiB | {:.1} MiB |",
                    point.rate,
                    run.kind.label(),
                    uc.cpu_seconds / run.seconds,
                    us.cpu_seconds / run.seconds,
                    mib(uc.memory.hwm_kib),
                    mib(us.memory.hwm_kib),
                )?;
            }
        }
        writeln!(md)?;

        if let Some(point) = &self.memory {
            writeln!(md, "## Memory at {} rps over {} connections\n", point.rate, point.connections)?;
            writeln!(
                md,
                "Fresh proxy processes (same thread counts), {} s warm-ups and {} s measured in rounds as above; `VmHWM` is the peak \
                 over the processes' whole life, `VmRSS` what was resident at the end of the run, idle RSS what was \
                 resident after start and one request, before the load. Anon is heap and stacks (what grows with \
                 connections); file is the resident part of the mapped executable and libraries.\n",
                s.warmup_seconds, s.seconds
            )?;
            writeln!(
                md,
                "| setup | peak RSS client | peak RSS server | RSS client (anon + file) | RSS server (anon + file) | idle RSS client (anon + file) | idle RSS server (anon + file) | CPU client / 1k req | CPU server / 1k req |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            for run in point.runs.iter().filter(|r| r.kind != Kind::Direct) {
                let (Some((c, sv)), Some((uc, us))) = (run.cpu_per_1000(), run.proxies) else { continue };
                let idle = self.idle_memory.iter().find(|(kind, _, _)| *kind == run.kind);
                let idle = idle.map_or("- | -".to_owned(), |(_, ic, is)| format!("{} | {}", split(ic), split(is)));
                writeln!(
                    md,
                    "| {} | {:.1} MiB | {:.1} MiB | {} | {} | {idle} | {c:.4} s | {sv:.4} s |",
                    run.kind.label(),
                    mib(uc.memory.hwm_kib),
                    mib(us.memory.hwm_kib),
                    split(&uc.memory),
                    split(&us.memory),
                )?;
            }
            writeln!(md, "\nLatency of the same run:\n")?;
            writeln!(
                md,
                "| rate | setup | achieved rps | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | p99 of each round | ok | failed | machine vCPU busy (bench / steal) |\n\
                 |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            write_latency_rows(md, point)?;
            writeln!(md)?;
        }

        if !self.max.is_empty() {
            writeln!(md, "## Maximum throughput per core\n")?;
            writeln!(
                md,
                "Unthrottled `oha -c {} -z {}s` (after a short warm-up) through fresh proxies with one data-path \
                 thread each (`--concurrency 1` / `nbthread 1`), the client-side proxy pinned to CPU 0 and the \
                 server-side proxy to CPU 1 with `taskset`; oha and the app are not pinned and share the same two \
                 CPUs, so the pair's raw rps is bounded by the whole machine, not by one proxy. Per-core \
                 throughput is therefore successful requests divided by the CPU seconds each proxy actually used; \
                 the pair's figure is its busier proxy's.\n",
                s.connections, s.max_seconds
            )?;
            writeln!(
                md,
                "| setup | achieved rps | vCPU client | vCPU server | rps per client core | rps per server core | pair: rps per core | ok | failed |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            for run in &self.max {
                let o = &run.outcome;
                match (run.proxies, run.per_core()) {
                    (Some((c, sv)), Some((pc, ps))) => writeln!(
                        md,
                        "| {} | {:.0} | {:.2} | {:.2} | {pc:.0} | {ps:.0} | {:.0} | {} | {} |",
                        run.kind.label(),
                        o.rps,
                        c.cpu_seconds / run.seconds,
                        sv.cpu_seconds / run.seconds,
                        pc.min(ps),
                        o.ok,
                        run.failed()
                    )?,
                    _ => writeln!(
                        md,
                        "| {} | {:.0} | - | - | - | - | - | {} | {} |",
                        run.kind.label(),
                        o.rps,
                        o.ok,
                        run.failed()
                    )?,
                }
            }
            writeln!(md)?;
        }

        writeln!(md, "## Trellis / HAProxy, side by side in this run\n")?;
        writeln!(md, "| measure | Trellis | HAProxy | Trellis / HAProxy |\n|---|---:|---:|---:|")?;
        for point in &self.rates {
            if let (Some(t), Some(h)) = (point.added(Kind::Trellis), point.added(Kind::Haproxy)) {
                writeln!(
                    md,
                    "| added p50 at {} rps | {:+.3} ms | {:+.3} ms | {} |",
                    point.rate,
                    t.0,
                    h.0,
                    ratio(t.0, h.0)
                )?;
            }
        }
        for point in &self.rates {
            if let (Some(t), Some(h)) = (point.added(Kind::Trellis), point.added(Kind::Haproxy)) {
                writeln!(
                    md,
                    "| added p99 at {} rps | {:+.3} ms | {:+.3} ms | {} |",
                    point.rate,
                    t.1,
                    h.1,
                    ratio(t.1, h.1)
                )?;
            }
        }
        for point in &self.rates {
            let cpu = |kind| point.run(kind).and_then(Run::cpu_per_1000).map(|(c, s)| c + s);
            if let (Some(t), Some(h)) = (cpu(Kind::Trellis), cpu(Kind::Haproxy)) {
                writeln!(
                    md,
                    "| CPU of both proxies per 1k req at {} rps | {t:.4} s | {h:.4} s | {} |",
                    point.rate,
                    ratio(t, h)
                )?;
            }
        }
        if let Some(point) = &self.memory {
            let rss = |kind| {
                point.run(kind).and_then(|r| r.proxies).map(|(c, s)| mib(c.memory.hwm_kib.max(s.memory.hwm_kib)))
            };
            if let (Some(t), Some(h)) = (rss(Kind::Trellis), rss(Kind::Haproxy)) {
                writeln!(
                    md,
                    "| peak RSS of the larger proxy, {} conns | {t:.1} MiB | {h:.1} MiB | {} |",
                    point.connections,
                    ratio(t, h)
                )?;
            }
        }
        if let (Some(t), Some(h)) = (self.per_core(Kind::Trellis), self.per_core(Kind::Haproxy)) {
            writeln!(md, "| rps per proxy core | {t:.0} | {h:.0} | {} |", ratio(t, h))?;
        }
        writeln!(md)?;

        writeln!(md, "## Failed requests and proxy logs\n")?;
        let all_runs = self.rates.iter().chain(&self.memory).flat_map(|p| &p.runs).chain(&self.max);
        let mut any_failed = false;
        for run in all_runs {
            if run.failed() > 0 {
                any_failed = true;
                let kinds: Vec<String> = run.outcome.error_kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                writeln!(
                    md,
                    "- {}: {} non-2xx, {} errors ({})",
                    run.kind.label(),
                    run.outcome.non_2xx,
                    run.outcome.errors,
                    kinds.join("; ")
                )?;
            }
        }
        let redone: Vec<String> = self
            .rates
            .iter()
            .chain(&self.memory)
            .flat_map(|p| p.runs.iter().map(move |r| (p, r)))
            .filter(|(_, r)| r.redone > 0)
            .map(|(p, r)| {
                let still = if r.disturbed > 0 {
                    format!(" ({} still disturbed after all retries)", r.disturbed)
                } else {
                    String::new()
                };
                format!("{} at {} rps/{} conns: {}{still}", r.kind.label(), p.rate, p.connections, r.redone)
            })
            .collect();
        if !redone.is_empty() {
            writeln!(md, "- Rounds redone because other work kept the machine busy: {}.", redone.join("; "))?;
        }
        if !any_failed {
            writeln!(
                md,
                "- No request failed in any run (requests still in flight when a run's duration ended are aborted \
                 by oha by design and not counted)."
            )?;
        }
        for (log, lines) in &self.log_findings {
            if lines.is_empty() {
                continue;
            }
            writeln!(md, "- `{log}`: {} warning/error line(s), first ones:", lines.len())?;
            writeln!(md, "  ```text")?;
            for line in lines.iter().take(5) {
                writeln!(md, "  {line}")?;
            }
            writeln!(md, "  ```")?;
        }
        if self.log_findings.iter().all(|(_, lines)| lines.is_empty()) {
            writeln!(md, "- No proxy wrote a warning or an error.")?;
        }
        writeln!(md)?;

        writeln!(md, "## Caveats\n")?;
        writeln!(
            md,
            "- This machine has {} vCPUs shared by oha, the app and both proxies of a pair, so absolute latencies \
             include scheduling contention, and tails move by milliseconds from one round to the next (see \
             \"p99 of each round\"). The setups take turns so that such disturbances spread over all of them, and \
             the medians of rounds damp single bad rounds, but differences below the round-to-round spread are \
             not meaningful, p99.9 least of all (it rests on the slowest ~{} requests of a round at the lowest \
             rate).\n\
             - Both pairs are plain text; Trellis has no mTLS yet. Once it does, rerun: TLS costs CPU per byte and \
             a handshake per pooled connection.\n\
             - The Trellis client proxy adds an `x-request-id` to every request and keeps Prometheus counters; the \
             HAProxy configuration adds nothing and keeps its built-in stats.\n",
            env.nproc,
            s.rates.first().map_or(0, |r| *r as u64 * (s.seconds / s.rounds.max(1)) / 1000)
        )?;

        writeln!(md, "## How to reproduce\n")?;
        writeln!(
            md,
            "```sh\nmake bench-proxy\n```\n\n\
             This builds `trellis-proxy` and `trellis-bench` in release mode, installs `oha` into `bench/.tools` \
             with `cargo install oha --version 1.16.0 --locked --root bench/.tools` if it is missing (that takes \
             ~10 minutes on this machine, once), \
             installs Debian's `haproxy` if missing, and runs:\n\n```sh\n{}\n```\n\n\
             Raw oha JSON of every run, the generated proxy configurations and the proxies' logs are kept in \
             `target/bench-proxy/`.",
            env.command
        )?;
        Ok(())
    }
}

fn write_latency_rows(md: &mut String, point: &Point) -> std::fmt::Result {
    for run in &point.runs {
        let o = &run.outcome;
        let added = match point.added(run.kind) {
            Some((a, b, c)) if run.kind != Kind::Direct => format!("{a:+.3} | {b:+.3} | {c:+.3}"),
            _ => "- | - | -".to_owned(),
        };
        let rounds: Vec<String> = run.rounds.iter().map(|r| format!("{:.2}", r.p99_ms)).collect();
        let rounds = rounds.join(" / ");
        writeln!(
            md,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {added} | {rounds} | {} | {} | {:.2} ({:.2} / {:.2}){} |",
            point.rate,
            run.kind.label(),
            o.rps,
            o.p50_ms,
            o.p99_ms,
            o.p999_ms,
            o.ok,
            run.failed(),
            run.machine.busy,
            run.machine.bench,
            run.machine.steal,
            match (run.redone, run.disturbed) {
                (0, 0) => String::new(),
                (n, 0) => format!(", {n} round(s) redone"),
                (n, d) => format!(", {n} round(s) redone, **{d} still disturbed**"),
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn run(kind: Kind, p99_ms: f64, cpu: f64, hwm_kib: u64) -> Run {
        let memory = Memory { rss_kib: hwm_kib / 2, hwm_kib, anon_kib: hwm_kib / 4, file_kib: hwm_kib / 4 };
        let usage = Usage { cpu_seconds: cpu, memory };
        Run {
            kind,
            outcome: Outcome {
                ok: 15_000,
                rps: 1000.0,
                p50_ms: 0.2,
                p99_ms,
                p999_ms: p99_ms * 2.0,
                ..Outcome::default()
            },
            proxies: (kind != Kind::Direct).then_some((usage, usage)),
            seconds: 15.0,
            machine: Machine::default(),
            rounds: Vec::new(),
            redone: 0,
            disturbed: 0,
        }
    }

    pub(crate) fn sample() -> Results {
        let point = |rate, connections| Point {
            rate,
            connections,
            runs: vec![
                run(Kind::Direct, 1.0, 0.0, 0),
                run(Kind::Trellis, 1.05, 0.45, 4096),
                run(Kind::Haproxy, 1.2, 0.6, 9000),
            ],
        };
        Results {
            settings: Settings { rates: vec![500, 1000], rss_rate: 1000, rss_connections: 64, ..Settings::default() },
            rates: vec![point(500, 16), point(1000, 16)],
            memory: Some(point(1000, 64)),
            max: vec![run(Kind::Trellis, 1.0, 1.0, 1), run(Kind::Haproxy, 1.0, 2.0, 1)],
            ..Results::default()
        }
    }

    #[test]
    fn the_targets_compare_trellis_with_the_limits_and_with_haproxy() {
        let targets = sample().targets();
        let passes: Vec<Option<bool>> = targets.iter().map(|t| t.3).collect();
        // 0.05 ms added p99 (< 0.2 for HAProxy), 0.03 s CPU per 1k, 4 MiB, 15,000 vs 7,500 rps per core.
        assert_eq!(passes, vec![Some(true), Some(true), Some(true), Some(true)]);
        assert_eq!(targets[2].1, "4.0 MiB");
    }

    #[test]
    fn rounds_combine_into_one_run_with_cpu_added_and_the_last_memory() {
        let mut second = run(Kind::Trellis, 3.0, 0.5, 5000);
        second.machine.busy = 1.0;
        let combined = Run::combine(vec![run(Kind::Trellis, 1.0, 0.25, 4096), second]).expect("rounds");
        let (client, _) = combined.proxies.expect("proxies");
        assert_eq!(client.cpu_seconds, 0.75);
        assert_eq!(client.memory.hwm_kib, 5000);
        assert_eq!(combined.outcome.ok, 30_000);
        assert_eq!(combined.outcome.p99_ms, 2.0);
        assert_eq!(combined.machine.busy, 0.5);
        assert_eq!(combined.rounds.len(), 2);
    }

    #[test]
    fn a_trellis_pair_slower_than_haproxy_fails_the_latency_target() {
        let mut results = sample();
        results.rates[1].runs[1].outcome.p99_ms = 1.3;
        assert_eq!(results.targets()[0].3, Some(false));
    }

    #[test]
    fn the_markdown_has_every_section_and_no_failures_reported() {
        let md = sample().markdown();
        for heading in [
            "## Targets",
            "## Latency at fixed rates",
            "## Memory at 1000 rps over 64 connections",
            "## Maximum throughput per core",
            "## How to reproduce",
        ] {
            assert!(md.contains(heading), "missing {heading}:\n{md}");
        }
        assert!(md.contains("No request failed"), "{md}");
        assert!(
            md.contains(
                "| 1000 | Trellis pair | 1000 | 0.200 | 1.050 | 2.100 | +0.000 | +0.050 | +0.100 |  | 15000 | 0 | 0.00 (0.00 / 0.00) |"
            ),
            "{md}"
        );
    }
}
