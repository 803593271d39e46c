//! What the demo prints, as pure functions: progress lines, the final report, the "try it yourself"
//! list and the live one-line summary (with the rolling counts behind it).

use std::collections::VecDeque;
use std::time::Duration;

use super::checks::{Check, Reply, Verdict};
use super::plan::{ADMIN_PORT, BOOKING, Plan};

/// Seconds the live summary's split and rate cover.
pub const LIVE_WINDOW_SECONDS: usize = 10;

/// A progress line: `[  1.2s] message`.
pub fn progress(elapsed: Duration, message: &str) -> String {
    format!("[{:>5.1}s] {message}", elapsed.as_secs_f64())
}

/// The word in front of a check.
pub fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
    }
}

/// One check as report lines: `PASS  route             GET ... -> 200 ...`, then its details indented.
pub fn check_lines(check: &Check) -> Vec<String> {
    let mut lines = vec![format!("  {}  {:<16}  {}", verdict_word(check.verdict), check.feature.name(), check.summary)];
    lines.extend(check.details.iter().map(|d| format!("  {:<4}  {:<16}  {d}", "", "")));
    lines
}

/// Whether every check that counts passed (skipped checks do not count).
pub fn all_passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}

/// The final report: every check, then the tally.
pub fn report(checks: &[Check]) -> String {
    let count = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    let mut lines = vec!["Report".to_owned()];
    for check in checks {
        lines.extend(check_lines(check));
    }
    let skipped = match count(Verdict::Skip) {
        0 => String::new(),
        n => format!(", {n} skipped (not enforced yet)"),
    };
    lines.push(format!(
        "{} checks: {} passed, {} failed{skipped}",
        checks.len(),
        count(Verdict::Pass),
        count(Verdict::Fail)
    ));
    lines.join("\n")
}

/// What a user can try against the running demo: commands in one column, what each shows beside.
pub fn try_it(plan: &Plan, folder: &str, token_file: &str) -> String {
    let booking = plan.gateway_url("/api/v1/booking");
    let bearer = format!("-H \"authorization: Bearer $(cat {token_file})\"");
    let items = [
        (format!("curl {bearer} {booking}"), "a booking through the ingress gateway, with the JWT step 06 requires"),
        (format!("curl {booking}"), "without the JWT: 403 RBAC: access denied"),
        (format!("curl {bearer} '{booking}?inventory_delay_ms=500'"), "with a slow inventory"),
        (format!("curl {}", plan.metrics_url(&BOOKING)), "booking's sidecar metrics"),
        (format!("curl {}", plan.sidecar_url(&BOOKING, ADMIN_PORT, "/config_dump")), "booking's sidecar config"),
        (format!("trellis proxy-status --control-plane {}", plan.trellisd_addr()), "every proxy's config version"),
        (format!("$EDITOR {folder}/03-shipping-split.yaml"), "change the weights; the split below follows"),
    ];
    let width = items.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    let mut lines = vec!["Try it while the demo runs".to_owned()];
    lines.extend(items.iter().map(|(command, what)| format!("  {command:<width$}  # {what}")));
    lines.join("\n")
}

/// Counts of one second of live traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub booked: u64,
    pub errors: u64,
    pub v1: u64,
    pub v2: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.booked += other.booked;
        self.errors += other.errors;
        self.v1 += other.v1;
        self.v2 += other.v2;
    }
}

/// Rolling counts of the live traffic: the current second, the last [`LIVE_WINDOW_SECONDS`] complete
/// seconds, and everything since the start.
#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    current: Tally,
    window: VecDeque<Tally>,
    total: Tally,
}

impl LiveStats {
    /// Counts one reply.
    pub fn record(&mut self, reply: &Reply) {
        let mut one = Tally::default();
        if reply.booked() {
            one.booked = 1;
        } else {
            one.errors = 1;
        }
        match reply.shipping_version() {
            Some("v1") => one.v1 = 1,
            Some("v2") => one.v2 = 1,
            _ => {}
        }
        self.current.add(&one);
        self.total.add(&one);
    }

    /// Ends the current second.
    pub fn rotate(&mut self) {
        self.window.push_back(std::mem::take(&mut self.current));
        while self.window.len() > LIVE_WINDOW_SECONDS {
            self.window.pop_front();
        }
    }

    /// `live: 49 req/s | shipping v1 90% v2 10% (last 10 s) | errors 0 of 1234 | Ctrl-C stops`.
    pub fn line(&self) -> String {
        let last = self.window.back().copied().unwrap_or_default();
        let mut window = Tally::default();
        for second in &self.window {
            window.add(second);
        }
        let served = window.v1 + window.v2;
        let split = if served == 0 {
            "shipping -".to_owned()
        } else {
            let v2 = window.v2 as f64 * 100.0 / served as f64;
            format!("shipping v1 {:.0}% v2 {v2:.0}%", 100.0 - v2)
        };
        format!(
            "live: {} req/s | {split} (last {} s) | errors {} of {} | Ctrl-C stops",
            last.booked + last.errors,
            self.window.len(),
            self.total.errors,
            self.total.booked + self.total.errors,
        )
    }
}
