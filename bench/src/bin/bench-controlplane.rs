//! `trellis-bench-controlplane`: runs the control-plane bench (see `trellis_bench::controlplane`) and
//! writes its report. `make bench-controlplane` builds trellisd and this driver in release mode and
//! runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis_bench::machine::{command_line, cpu_model, memory, own_command_line};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use trellis_bench::controlplane::client::{self, Recorder};
use trellis_bench::controlplane::mesh::{ChangeKind, Mesh, Shape, write_file};
use trellis_bench::controlplane::report::{ChangeResult, Environment, Report, Setup};
use trellis_bench::procstat::{self, clock_ticks};
use trellis_bench::setups::{self, Process};

/// Why simulated proxies stopped.
type Failures = Arc<std::sync::Mutex<Vec<String>>>;

/// What trellisd prints once it listens (`trellisd::LISTENING_LINE`).
const LISTENING_LINE: &str = "trellisd listening on";
/// How long trellisd may take to read the folder and listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often trellisd's log is read while it starts: often, since the start-up time is reported.
const START_POLL: Duration = Duration::from_millis(20);
/// How long every proxy may take to connect and receive its snapshot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the expected proxies may take to receive a change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// A change is over once no message arrived for this long (longer than the push's longest debounce
/// and a folder poll), so proxies reached later than expected are still counted.
const QUIET: Duration = Duration::from_millis(600);
/// How often the driver looks at what arrived.
const POLL: Duration = Duration::from_millis(2);
/// How long trellisd's idle CPU use is measured.
const IDLE: Duration = Duration::from_secs(3);

/// Benchmark of trellisd's config push: many proxies, many services, changes made in the folder.
#[derive(Debug, Parser)]
#[command(name = "trellis-bench-controlplane")]
struct Args {
    /// The trellisd binary to measure.
    #[arg(long, default_value = "target/release/trellisd")]
    trellisd: PathBuf,
    /// How that binary was built, for the report.
    #[arg(long, default_value = "release build")]
    trellisd_build: String,
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// WorkloadEntries per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Every n-th service of a namespace is exported mesh-wide, the others to their namespace.
    #[arg(long, default_value_t = 10)]
    shared_every: usize,
    /// Export every service mesh-wide (every proxy sees everything).
    #[arg(long)]
    export_all: bool,
    /// Changes of each kind.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// trellisd's `--folder-poll`, in ms.
    #[arg(long, default_value_t = 50)]
    folder_poll_ms: u64,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results/controlplane.md")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let shape = Shape {
        namespaces: args.namespaces,
        services: args.services,
        endpoints_per_service: args.endpoints,
        proxies: args.proxies,
        shared_every: args.shared_every,
        export_all: args.export_all,
    };
    let dir = std::env::temp_dir().join(format!("trellis-bench-controlplane-{}", std::process::id()));
    let result = run(&args, shape, &dir, started);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    let markdown = report.markdown();
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &markdown).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{markdown}");
    println!("wrote {}", args.out.display());
    Ok(())
}

fn say(message: impl AsRef<str>) {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "bench-controlplane: {}", message.as_ref());
}

fn run(args: &Args, shape: Shape, dir: &Path, started: Instant) -> Result<Report> {
    let mut mesh = Mesh::new(shape);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    mesh.write(dir)?;
    let files = count_files(dir)?;
    say(format!("wrote {files} files to {}", dir.display()));
    let ticks = clock_ticks() as f64;
    let log = std::env::temp_dir().join(format!("trellis-bench-controlplane-{}.log", std::process::id()));
    let trellisd_args: Vec<String> = vec![
        "--folder".into(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--folder-poll".into(),
        format!("{}ms", args.folder_poll_ms),
    ];
    let spawned = Instant::now();
    let mut trellisd = Process::spawn("trellisd", &args.trellisd, &trellisd_args, None, log.clone())?;
    let pid = trellisd.pid();
    let address = wait_listening(&mut trellisd, &log)?;
    let mut setup = Setup { start_seconds: spawned.elapsed().as_secs_f64(), ..Setup::default() };
    let cpu = |pid| -> Result<f64> { Ok(procstat::cpu_ticks(pid)? as f64 / ticks) };
    setup.start_cpu_seconds = cpu(pid)?;
    setup.start_hwm_kib = procstat::memory(pid)?.hwm_kib;
    say(format!(
        "trellisd (pid {pid}) listens on {address} after {:.2} s; VmHWM {:.1} MiB",
        setup.start_seconds,
        setup.start_hwm_kib as f64 / 1024.0
    ));

    // The proxies run on one thread of their own: trellisd gets the other core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the proxies' runtime")?;
    let recorder = Arc::new(Recorder::new(shape.proxies));
    let connecting = Instant::now();
    let cpu_before = cpu(pid)?;
    let failures: Failures = Arc::default();
    for p in 0..shape.proxies {
        let (hello, recorder, failures) = (mesh.hello(p), recorder.clone(), failures.clone());
        runtime.spawn(async move {
            if let Err(err) = client::run(address, p, hello, recorder).await {
                failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{err:#}"));
            }
        });
    }
    let everybody: Vec<usize> = (0..shape.proxies).collect();
    let counts = vec![0; shape.proxies];
    wait_for(&recorder, &everybody, &counts, CONNECT_TIMEOUT, &mut trellisd, &failures)
        .context("connecting the proxies")?;
    setup.connect_seconds = connecting.elapsed().as_secs_f64();
    setup.connect_cpu_seconds = cpu(pid)? - cpu_before;
    quiet(&recorder)?;
    setup.snapshot_bytes = recorder.since(0).iter().filter(|m| m.snapshot).map(|m| m.bytes).collect();
    let memory = procstat::memory(pid)?;
    (setup.hwm_kib, setup.rss_kib) = (memory.hwm_kib, memory.rss_kib);
    say(format!(
        "{} proxies synced in {:.2} s; trellisd VmHWM {:.1} MiB",
        shape.proxies,
        setup.connect_seconds,
        memory.hwm_kib as f64 / 1024.0
    ));

    let idle_from = cpu(pid)?;
    std::thread::sleep(IDLE);
    let idle_cpu = (cpu(pid)? - idle_from) / IDLE.as_secs_f64();

    let mut changes = Vec::new();
    for round in 0..args.rounds {
        for kind in ChangeKind::ALL {
            let change = mesh.change(kind, round);
            let mark = recorder.total();
            let counts: Vec<u64> = (0..shape.proxies).map(|p| recorder.count(p)).collect();
            let cpu_before = cpu(pid)?;
            let t0 = Instant::now();
            write_file(dir, &change.file, &change.text)?;
            let waited = wait_for(&recorder, &change.expected, &counts, CHANGE_TIMEOUT, &mut trellisd, &failures);
            if let Err(err) = &waited {
                say(format!("{}: {err:#}", kind.label()));
            }
            quiet(&recorder)?;
            let cpu_seconds = cpu(pid)? - cpu_before - QUIET.as_secs_f64() * idle_cpu;
            let result =
                summarize(&change, &recorder.since(mark), t0, cpu_seconds.max(0.0), procstat::memory(pid)?.hwm_kib);
            say(format!(
                "{} ({}): {} proxies (expected {}), all acked after {:.0} ms",
                kind.label(),
                change.file,
                result.affected,
                result.expected,
                result.all_acked_ms()
            ));
            changes.push(result);
        }
    }
    let memory = procstat::memory(pid)?;
    trellisd.check_running()?;
    drop(trellisd);
    runtime.shutdown_background();
    Ok(Report {
        shape,
        files,
        folder_poll_ms: args.folder_poll_ms,
        environment: environment(args),
        setup,
        idle_cpu,
        changes,
        final_hwm_kib: memory.hwm_kib,
        final_rss_kib: memory.rss_kib,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What one change caused, from the messages that arrived after it.
fn summarize(
    change: &trellis_bench::controlplane::mesh::Change,
    messages: &[client::Received],
    t0: Instant,
    cpu_seconds: f64,
    hwm_kib: u64,
) -> ChangeResult {
    let mut first: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut bytes: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut clusters, mut outbound, mut inbound) = (0, false, false);
    for m in messages {
        first.entry(m.proxy).or_insert(m.at);
        *bytes.entry(m.proxy).or_default() += m.bytes;
        clusters = clusters.max(m.clusters + m.removed_clusters);
        outbound |= m.outbound;
        inbound |= m.inbound;
    }
    let expected: BTreeSet<usize> = change.expected.iter().copied().collect();
    let affected: BTreeSet<usize> = first.keys().copied().collect();
    ChangeResult {
        kind: change.kind,
        file: change.file.clone(),
        expected: expected.len(),
        affected: affected.len(),
        unexpected: affected.difference(&expected).count(),
        missing: expected.difference(&affected).count(),
        latencies_ms: first.values().map(|at| at.duration_since(t0).as_secs_f64() * 1000.0).collect(),
        bytes: bytes.values().copied().collect(),
        clusters,
        outbound,
        inbound,
        cpu_seconds,
        hwm_kib,
    }
}

/// Waits until each of `proxies` received more messages than `counts` says it had.
fn wait_for(
    recorder: &Recorder,
    proxies: &[usize],
    counts: &[u64],
    timeout: Duration,
    trellisd: &mut Process,
    failures: &Failures,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<usize> = proxies.to_vec();
    loop {
        pending.retain(|&p| recorder.count(p) <= counts[p]);
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(failure) = failures.lock().unwrap_or_else(|e| e.into_inner()).first() {
            bail!("a proxy stopped: {failure}; see trellisd's log {}", trellisd.log.display());
        }
        trellisd.check_running()?;
        if Instant::now() > deadline {
            bail!("{} of {} proxies received nothing within {timeout:?}", pending.len(), proxies.len());
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until no message arrived for [`QUIET`].
fn quiet(recorder: &Recorder) -> Result<()> {
    let mut total = recorder.total();
    let mut still_since = Instant::now();
    while still_since.elapsed() < QUIET {
        std::thread::sleep(POLL * 5);
        let now = recorder.total();
        if now != total {
            (total, still_since) = (now, Instant::now());
        }
    }
    Ok(())
}

/// Reads trellisd's log until it says where it listens.
fn wait_listening(trellisd: &mut Process, log: &Path) -> Result<SocketAddr> {
    let mut address = None;
    setups::wait_until(
        &mut [trellisd],
        START_TIMEOUT,
        START_POLL,
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            address = text.lines().find_map(|l| l.strip_prefix(LISTENING_LINE)).map(|a| a.trim().to_owned());
            address.is_some()
        },
        || format!("trellisd did not say where it listens (see {})", log.display()),
    )?;
    let address = address.unwrap_or_default();
    address.parse().with_context(|| format!("trellisd's address {address:?}"))
}

fn count_files(dir: &Path) -> Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            count += count_files(&entry.path())?;
        } else {
            count += 1;
        }
    }
    Ok(count)
}

fn environment(args: &Args) -> Environment {
    let cpu_model = cpu_model();
    let memory = memory();
    let unknown = || "unknown".to_owned();
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(unknown);
    let dirty =
        command_line("git", &["status", "--porcelain", "--", "controlplane", "api"]).is_some_and(|l| !l.is_empty());
    let trellisd = args.trellisd.display().to_string();
    Environment {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown),
        cpu_model,
        nproc: command_line("nproc", &[]).and_then(|n| n.parse().ok()).unwrap_or(0),
        kernel: command_line("uname", &["-sr"]).unwrap_or_else(unknown),
        memory,
        trellisd: format!(
            "{} ({}, commit {commit}{})",
            command_line(&trellisd, &["--version"]).unwrap_or_else(unknown),
            args.trellisd_build,
            if dirty { " with uncommitted changes in controlplane/ or api/" } else { "" }
        ),
        rustc: command_line("rustc", &["--version"]).unwrap_or_else(unknown),
        command: own_command_line("trellis-bench-controlplane"),
    }
}
