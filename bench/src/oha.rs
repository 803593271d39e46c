//! Runs the `oha` load generator and reads its JSON output.
//!
//! Fixed-rate runs use `-q RATE --latency-correction`: oha schedules request *i* at `start + i/RATE`
//! and measures its latency from that scheduled time, so a stall that delays later requests counts
//! against them too (no coordinated omission). Unthrottled runs (no rate) measure throughput only.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

/// What oha sends.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    /// Requests per second for all connections together; `None` sends as fast as it can.
    pub rate: Option<u32>,
    pub connections: u32,
    pub duration: Duration,
    /// The CPU oha is confined to (with `taskset`), if any.
    pub cpu: Option<usize>,
}

impl Load {
    /// oha's arguments for this load, writing JSON to stdout.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--no-tui".to_owned(),
            "--output-format".to_owned(),
            "json".to_owned(),
            "-c".to_owned(),
            self.connections.to_string(),
            "-z".to_owned(),
            format!("{}ms", self.duration.as_millis()),
        ];
        if let Some(rate) = self.rate {
            args.extend(["-q".to_owned(), rate.to_string(), "--latency-correction".to_owned()]);
        }
        args.push(self.url.clone());
        args
    }
}

/// The numbers of one run that the report uses. Latencies are in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with any other status.
    pub non_2xx: u64,
    /// Requests that failed without a response (connection errors, timeouts).
    pub errors: u64,
    /// Requests still in flight when the duration ended, which oha aborts by design.
    pub aborted_at_deadline: u64,
    /// Achieved rate over the run.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Error messages and their counts, as oha names them.
    pub error_kinds: Vec<(String, u64)>,
}

impl Outcome {
    /// Several runs of the same load as one: counts added up, rate averaged, and each latency
    /// percentile the median of the runs' (so one disturbed run does not decide the result).
    pub fn combine(runs: &[Outcome]) -> Outcome {
        let median = |pick: fn(&Outcome) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            match values.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => values[n / 2],
                n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
            }
        };
        let mut error_kinds: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (kind, count) in runs.iter().flat_map(|r| &r.error_kinds) {
            *error_kinds.entry(kind.clone()).or_default() += count;
        }
        Outcome {
            ok: runs.iter().map(|r| r.ok).sum(),
            non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            aborted_at_deadline: runs.iter().map(|r| r.aborted_at_deadline).sum(),
            rps: runs.iter().map(|r| r.rps).sum::<f64>() / runs.len().max(1) as f64,
            p50_ms: median(|r| r.p50_ms),
            p99_ms: median(|r| r.p99_ms),
            p999_ms: median(|r| r.p999_ms),
            error_kinds: error_kinds.into_iter().collect(),
        }
    }
}

/// Runs oha with `load`, keeps its raw JSON in `raw_json`, and returns the outcome.
pub fn run(oha: &Path, load: &Load, raw_json: &Path) -> Result<Outcome> {
    let output = crate::setups::pinned(oha, load.cpu)
        .args(load.args())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", oha.display()))?;
    if !output.status.success() {
        bail!("oha exited with {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    std::fs::write(raw_json, &output.stdout).with_context(|| format!("writing {}", raw_json.display()))?;
    let text = String::from_utf8(output.stdout).context("oha's output is not UTF-8")?;
    parse(&text).with_context(|| format!("reading oha's JSON (kept in {})", raw_json.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Json {
    summary: Summary,
    latency_percentiles: Percentiles,
    #[serde(default)]
    status_code_distribution: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    error_distribution: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    requests_per_sec: f64,
}

/// Seconds; oha writes `null` when there was no successful request.
#[derive(Deserialize)]
struct Percentiles {
    p50: Option<f64>,
    p99: Option<f64>,
    #[serde(rename = "p99.9")]
    p999: Option<f64>,
}

/// The outcome of oha's `--output-format json` text.
pub fn parse(text: &str) -> Result<Outcome> {
    let json: Json = serde_json::from_str(text)?;
    let (mut ok, mut non_2xx) = (0, 0);
    for (status, count) in &json.status_code_distribution {
        if status.starts_with('2') {
            ok += count;
        } else {
            non_2xx += count;
        }
    }
    let (mut errors, mut aborted_at_deadline) = (0, 0);
    for (kind, count) in &json.error_distribution {
        if kind.contains("aborted due to deadline") {
            aborted_at_deadline += count;
        } else {
            errors += count;
        }
    }
    let ms = |seconds: Option<f64>| seconds.unwrap_or(f64::NAN) * 1000.0;
    Ok(Outcome {
        ok,
        non_2xx,
        errors,
        aborted_at_deadline,
        rps: json.summary.requests_per_sec,
        p50_ms: ms(json.latency_percentiles.p50),
        p99_ms: ms(json.latency_percentiles.p99),
        p999_ms: ms(json.latency_percentiles.p999),
        error_kinds: json.error_distribution.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_rate_load_asks_for_latency_correction() {
        let load = Load {
            url: "http://127.0.0.1:1/".into(),
            rate: Some(1000),
            connections: 16,
            duration: Duration::from_secs(15),
            cpu: None,
        };
        let args = load.args().join(" ");
        assert!(args.contains("-q 1000 --latency-correction"), "{args}");
        assert!(args.contains("-c 16 -z 15000ms"), "{args}");
        let unthrottled = Load { rate: None, ..load };
        assert!(!unthrottled.args().join(" ").contains("-q"));
    }

    #[test]
    fn combined_runs_add_counts_and_take_the_median_percentile() {
        let run = |p99_ms, ok| Outcome { ok, rps: 100.0, p99_ms, ..Outcome::default() };
        let combined = Outcome::combine(&[run(1.0, 10), run(9.0, 20), run(2.0, 30)]);
        assert_eq!(combined.ok, 60);
        assert_eq!(combined.p99_ms, 2.0, "the disturbed 9 ms run does not decide");
        assert_eq!(Outcome::combine(&[run(1.0, 1), run(3.0, 1)]).p99_ms, 2.0);
    }

    #[test]
    fn statuses_errors_and_percentiles_are_read_from_the_json() {
        let text = r#"{
            "summary": {"successRate": 0.99, "requestsPerSec": 999.5},
            "latencyPercentiles": {"p50": 0.0002, "p99": 0.0015, "p99.9": 0.004},
            "statusCodeDistribution": {"200": 14980, "503": 3},
            "errorDistribution": {"aborted due to deadline": 2, "connection closed": 1}
        }"#;
        let outcome = parse(text).expect("parse");
        assert_eq!((outcome.ok, outcome.non_2xx, outcome.errors, outcome.aborted_at_deadline), (14980, 3, 1, 2));
        assert!((outcome.p99_ms - 1.5).abs() < 1e-9);
        assert!((outcome.p999_ms - 4.0).abs() < 1e-9);
        assert!((outcome.rps - 999.5).abs() < 1e-9);
    }
}
