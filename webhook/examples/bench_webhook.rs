//! `make bench-webhook`: admission latency of the `trellis-webhook` binary over HTTPS at a fixed
//! request rate (100 per second by default), as the API server calls it: a few kept-alive TLS
//! connections, one realistic pod-creation review per request, each answer checked (allowed, with a
//! patch). The load is open-loop: each request's latency counts from when it was due, so a stall
//! is not hidden by requests that were never sent. Writes a Markdown table (bench/results/webhook.md).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde_json::Value;
use support::{Client, TestCa};
use tokio::sync::Mutex;

/// What the p99 must stay under.
const TARGET_P99: Duration = Duration::from_millis(5);
const LISTENING_PREFIX: &str = "trellis-webhook listening on ";

#[derive(Debug, Parser)]
struct Args {
    /// The trellis-webhook binary to measure.
    #[arg(long)]
    binary: PathBuf,
    /// Requests per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    seconds: u64,
    #[arg(long, default_value = "3", value_name = "SECONDS")]
    warmup: u64,
    /// Kept-alive connections (the API server keeps a few).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Where the Markdown table goes.
    #[arg(long, default_value = "bench/results/webhook.md")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().context("a temporary folder")?;
    ca.serving("bench").write(dir.path());
    let mut child = Command::new(&args.binary)
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .arg("--cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--key")
        .arg(dir.path().join("key.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.binary.display()))?;
    let result = run(&args, Arc::new(ca), &mut child).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(args: &Args, ca: Arc<TestCa>, child: &mut std::process::Child) -> Result<()> {
    let stdout = child.stdout.take().context("the webhook's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("the webhook's first line")?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix(LISTENING_PREFIX)
        .with_context(|| format!("unexpected first line {line:?}"))?
        .parse()
        .context("the webhook's address")?;
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pod-create.json");
    let body = Arc::new(std::fs::read(fixture).context("the pod fixture")?);

    let mut pool = Vec::new();
    for _ in 0..args.connections.max(1) {
        pool.push(Client::connect(&ca, addr).await);
    }
    let pool = Arc::new(Mutex::new(pool));
    let interval = Duration::from_secs(1) / args.rate.max(1);
    let total = (args.warmup + args.seconds) * u64::from(args.rate);
    let warmup = args.warmup * u64::from(args.rate);
    let start = Instant::now();
    // Requests are paced by an OS thread sleeping until each one is due: tokio's timer wheel ticks
    // every millisecond, so pacing with `sleep_until` would send each request up to 1 ms late and
    // charge that to the webhook (latency counts from when a request was due).
    let runtime = tokio::runtime::Handle::current();
    let shared_pool = pool.clone();
    let pacer = std::thread::spawn(move || -> Result<Vec<tokio::task::JoinHandle<(u64, Duration, bool)>>> {
        let mut tasks = Vec::new();
        for n in 0..total {
            let due = start + interval * u32::try_from(n).context("too many requests")?;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let (pool, body, ca) = (shared_pool.clone(), body.clone(), ca.clone());
            tasks.push(runtime.spawn(async move {
                let mut client = match pool.lock().await.pop() {
                    Some(client) => client,
                    None => Client::connect(&ca, addr).await,
                };
                let (status, answer) = client.request("POST", "/inject", body.to_vec()).await;
                let took = due.elapsed();
                pool.lock().await.push(client);
                let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                let good = status == 200
                    && answer["response"]["allowed"] == true
                    && answer["response"]["patch"].as_str().is_some_and(|p| !p.is_empty());
                (n, took, good)
            }));
        }
        Ok(tasks)
    });
    let tasks = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .context("the pacing thread")?
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))??;
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (n, took, good) = task.await.context("a request task")?;
        if !good {
            failures += 1;
        }
        if n >= warmup {
            latencies.push(took);
        }
    }
    let elapsed = start.elapsed();
    let server_p99 = {
        let mut client = pool.lock().await.pop().context("a pooled connection")?;
        let (_, metrics) = client.request("GET", "/metrics", Vec::new()).await;
        server_quantile(&String::from_utf8_lossy(&metrics), 0.99)
    };
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    let (p50, p90, p99, max) = (at(0.50), at(0.90), at(0.99), at(1.0));
    let report = report(args, elapsed, latencies.len(), failures, [p50, p90, p99, max], server_p99);
    print!("{report}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.out, &report).with_context(|| format!("writing {}", args.out.display()))?;
    if failures > 0 {
        bail!("{failures} reviews were not answered with an allowed, patched pod");
    }
    if p99 >= TARGET_P99 {
        bail!("p99 {p99:?} is over the target {TARGET_P99:?}");
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The upper bound of the histogram bucket holding quantile `q` of the server's own admission time
/// (`trellis_webhook_admission_duration_seconds`, warm-up included), in seconds.
fn server_quantile(metrics: &str, q: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("trellis_webhook_admission_duration_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets.iter().find(|(_, count)| *count >= total * q).map(|(le, _)| *le)
}

fn report(
    args: &Args,
    elapsed: Duration,
    measured: usize,
    failures: usize,
    quantiles: [Duration; 4],
    server_p99: Option<f64>,
) -> String {
    let [p50, p90, p99, max] = quantiles;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if args.binary.components().any(|c| c.as_os_str() == "release") { "release" } else { "debug" };
    let verdict = if p99 < TARGET_P99 { "met" } else { "MISSED" };
    let mut text = String::new();
    let _ = writeln!(text, "# Webhook admission latency (`make bench-webhook`)\n");
    let _ = writeln!(
        text,
        "`trellis-webhook` ({profile} build) answering a realistic pod-creation `AdmissionReview` over HTTPS \
         (TLS 1.3, {} kept-alive HTTP/1.1 connections) at {} requests per second, open loop (paced by an OS thread, not tokio's 1 ms timer): latency counts \
         from when each request was due. {} s warm-up, then {} s measured ({:.1} s in all).\n",
        args.connections,
        args.rate,
        args.warmup,
        args.seconds,
        elapsed.as_secs_f64()
    );
    let server = server_p99.map_or_else(|| "n/a".to_owned(), |s| format!("≤ {:.2}", s * 1000.0));
    let _ = writeln!(
        text,
        "| requests measured | failed | p50 ms | p90 ms | p99 ms | max ms | server-side p99 ms (histogram bucket) | target p99 < 5 ms |"
    );
    let _ = writeln!(text, "|---:|---:|---:|---:|---:|---:|---:|:---:|");
    let _ = writeln!(
        text,
        "| {measured} | {failures} | {} | {} | {} | {} | {server} | {verdict} |\n",
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max)
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("unknown").to_owned();
    let _ = writeln!(text, "Machine: {cpu}, {cores} cores, load average {load} at the end of the run.");
    text
}
