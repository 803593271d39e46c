//! `trellis-bench`: the driver of `make bench-proxy`. Starts the app, Trellis proxy pairs (plain
//! text and mutual TLS) and HAProxy pairs (plain text and TLS) on loopback addresses, puts the same
//! load through each (direct, then every pair, taking turns round by round), reads the proxies' CPU
//! and memory from `/proc`, and writes `bench/results/proxy.md` and `proxy.svg`. The TLS pairs'
//! certificates are made fresh for each run. Every process it starts is killed when it exits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_bench::machine::{command_line, cpu_model, memory, shell_join};

use anyhow::{Context as _, Result};
use clap::Parser;
use trellis_bench::oha::{self, Load};
use trellis_bench::pki::{MeshPki, PkiFiles};
use trellis_bench::report::{Environment, Machine, Point, Results, Run, Settings, TARGET_RATE, Usage, round_seconds};
use trellis_bench::setups::{self, ENTRY_PORT, Kind, Pair, PairOptions};
use trellis_bench::wakeup::{self, PROBE_MESSAGES, PROBE_RATE};
use trellis_bench::{chart, procstat};

/// Compare trellis-proxy pairs (plain text, mutual TLS) with direct traffic and HAProxy pairs.
#[derive(Debug, Parser)]
#[command(name = "trellis-bench", version, about)]
struct Args {
    #[arg(long, default_value = "target/release/trellis-proxy")]
    proxy: PathBuf,
    /// How `--proxy` was built, for the report (`make bench-proxy` says which target and allocator).
    #[arg(long, default_value = "release build")]
    proxy_build: String,
    #[arg(long, default_value = "target/release/trellis-bench-app")]
    app: PathBuf,
    /// The wake-up probe's echo server and pinger.
    #[arg(long, default_value = "target/release/trellis-bench-echo")]
    echo: PathBuf,
    #[arg(long, default_value = "bench/.tools/bin/oha")]
    oha: PathBuf,
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// Where proxy.md and proxy.svg go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Scratch space: configs, logs, raw oha JSON.
    #[arg(long, default_value = "target/bench-proxy")]
    work: PathBuf,
    /// Setups to measure, of: direct, trellis, haproxy, trellis-mtls, haproxy-tls, trellis-resilient
    /// (direct is always measured: the other setups' added latency is against it).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_kind,
        default_value = "direct,trellis,haproxy,trellis-mtls,haproxy-tls,trellis-resilient"
    )]
    setups: Vec<Kind>,
    /// Fixed request rates (requests per second, all connections together).
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u32>,
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Measured seconds per setup and load, split into `--rounds` runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Each load runs in this many rounds, the setups taking turns (direct, then each pair, then
    /// direct again, ...), so a disturbance of the machine does not fall on one setup only.
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Length of the discarded warm-up run before each measured round.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Rate and connections of the memory run.
    #[arg(long, default_value_t = 1000)]
    rss_rate: u32,
    #[arg(long, default_value_t = 64)]
    rss_connections: u32,
    /// Measured seconds per setup in the unthrottled runs, split into `--max-rounds` runs taking turns.
    #[arg(long, default_value_t = 15)]
    max_seconds: u64,
    #[arg(long, default_value_t = 3)]
    max_rounds: u64,
    /// Data-path threads per proxy in the fixed-rate and memory runs.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A round is measured again when the machine's busy time beyond the bench's own processes
    /// exceeds this many vCPUs (something else ran: a build, another test).
    #[arg(long, default_value_t = 0.35)]
    max_other_vcpu: f64,
    /// How often one round may be measured again.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// How many rounds may be measured again in all (bounds the bench's time on a busy machine).
    #[arg(long, default_value_t = 12)]
    retry_budget: u32,
    /// Worker threads of the app.
    #[arg(long, default_value_t = 1)]
    app_threads: usize,
}

fn parse_kind(text: &str) -> Result<Kind> {
    Kind::from_slug(text)
}

/// The setups of `--setups`: direct always, each once, in the order of [`Kind::ALL`].
fn selected(setups: &[Kind]) -> Vec<Kind> {
    Kind::ALL.into_iter().filter(|k| *k == Kind::Direct || setups.contains(k)).collect()
}

/// The app's address; each phase puts its pairs on 127.90.<phase>.1-8 (see [`pair_ips`]).
fn app_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 90, 0, 1)), ENTRY_PORT)
}

/// The wake-up probe's echo server, away from every phase's addresses.
fn probe_addr() -> SocketAddr {
    SocketAddr::new(ip(0, 200), ENTRY_PORT)
}

/// The client and server proxies' addresses of a pair in a phase (direct: the app's, both).
fn pair_ips(phase: u8, kind: Kind) -> (IpAddr, IpAddr) {
    let first = match kind {
        Kind::Direct => return (app_addr().ip(), app_addr().ip()),
        Kind::Trellis => 1,
        Kind::Haproxy => 3,
        Kind::TrellisMtls => 5,
        Kind::HaproxyTls => 7,
        Kind::TrellisResilient => 9,
    };
    (ip(phase, first), ip(phase, first + 1))
}

fn ip(phase: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 90, phase, host))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut bench = Bench::new(&args)?;
    let mut results = Results {
        environment: environment(&args),
        settings: Settings {
            setups: selected(&args.setups),
            rates: args.rates.clone(),
            connections: args.connections,
            seconds: args.seconds,
            rounds: args.rounds,
            warmup_seconds: args.warmup_seconds,
            rss_rate: args.rss_rate,
            rss_connections: args.rss_connections,
            max_seconds: args.max_seconds,
            max_rounds: args.max_rounds,
            threads: args.threads,
            app_threads: args.app_threads,
            max_other_vcpu: args.max_other_vcpu,
            retries: args.retries,
            retry_budget: args.retry_budget,
        },
        ..Results::default()
    };
    // Phase 0: what a wake-up costs on this machine, before anything else runs.
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("[{}] wake-up probe: {} messages per placement at {} per second", clock(), PROBE_MESSAGES, PROBE_RATE);
    results.wakeup = wakeup::probe(&args.echo, &bench.phase_dir("wakeup")?, probe_addr(), nproc)?;

    let app_dir = bench.phase_dir("app")?;
    let app = setups::start_app(&args.app, app_addr(), args.app_threads, None, &app_dir)?;
    bench.app_pid = app.pid();

    // Phase 1: fixed rates, one set of proxies kept across all rates.
    let options = PairOptions { threads: args.threads, pin: None };
    let mut pairs = bench.start_pairs(1, "rates", options)?;
    for &rate in &args.rates {
        let runs = bench.measure_point(&mut pairs, Some(rate), args.connections, args.seconds, args.rounds, "rate")?;
        results.rates.push(Point { rate, connections: args.connections, runs });
    }
    drop(pairs);

    // Phase 2: memory with many connections, on fresh processes so the peak is this load's alone.
    let mut pairs = bench.start_pairs(2, "memory", options)?;
    for pair in &pairs.pairs {
        let (client, server) = (procstat::memory(pair.client.pid())?, procstat::memory(pair.server.pid())?);
        results.idle_memory.push((pair.kind, client, server));
    }
    let (rate, connections) = (Some(args.rss_rate), args.rss_connections);
    let runs = bench.measure_point(&mut pairs, rate, connections, args.seconds, args.rounds, "memory")?;
    results.memory = Some(Point { rate: args.rss_rate, connections: args.rss_connections, runs });
    drop(pairs);

    // Phase 3: unthrottled, one data-path thread per proxy, each proxy on its own CPU.
    let pin = (nproc >= 2).then_some((0, 1));
    let mut pairs = bench.start_pairs(3, "max", PairOptions { threads: 1, pin })?;
    let (seconds, rounds) = (args.max_seconds, args.max_rounds);
    results.max = bench.measure_point(&mut pairs, None, args.connections, seconds, rounds, "max")?;
    drop(pairs);

    // Phase 4: every process of each setup (oha, the app, both proxies) on CPU 0, at the target rate:
    // what the proxies use when no wake-up crosses vCPUs.
    drop(app);
    let app = setups::start_app(&args.app, app_addr(), args.app_threads, Some(0), &bench.phase_dir("app-one-vcpu")?)?;
    bench.app_pid = app.pid();
    let mut pairs = bench.start_pairs(4, "one-vcpu", PairOptions { threads: args.threads, pin: Some((0, 0)) })?;
    pairs.oha_cpu = Some(0);
    let (rate, connections) = (Some(TARGET_RATE), args.connections);
    let runs = bench.measure_point(&mut pairs, rate, connections, args.seconds, args.rounds, "one-vcpu")?;
    results.one_vcpu = Some(Point { rate: TARGET_RATE, connections, runs });
    drop(pairs);
    drop(app);

    results.log_findings = log_findings(&args.work)?;
    results.elapsed_seconds = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let md_path = args.out.join("proxy.md");
    std::fs::write(&md_path, results.markdown()).with_context(|| format!("writing {}", md_path.display()))?;
    let subtitle = format!(
        "{} · {} vCPUs · {} · median of {} rounds of {} s per point",
        results.environment.cpu_model,
        results.environment.nproc,
        results.environment.date,
        args.rounds,
        args.seconds / args.rounds.max(1)
    );
    let svg_path = args.out.join("proxy.svg");
    std::fs::write(&svg_path, chart::latency_svg(&results.rates, &subtitle))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!("\nTargets:");
    for target in results.targets() {
        let verdict = match target.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "not measured",
        };
        println!(
            "  {verdict:<4}  {}: {} {}, {} {}",
            target.what,
            target.trellis.0.label(),
            target.trellis.1,
            target.haproxy.0.label(),
            target.haproxy.1
        );
    }
    println!("\nWrote {} and {} in {:.0} s.", md_path.display(), svg_path.display(), results.elapsed_seconds);
    Ok(())
}

/// The pairs of one phase, one per selected setup but direct.
struct Pairs {
    pairs: Vec<Pair>,
    /// The CPU oha runs on in this phase, if pinned.
    oha_cpu: Option<usize>,
}

impl Pairs {
    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.pairs.iter().flat_map(|p| [p.client.pid(), p.server.pid()])
    }

    fn get(&mut self, kind: Kind) -> Option<&mut Pair> {
        self.pairs.iter_mut().find(|p| p.kind == kind)
    }

    /// Where a setup's traffic enters.
    fn entry(&self, kind: Kind) -> SocketAddr {
        self.pairs.iter().find(|p| p.kind == kind).map_or_else(app_addr, |p| p.entry)
    }
}

struct Bench<'a> {
    args: &'a Args,
    /// The setups measured, direct first.
    kinds: Vec<Kind>,
    /// The TLS pairs' certificates, made once per run (when a TLS pair is measured).
    pki: Option<PkiFiles>,
    ticks_per_second: f64,
    app_pid: u32,
    /// Rounds that may still be measured again.
    retry_budget: std::cell::Cell<u32>,
}

impl<'a> Bench<'a> {
    fn new(args: &'a Args) -> Result<Self> {
        let needed = [
            ("trellis-proxy", &args.proxy),
            ("trellis-bench-app", &args.app),
            ("trellis-bench-echo", &args.echo),
            ("oha", &args.oha),
        ];
        for (what, path) in needed {
            anyhow::ensure!(path.exists(), "{what} not found at {} (run `make bench-proxy`)", path.display());
        }
        std::fs::create_dir_all(&args.work).with_context(|| format!("creating {}", args.work.display()))?;
        let kinds = selected(&args.setups);
        let pki = match kinds.iter().any(|k| k.is_tls()) {
            true => {
                let dir = args.work.join("pki");
                Some(
                    MeshPki::generate()?
                        .write(&dir)
                        .with_context(|| format!("writing certificates to {}", dir.display()))?,
                )
            }
            false => None,
        };
        Ok(Bench {
            args,
            kinds,
            pki,
            ticks_per_second: procstat::clock_ticks() as f64,
            app_pid: 0,
            retry_budget: args.retry_budget.into(),
        })
    }

    fn phase_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.args.work.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    fn start_pairs(&self, phase: u8, name: &str, options: PairOptions) -> Result<Pairs> {
        let dir = self.phase_dir(name)?;
        let (trellis, haproxy) = (&self.args.proxy, &self.args.haproxy);
        let mut pairs = Vec::new();
        for &kind in &self.kinds {
            let tls =
                if kind.is_tls() { Some(self.pki.as_ref().context("no certificates for a TLS pair")?) } else { None };
            let ips = pair_ips(phase, kind);
            let pair = match kind {
                Kind::Direct => continue,
                Kind::Trellis | Kind::TrellisMtls | Kind::TrellisResilient => {
                    let resilient = kind == Kind::TrellisResilient;
                    setups::start_trellis(trellis, &dir, ips, app_addr(), options, tls, resilient)?
                }
                Kind::Haproxy | Kind::HaproxyTls => {
                    setups::start_haproxy(haproxy, &dir, ips, app_addr(), options, tls)?
                }
            };
            pairs.push(pair);
        }
        Ok(Pairs { pairs, oha_cpu: None })
    }

    fn load(&self, kind: Kind, pairs: &Pairs, rate: Option<u32>, connections: u32, seconds: u64) -> Load {
        let target = pairs.entry(kind);
        let duration = Duration::from_secs(seconds);
        Load { url: format!("http://{target}/"), rate, connections, duration, cpu: pairs.oha_cpu }
    }

    /// CPU ticks of every process of the bench: the app, the proxies, this driver and the oha runs it
    /// has waited for.
    fn bench_ticks(&self, pairs: &Pairs) -> Result<u64> {
        let mut ticks = procstat::own_and_children_ticks()?;
        for pid in std::iter::once(self.app_pid).chain(pairs.pids()) {
            ticks += procstat::cpu_ticks(pid)?;
        }
        Ok(ticks)
    }

    /// CPU seconds of a process so far: by the scheduler's count, as `utime + stime`, and `stime`.
    fn cpu_seconds(&self, pid: u32) -> Result<[f64; 3]> {
        let ticks = procstat::process_ticks(pid)?;
        let scheduler = Duration::from_nanos(procstat::process_cpu_ns(pid)?).as_secs_f64();
        Ok([scheduler, ticks.total() as f64 / self.ticks_per_second, ticks.system as f64 / self.ticks_per_second])
    }

    /// Every setup under one load, `seconds` in all per setup, in `rounds` interleaved rounds.
    fn measure_point(
        &self,
        pairs: &mut Pairs,
        rate: Option<u32>,
        connections: u32,
        seconds: u64,
        rounds: u64,
        tag: &str,
    ) -> Result<Vec<Run>> {
        let rounds = rounds.max(1);
        let round_seconds = round_seconds(seconds, rounds);
        let mut per_kind: Vec<Vec<Run>> = vec![Vec::new(); self.kinds.len()];
        for round in 1..=rounds {
            // The first unthrottled round gets a longer warm-up: it runs on fresh processes.
            let warmup = match rate {
                None if round == 1 => self.args.warmup_seconds.max(2),
                _ => self.args.warmup_seconds,
            };
            for (i, &kind) in self.kinds.iter().enumerate() {
                let load = self.load(kind, pairs, rate, connections, round_seconds);
                let label = rate.map_or("max".to_owned(), |r| format!("{r}rps"));
                let name = format!("{tag}-{label}-{connections}c-{}-round{round}", kind.slug());
                per_kind[i].push(self.measure_quietly(kind, pairs, &load, warmup, &name)?);
            }
        }
        Ok(per_kind.into_iter().filter_map(Run::combine).collect())
    }

    /// [`Self::measure`], again while something outside the bench kept the machine busy (up to
    /// `--retries` times; fixed-rate loads only); the quietest attempt counts.
    fn measure_quietly(&self, kind: Kind, pairs: &mut Pairs, load: &Load, warmup: u64, name: &str) -> Result<Run> {
        let other = |run: &Run| run.machine.busy - run.machine.bench;
        let mut best = self.measure(kind, pairs, load, warmup, name)?;
        // Unthrottled, the load itself keeps the machine busy (much of its loopback networking in
        // softirq context, charged to no bench process): there is no quieter moment to wait for.
        if load.rate.is_none() {
            best.disturbed = u32::from(other(&best) > self.args.max_other_vcpu);
            return Ok(best);
        }
        let mut latest = other(&best);
        for attempt in 1..=self.args.retries {
            if latest <= self.args.max_other_vcpu || self.retry_budget.get() == 0 {
                break;
            }
            self.retry_budget.set(self.retry_budget.get() - 1);
            eprintln!("    {latest:.2} vCPU of other work on the machine: measuring this round again");
            let run = self.measure(kind, pairs, load, warmup, &format!("{name}-retry{attempt}"))?;
            latest = other(&run);
            if latest < other(&best) {
                best = run;
            }
            best.redone = attempt;
        }
        best.disturbed = u32::from(other(&best) > self.args.max_other_vcpu);
        Ok(best)
    }

    /// A warm-up run (discarded), then the measured run with the proxies' CPU and memory around it.
    fn measure(&self, kind: Kind, pairs: &mut Pairs, load: &Load, warmup_seconds: u64, name: &str) -> Result<Run> {
        let raw = self.phase_dir("raw")?;
        eprintln!("[{}] {name}: {} s warm-up, {} s measured", clock(), warmup_seconds, load.duration.as_secs());
        if warmup_seconds > 0 {
            let warmup = Load { duration: Duration::from_secs(warmup_seconds), ..load.clone() };
            oha::run(&self.args.oha, &warmup, &raw.join(format!("{name}-warmup.json")))?;
        }
        let (machine_before, bench_before) = (procstat::machine_ticks()?, self.bench_ticks(pairs)?);
        let mut pair = pairs.get(kind);
        let before = match pair.as_deref_mut() {
            Some(pair) => {
                pair.check_running()?;
                Some((self.cpu_seconds(pair.client.pid())?, self.cpu_seconds(pair.server.pid())?))
            }
            None => None,
        };
        let started = Instant::now();
        let outcome = oha::run(&self.args.oha, load, &raw.join(format!("{name}.json")))?;
        let seconds = started.elapsed().as_secs_f64();
        let proxies = match (pair, before) {
            (Some(pair), Some((client_before, server_before))) => {
                let usage = |pid: u32, [cpu_before, stat_before, system_before]: [f64; 3]| -> Result<Usage> {
                    let [cpu, stat, system] = self.cpu_seconds(pid)?;
                    let stat = stat - stat_before;
                    Ok(Usage {
                        cpu_seconds: procstat::trusted_scheduler_seconds(cpu - cpu_before, stat, self.ticks_per_second),
                        stat_seconds: stat,
                        system_seconds: system - system_before,
                        memory: procstat::memory(pid)?,
                    })
                };
                let client = usage(pair.client.pid(), client_before)?;
                let server = usage(pair.server.pid(), server_before)?;
                pair.check_running()?;
                Some((client, server))
            }
            _ => None,
        };
        let (machine_after, bench_after) = (procstat::machine_ticks()?, self.bench_ticks(pairs)?);
        let vcpu = |ticks: u64| ticks as f64 / self.ticks_per_second / seconds;
        let machine = Machine {
            busy: vcpu(machine_after.busy - machine_before.busy),
            bench: vcpu(bench_after - bench_before),
            steal: vcpu(machine_after.steal - machine_before.steal),
        };
        eprintln!(
            "    {:.0} rps, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, {} ok, {} failed, machine {:.2} vCPU (bench {:.2}){}",
            outcome.rps,
            outcome.p50_ms,
            outcome.p99_ms,
            outcome.p999_ms,
            outcome.ok,
            outcome.non_2xx + outcome.errors,
            machine.busy,
            machine.bench,
            proxies.map_or(String::new(), |(c, s)| format!(
                ", CPU {:.2}+{:.2} s, peak RSS {}+{} KiB",
                c.cpu_seconds, s.cpu_seconds, c.memory.hwm_kib, s.memory.hwm_kib
            ))
        );
        Ok(Run {
            kind,
            outcome: outcome.clone(),
            proxies,
            seconds,
            machine,
            rounds: vec![outcome],
            round_cpu: proxies.iter().map(|(c, s)| (c.cpu_seconds, s.cpu_seconds)).collect(),
            redone: 0,
            disturbed: 0,
        })
    }
}

fn clock() -> String {
    command_line("date", &["+%H:%M:%S"]).unwrap_or_default()
}

fn environment(args: &Args) -> Environment {
    let path = |p: &Path| p.display().to_string();
    let cpu_model = cpu_model();
    let memory = memory();
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Only the crates compiled into trellis-proxy matter for "uncommitted changes".
    let dirty = command_line("git", &["status", "--porcelain", "--", "proxy", "api"]).is_some_and(|l| !l.is_empty());
    let unknown = || "unknown".to_owned();
    Environment {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown),
        nproc: command_line("nproc", &[]).and_then(|n| n.parse().ok()).unwrap_or(0),
        cpu_model,
        kernel: command_line("uname", &["-sr"]).unwrap_or_else(unknown),
        memory,
        versions: vec![
            (
                "trellis-proxy".into(),
                format!(
                    "{} ({}, commit {commit}{})",
                    command_line(&path(&args.proxy), &["--version"]).unwrap_or_else(unknown),
                    args.proxy_build,
                    if dirty { " with uncommitted changes in proxy/ or api/" } else { "" }
                ),
            ),
            ("HAProxy".into(), command_line(&path(&args.haproxy), &["-v"]).unwrap_or_else(unknown)),
            ("TLS libraries".into(), tls_libraries(&args.haproxy)),
            ("oha".into(), command_line(&path(&args.oha), &["--version"]).unwrap_or_else(unknown)),
            ("rustc".into(), command_line("rustc", &["--version"]).unwrap_or_else(unknown)),
        ],
        command: reproduce_command(),
    }
}

/// The TLS stacks of the TLS pairs: rustls (its version from Cargo.lock) and HAProxy's OpenSSL.
fn tls_libraries(haproxy: &Path) -> String {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut lines = lock.lines().skip_while(|l| *l != "name = \"rustls\"").skip(1);
    let rustls = lines.next().and_then(|l| l.strip_prefix("version = ")).map_or("?", |v| v.trim_matches('"'));
    let output = Command::new(haproxy).arg("-vv").output().map(|o| o.stdout).unwrap_or_default();
    let text = String::from_utf8_lossy(&output);
    let openssl =
        text.lines().find_map(|l| l.strip_prefix("Running on OpenSSL version :")).map_or("unknown", str::trim);
    format!("trellis-proxy: rustls {rustls} on ring; HAProxy: {openssl}")
}

fn reproduce_command() -> String {
    let args: Vec<String> = std::env::args().collect();
    shell_join(&args)
}

/// Warning and error lines in the logs of every process the bench started (colours stripped).
fn log_findings(work: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut findings = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(work)?.filter_map(|e| Some(e.ok()?.path())).collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
            let lines: Vec<String> = text
                .lines()
                .filter(|l| {
                    let lower = l.to_ascii_lowercase();
                    ["warn", "error", "alert", "panic"].iter().any(|w| lower.contains(w))
                })
                .map(str::to_owned)
                .collect();
            let name = log.strip_prefix(work).unwrap_or(&log).display().to_string();
            findings.push((name, lines));
        }
    }
    Ok(findings)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
