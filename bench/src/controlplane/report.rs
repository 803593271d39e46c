//! The measurements of one control-plane bench run and the markdown report made from them
//! (`bench/results/controlplane.md`).

use std::fmt::Write as _;

use super::mesh::{ChangeKind, Shape};

/// Target: p99 time from a change until every affected proxy acknowledged it, in ms.
pub const TARGET_P99_MS: f64 = 1000.0;
/// Target: trellisd's peak resident memory, in MiB.
pub const TARGET_RSS_MIB: f64 = 64.0;
/// Target: bytes an endpoint change sends to each affected proxy ("at most a few KB").
pub const TARGET_ENDPOINT_BYTES: usize = 4096;

/// One change and what it caused.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeResult {
    pub kind: ChangeKind,
    pub file: String,
    /// Proxies that should see it (their namespace sees the service or host).
    pub expected: usize,
    /// Proxies that received a message for it.
    pub affected: usize,
    /// Affected proxies that were not expected, and expected ones that received nothing.
    pub unexpected: usize,
    pub missing: usize,
    /// Per affected proxy: ms from the file's rename until it acknowledged (its message arrived).
    pub latencies_ms: Vec<f64>,
    /// Per affected proxy: bytes received for the change.
    pub bytes: Vec<usize>,
    /// Clusters per delta (largest), and whether any delta replaced outbound or inbound.
    pub clusters: usize,
    pub outbound: bool,
    pub inbound: bool,
    /// trellisd's CPU seconds from the change until every message arrived, and its VmHWM after.
    pub cpu_seconds: f64,
    pub hwm_kib: u64,
}

impl ChangeResult {
    /// Time until the last affected proxy acknowledged.
    pub fn all_acked_ms(&self) -> f64 {
        self.latencies_ms.iter().copied().fold(0.0, f64::max)
    }
}

/// Connecting every proxy and sending each its snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Setup {
    /// trellisd's start until it listened (it reads the folder first), in seconds.
    pub start_seconds: f64,
    /// First connection until every proxy acknowledged its snapshot, in seconds.
    pub connect_seconds: f64,
    pub snapshot_bytes: Vec<usize>,
    /// trellisd's CPU seconds while starting and while proxies connected.
    pub start_cpu_seconds: f64,
    pub connect_cpu_seconds: f64,
    /// trellisd's VmHWM once it listened, before any proxy connected.
    pub start_hwm_kib: u64,
    pub hwm_kib: u64,
    pub rss_kib: u64,
}

/// The machine and the software measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    pub date: String,
    pub cpu_model: String,
    pub nproc: usize,
    pub kernel: String,
    pub memory: String,
    pub trellisd: String,
    pub rustc: String,
    pub command: String,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub shape: Shape,
    pub files: usize,
    pub folder_poll_ms: u64,
    pub environment: Environment,
    pub setup: Setup,
    /// trellisd's CPU use with nothing changing (the folder polls), in CPU seconds per second.
    pub idle_cpu: f64,
    pub changes: Vec<ChangeResult>,
    /// trellisd's VmHWM and VmRSS at the end.
    pub final_hwm_kib: u64,
    pub final_rss_kib: u64,
    pub seconds: f64,
}

/// The `p`-th percentile (0..=100) of `values` by nearest rank; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"))
}

fn verdict(pass: bool) -> &'static str {
    if pass { "**PASS**" } else { "**FAIL**" }
}

impl Report {
    fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &ChangeResult> {
        self.changes.iter().filter(move |c| c.kind == kind)
    }

    fn latencies(&self) -> Vec<f64> {
        self.changes.iter().flat_map(|c| c.latencies_ms.iter().copied()).collect()
    }

    fn peak_rss_kib(&self) -> u64 {
        self.final_hwm_kib.max(self.setup.hwm_kib)
    }

    fn endpoint_bytes_max(&self) -> Option<usize> {
        self.changes.iter().filter(|c| c.kind.is_endpoint()).flat_map(|c| c.bytes.iter().copied()).max()
    }

    /// (target, measured, pass) for each target.
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let latencies = self.latencies();
        let p99 = percentile(&latencies, 99.0);
        let complete = self.changes.iter().all(|c| c.missing == 0);
        let all_acked = self.changes.iter().map(ChangeResult::all_acked_ms).fold(0.0, f64::max);
        let bytes = self.endpoint_bytes_max();
        vec![
            (
                format!("p99 change-to-ack over every affected proxy of every change < {TARGET_P99_MS:.0} ms"),
                format!(
                    "p99 {} (p50 {}; slowest change fully acked after {all_acked:.0} ms{})",
                    ms(p99),
                    ms(percentile(&latencies, 50.0)),
                    if complete { "" } else { "; SOME EXPECTED PROXIES GOT NOTHING" }
                ),
                complete && p99.is_some_and(|p| p < TARGET_P99_MS),
            ),
            (
                format!("trellisd peak RSS (VmHWM, whole run) < {TARGET_RSS_MIB:.0} MiB"),
                format!("{:.1} MiB", mib(self.peak_rss_kib())),
                mib(self.peak_rss_kib()) < TARGET_RSS_MIB,
            ),
            (
                format!("bytes an endpoint change sends per affected proxy <= {TARGET_ENDPOINT_BYTES} B"),
                bytes.map_or_else(|| "-".to_owned(), |b| format!("{b} B at most")),
                bytes.is_some_and(|b| b <= TARGET_ENDPOINT_BYTES),
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.shape;
        let e = &self.environment;
        let _ = writeln!(md, "# trellisd benchmark: config push to {} proxies\n", s.proxies);
        let _ = writeln!(
            md,
            "Generated by `make bench-controlplane` on {} in {:.0} s. `trellisd` (the real binary, its own process) \
             serves a folder of YAML; {} simulated proxies in the bench process hold one config stream each over the \
             real push API (HTTP/2, NDJSON) and acknowledge every version as soon as it arrives. Changes are made by \
             rewriting one file in the folder (write to a hidden file, rename).\n",
            e.date, self.seconds, s.proxies
        );
        md.push_str("## Targets\n\n| target | measured | result |\n|---|---|---|\n");
        for (target, measured, pass) in self.targets() {
            let _ = writeln!(md, "| {target} | {measured} | {} |", verdict(pass));
        }
        let _ = writeln!(
            md,
            "\nChange-to-ack is measured from the rename of the changed file until the proxy read the message and \
             sent its ack (in the bench process, on the same clock). It includes the folder source noticing the \
             change: it polls every {} ms (`--folder-poll {}ms`; the default is 200 ms), so about half of that is \
             waiting for the next poll, plus the push's 20 ms debounce. Nothing is subtracted.\n",
            self.folder_poll_ms, self.folder_poll_ms
        );
        md.push_str("## Machine and versions\n\n");
        let _ = writeln!(
            md,
            "- CPU: {} ({} vCPUs by `nproc`), shared by trellisd and the bench's proxies",
            e.cpu_model, e.nproc
        );
        let _ = writeln!(md, "- memory: {}; kernel: {}", e.memory, e.kernel);
        let _ = writeln!(md, "- trellisd: {}", e.trellisd);
        let _ = writeln!(md, "- rustc: {}", e.rustc);
        let _ = writeln!(md, "- command: `{}`\n", e.command);
        md.push_str("## The mesh\n\n");
        let _ = writeln!(
            md,
            "- {} namespaces, {} ServiceEntries (one HTTP port each, STATIC, selecting WorkloadEntries by label), {} \
             WorkloadEntries ({} per service), {} VirtualServices (two per namespace: one on a mesh-wide host, one on \
             a namespace-local host; a timeout, retries and one route); {} files (one per service with its \
             WorkloadEntries, one per VirtualService).",
            s.namespaces,
            s.services,
            s.services * s.endpoints_per_service,
            s.endpoints_per_service,
            s.namespaces * 2,
            self.files
        );
        if s.export_all {
            md.push_str("- Every service is exported mesh-wide: every proxy sees every service (Istio without `Sidecar` scoping).\n");
        } else {
            let _ = writeln!(
                md,
                "- Visibility: every {}th service of a namespace (the first included) is exported mesh-wide (`exportTo: \
                 [\"*\"]`), the others to their own namespace (`exportTo: [\".\"]`); so each proxy sees {} of the {} \
                 services (its namespace's and the mesh-wide ones).",
                s.shared_every,
                visible_per_proxy(s),
                s.services
            );
        }
        let _ = writeln!(
            md,
            "- {} proxies, each a sidecar of one WorkloadEntry of one service (node id, namespace, service account, \
             labels and IP of that workload), so each gets the inbound listener of its service and the outbound side \
             of its namespace.\n",
            s.proxies
        );
        md.push_str("## Setup: starting and connecting\n\n");
        let st = &self.setup;
        let snapshot_mean = if st.snapshot_bytes.is_empty() {
            0.0
        } else {
            st.snapshot_bytes.iter().sum::<usize>() as f64 / st.snapshot_bytes.len() as f64
        };
        md.push_str("| step | wall time | trellisd CPU | notes |\n|---|---|---|---|\n");
        let _ = writeln!(
            md,
            "| start (read {} files, index, listen) | {:.2} s | {:.2} s | VmHWM {:.1} MiB once listening |",
            self.files,
            st.start_seconds,
            st.start_cpu_seconds,
            mib(st.start_hwm_kib)
        );
        let _ = writeln!(
            md,
            "| {} proxies connect and ack their snapshot | {:.2} s | {:.2} s | snapshot {:.1} KiB per proxy on average, {:.1} MiB in all |",
            s.proxies,
            st.connect_seconds,
            st.connect_cpu_seconds,
            snapshot_mean / 1024.0,
            st.snapshot_bytes.iter().sum::<usize>() as f64 / 1024.0 / 1024.0
        );
        let _ = writeln!(
            md,
            "\ntrellisd after setup: VmRSS {:.1} MiB, VmHWM {:.1} MiB. At the end: VmRSS {:.1} MiB, VmHWM {:.1} MiB. \
             Idle (nothing changing, the folder polled): {:.3} CPU seconds per second.\n",
            mib(st.rss_kib),
            mib(st.hwm_kib),
            mib(self.final_rss_kib),
            mib(self.final_hwm_kib),
            self.idle_cpu
        );
        md.push_str("## Changes\n\n");
        md.push_str(
            "| change | changes | affected proxies per change (expected) | change-to-ack p50 | p99 | slowest change: all acked | bytes per affected proxy (median / max) | delta carries | trellisd CPU per change |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for kind in ChangeKind::ALL {
            let changes: Vec<&ChangeResult> = self.of_kind(kind).collect();
            if changes.is_empty() {
                continue;
            }
            let latencies: Vec<f64> = changes.iter().flat_map(|c| c.latencies_ms.iter().copied()).collect();
            let bytes: Vec<f64> = changes.iter().flat_map(|c| c.bytes.iter().map(|&b| b as f64)).collect();
            let affected: Vec<String> = dedup(changes.iter().map(|c| format!("{} ({})", c.affected, c.expected)));
            let slowest = changes.iter().map(|c| c.all_acked_ms()).fold(0.0, f64::max);
            let cpu = changes.iter().map(|c| c.cpu_seconds).sum::<f64>() / changes.len() as f64;
            let clusters = changes.iter().map(|c| c.clusters).max().unwrap_or(0);
            let mut carries = vec![format!("{clusters} cluster{}", if clusters == 1 { "" } else { "s" })];
            if changes.iter().any(|c| c.outbound) {
                carries.push("outbound".into());
            }
            if changes.iter().any(|c| c.inbound) {
                carries.push("inbound".into());
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {slowest:.0} ms | {:.0} B / {:.0} B | {} | {cpu:.3} s |",
                kind.label(),
                changes.len(),
                affected.join(", "),
                ms(percentile(&latencies, 50.0)),
                ms(percentile(&latencies, 99.0)),
                percentile(&bytes, 50.0).unwrap_or(0.0),
                percentile(&bytes, 100.0).unwrap_or(0.0),
                carries.join(" + ")
            );
        }
        md.push_str(
            "\nPercentiles are over every affected proxy of every change of that kind. Bytes are the NDJSON message \
             lines (HTTP/2 framing adds 9 bytes per frame). CPU is trellisd's utime + stime from the change until \
             the last message arrived plus a quiet period (so it includes folder polling).\n\n",
        );
        md.push_str("### Every change\n\n| # | change | file | affected (expected) | all acked | p50 | trellisd CPU | VmHWM after |\n|---|---|---|---|---|---|---|---|\n");
        for (i, c) in self.changes.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | `{}` | {} ({}){} | {:.0} ms | {} | {:.3} s | {:.1} MiB |",
                i + 1,
                c.kind.label(),
                c.file,
                c.affected,
                c.expected,
                if c.missing + c.unexpected > 0 {
                    format!(" [{} missing, {} unexpected]", c.missing, c.unexpected)
                } else {
                    String::new()
                },
                c.all_acked_ms(),
                ms(percentile(&c.latencies_ms, 50.0)),
                c.cpu_seconds,
                mib(c.hwm_kib)
            );
        }
        md
    }
}

/// How many services a proxy sees in the namespace-scoped shape.
fn visible_per_proxy(s: &Shape) -> usize {
    let per_namespace = s.services.div_ceil(s.namespaces.max(1));
    let shared_per_namespace = per_namespace.div_ceil(s.shared_every.max(1));
    per_namespace + shared_per_namespace * (s.namespaces.saturating_sub(1))
}

fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_proxy_sees_its_namespace_and_the_shared_services_of_the_others() {
        let shape = Shape {
            namespaces: 10,
            services: 1000,
            endpoints_per_service: 10,
            proxies: 1000,
            shared_every: 10,
            export_all: false,
        };
        assert_eq!(visible_per_proxy(&shape), 100 + 90);
    }
}
