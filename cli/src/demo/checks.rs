//! What the demo checks, as pure functions from what it observed (answers, configs, metrics text) to a
//! verdict and a sentence a user can read. The orchestration gathers the observations; nothing here does
//! I/O, so every check is unit-tested on made-up observations.
//!
//! Each check belongs to a [`Feature`]. A feature Trellis does not enforce yet is still exercised and
//! its observation shown, but its check counts as skipped, not failed; [`Feature::enforced`] turns it on
//! in the change that makes the proxy enforce it.

use std::collections::BTreeMap;

/// The `x-ordering-service` header every ordering app answer carries.
pub const SERVICE_HEADER: &str = "x-ordering-service";
/// The `x-ordering-version` header every ordering app answer carries.
pub const VERSION_HEADER: &str = "x-ordering-version";
/// The header a Trellis proxy puts on answers it generated itself.
pub const TRELLIS_ERROR_HEADER: &str = "x-trellis-error";
/// The body of a proxy's 403 when authorization denies a request (Envoy's text).
pub const DENIED_TEXT: &str = "RBAC: access denied";
/// The longest body of an answer not from the ordering app that a reply keeps as text.
pub const MAX_PROXY_TEXT: usize = 200;
/// Share of shipping traffic the tutorial's rule sends to v2, in percent.
pub const EXPECTED_V2_PERCENT: f64 = 10.0;
/// The smallest tolerance of the split check, in percentage points.
pub const MIN_SPLIT_TOLERANCE: f64 = 3.0;
/// Standard deviations of a fair weighted pick the split check tolerates (four: a correct proxy fails
/// it about once in 16,000 runs).
pub const SPLIT_SIGMAS: f64 = 4.0;
/// The Prometheus counter of requests a proxy handled, labelled by `cluster`.
pub const REQUESTS_METRIC: &str = "trellis_requests_total";

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// A Kubernetes Service from the folder reaches every sidecar.
    Discovery,
    /// The gateway routes the booking API.
    Routing,
    /// Weighted routing between subsets.
    Split,
    /// Connection-pool limits reject the overflow, and outlier detection ejects a failing endpoint.
    CircuitBreaking,
    /// STRICT mutual TLS between sidecars.
    Mtls,
    /// Request authentication and authorization on JWT claims.
    Jwt,
    /// A sidecar's Prometheus endpoint counts the traffic.
    Metrics,
}

impl Feature {
    /// The short name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Discovery => "discovery",
            Feature::Routing => "route",
            Feature::Split => "split",
            Feature::CircuitBreaking => "circuit breaking",
            Feature::Mtls => "mTLS",
            Feature::Jwt => "JWT",
            Feature::Metrics => "metrics",
        }
    }

    /// Whether Trellis enforces the feature yet. A check of a feature not enforced yet is run and shown
    /// but counts as skipped; each turns `true` in the change that makes the proxy enforce it.
    pub const fn enforced(self) -> bool {
        match self {
            Feature::Discovery
            | Feature::Routing
            | Feature::Split
            | Feature::Metrics
            | Feature::Mtls
            | Feature::Jwt
            | Feature::CircuitBreaking => true,
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The feature is not enforced yet.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub feature: Feature,
    pub verdict: Verdict,
    /// One sentence: what was observed.
    pub summary: String,
    /// Further lines under the summary.
    pub details: Vec<String>,
}

impl Check {
    /// A check of `feature` that `passed` (or not) on what `summary` says it observed.
    pub fn judged(feature: Feature, passed: bool, summary: String, details: Vec<String>) -> Check {
        let (verdict, summary) = match (feature.enforced(), passed) {
            (true, true) => (Verdict::Pass, summary),
            (true, false) => (Verdict::Fail, summary),
            (false, true) => (Verdict::Skip, format!("not enforced yet (it already passes): {summary}")),
            (false, false) => (Verdict::Skip, format!("not enforced yet; observed: {summary}")),
        };
        Check { feature, verdict, summary, details }
    }
}

/// An HTTP answer as the checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case; a repeated header keeps its first value.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A dependency's part of a booking answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependency {
    /// `None` when the dependency gave no answer.
    pub status: Option<u16>,
    pub version: Option<String>,
    /// Set when a Trellis proxy generated the dependency's answer (an open circuit breaker...).
    pub proxy_error: Option<String>,
}

/// One request to an ordering app (usually booking, through the gateway), as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// `None` when no answer came (refused, reset, timed out); `error` says why.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `x-ordering-service`: set only when the app itself answered.
    pub service: Option<String>,
    pub version: Option<String>,
    /// `x-trellis-error`: set when a proxy generated the answer.
    pub trellis_error: Option<String>,
    /// The body of a short text answer not from the ordering app (`RBAC: access denied`).
    pub text: Option<String>,
    pub inventory: Option<Dependency>,
    pub shipping: Option<Dependency>,
}

impl Reply {
    /// What an answer (or the reason there was none) says.
    pub fn from_result(result: Result<Answer, String>) -> Reply {
        match result {
            Ok(answer) => Reply::from_answer(&answer),
            Err(error) => Reply { error: Some(error), ..Reply::default() },
        }
    }

    pub fn from_answer(answer: &Answer) -> Reply {
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let dependency = |name: &str| {
            let part = body.get(name)?;
            Some(Dependency {
                status: part.get("status").and_then(serde_json::Value::as_u64).and_then(|s| u16::try_from(s).ok()),
                version: part.get("version").and_then(serde_json::Value::as_str).map(str::to_owned),
                proxy_error: part.get("proxyError").and_then(serde_json::Value::as_str).map(str::to_owned),
            })
        };
        let service = answer.headers.get(SERVICE_HEADER).cloned();
        let text = match std::str::from_utf8(&answer.body) {
            Ok(text) if service.is_none() && !text.trim().is_empty() && text.len() <= MAX_PROXY_TEXT => {
                Some(text.trim().to_owned())
            }
            _ => None,
        };
        Reply {
            status: Some(answer.status),
            error: None,
            service,
            text,
            version: answer.headers.get(VERSION_HEADER).cloned(),
            trellis_error: answer.headers.get(TRELLIS_ERROR_HEADER).cloned(),
            inventory: dependency("inventory"),
            shipping: dependency("shipping"),
        }
    }

    /// A successful booking: 200 from the booking app.
    pub fn booked(&self) -> bool {
        self.status == Some(200) && self.service.as_deref() == Some("booking")
    }

    /// The shipping version that served a successful booking.
    pub fn shipping_version(&self) -> Option<&str> {
        if !self.booked() {
            return None;
        }
        self.shipping.as_ref().and_then(|s| s.version.as_deref())
    }

    /// One phrase: `200 from booking v1 (inventory v1, shipping v2)`, `404 from the proxy (no route)`,
    /// `no answer (connection refused)`.
    pub fn describe(&self) -> String {
        let Some(status) = self.status else {
            return format!("no answer ({})", self.error.as_deref().unwrap_or("unknown error"));
        };
        let mut out = status.to_string();
        match (&self.service, &self.trellis_error) {
            (Some(service), _) => {
                out.push_str(&format!(" from {service} {}", self.version.as_deref().unwrap_or("?")));
                let deps: Vec<String> = [("inventory", &self.inventory), ("shipping", &self.shipping)]
                    .into_iter()
                    .filter_map(|(name, dep)| {
                        let dep = dep.as_ref()?;
                        Some(match (&dep.proxy_error, dep.status, &dep.version) {
                            (Some(reason), _, _) => format!("{name}: proxy said {reason}"),
                            (None, Some(200), Some(version)) => format!("{name} {version}"),
                            (None, Some(status), _) => format!("{name}: {status}"),
                            (None, None, _) => format!("{name}: no answer"),
                        })
                    })
                    .collect();
                if !deps.is_empty() {
                    out.push_str(&format!(" ({})", deps.join(", ")));
                }
            }
            (None, Some(reason)) => out.push_str(&format!(" from the proxy ({reason})")),
            (None, None) => match &self.text {
                Some(text) => out.push_str(&format!(" {text:?} (not from the ordering app)")),
                None => out.push_str(" (not from the ordering app)"),
            },
        }
        out
    }
}

/// Counts of shipping versions among replies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    pub v1: usize,
    pub v2: usize,
    /// Replies that were not successful bookings.
    pub errors: usize,
}

impl Split {
    pub fn of(replies: &[Reply]) -> Split {
        let mut split = Split::default();
        for reply in replies {
            match reply.shipping_version() {
                Some("v1") => split.v1 += 1,
                Some("v2") => split.v2 += 1,
                _ => split.errors += 1,
            }
        }
        split
    }

    /// Share of v2 among the bookings shipping served, in percent.
    pub fn v2_percent(&self) -> Option<f64> {
        let served = self.v1 + self.v2;
        (served > 0).then(|| self.v2 as f64 * 100.0 / served as f64)
    }

    /// `v1 90.2%, v2 9.8%`.
    pub fn describe(&self) -> String {
        match self.v2_percent() {
            Some(v2) => format!("v1 {:.1}%, v2 {v2:.1}%", 100.0 - v2),
            None => "no booking got a shipping answer".to_owned(),
        }
    }
}

/// How far (in percentage points) an observed share may be from `expected_percent` over `n` fair
/// weighted picks: [`SPLIT_SIGMAS`] standard deviations, at least [`MIN_SPLIT_TOLERANCE`].
pub fn split_tolerance(n: usize, expected_percent: f64) -> f64 {
    if n == 0 {
        return 100.0;
    }
    let p = expected_percent / 100.0;
    let sigma = (p * (1.0 - p) / n as f64).sqrt() * 100.0;
    (SPLIT_SIGMAS * sigma).max(MIN_SPLIT_TOLERANCE)
}

/// Step 01: every sidecar knows `host` (a Service no process runs in the demo); `known` lists each
/// sidecar and whether its config has a virtual host of that name.
pub fn discovery(host: &str, known: &[(String, bool)]) -> Check {
    let missing: Vec<&str> = known.iter().filter(|(_, k)| !k).map(|(name, _)| name.as_str()).collect();
    let passed = !known.is_empty() && missing.is_empty();
    let summary = if passed {
        format!("{host} is known to all {} sidecars (no process runs it in the demo)", known.len())
    } else {
        format!("{host} is missing from the config of {}", missing.join(", "))
    };
    Check::judged(Feature::Discovery, passed, summary, Vec::new())
}

/// Step 02: bookings through the gateway (`routed`, all must succeed) and a path no route matches
/// (`unrouted`, the gateway must answer 404 itself).
pub fn route(url: &str, routed: &[Reply], unrouted_url: &str, unrouted: &Reply, before_split: Split) -> Check {
    let booked = routed.iter().filter(|r| r.booked()).count();
    let unrouted_ok = unrouted.status == Some(404) && unrouted.service.is_none();
    let passed = !routed.is_empty() && booked == routed.len() && unrouted_ok;
    let first = routed.iter().find(|r| !r.booked()).or_else(|| routed.first());
    let summary = format!(
        "GET {url} -> {} ({booked} of {} booked)",
        first.map_or_else(|| "nothing sent".to_owned(), Reply::describe),
        routed.len()
    );
    let expectation = if unrouted_ok { "only the booking API is routed" } else { "expected 404 from the gateway" };
    let mut details = vec![format!("GET {unrouted_url} -> {}: {expectation}", unrouted.describe())];
    if before_split.v1 + before_split.v2 > 0 {
        details.push(format!("without a rule, shipping answered {}", before_split.describe()));
    }
    Check::judged(Feature::Routing, passed, summary, details)
}

/// Step 03: the shipping versions of `replies` match the 90/10 rule within [`split_tolerance`], and
/// every booking succeeded.
pub fn split(replies: &[Reply]) -> Check {
    let split = Split::of(replies);
    let served = split.v1 + split.v2;
    let tolerance = split_tolerance(served, EXPECTED_V2_PERCENT);
    let within = split.v2_percent().is_some_and(|v2| (v2 - EXPECTED_V2_PERCENT).abs() <= tolerance);
    let passed = within && split.errors == 0;
    let mut summary =
        format!("shipping {} of {} bookings (rule 90/10, tolerance ±{tolerance:.1})", split.describe(), replies.len());
    if split.errors > 0 {
        summary.push_str(&format!(", {} failed", split.errors));
    }
    let details = replies.iter().find(|r| !r.booked()).map(|r| format!("first failure: {}", r.describe()));
    Check::judged(Feature::Split, passed, summary, details.into_iter().collect())
}

/// What the caller's proxy shows about one endpoint of a cluster with outlier detection (its admin
/// `/config_dump`, section `clusterState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    pub cluster: String,
    pub endpoint: String,
    /// Whether the balancer leaves the endpoint out.
    pub ejected: bool,
    /// Time left of its ejection, in milliseconds.
    pub ejected_for_ms: Option<u64>,
}

/// The ejected (or held ejected) endpoint of the cluster whose name contains `host`, in a proxy's
/// `/config_dump`; `None` when none is.
pub fn ejection(config_dump: &serde_json::Value, host: &str) -> Option<Ejection> {
    let clusters = config_dump.get("clusterState")?.as_array()?;
    clusters
        .iter()
        .filter(|c| c.get("name").and_then(serde_json::Value::as_str).is_some_and(|n| n.contains(host)))
        .find_map(|cluster| {
            let endpoints = cluster.get("endpoints")?.as_array()?;
            let endpoint = endpoints.iter().find(|e| {
                e.get("ejected") == Some(&serde_json::Value::Bool(true)) || e.pointer("/outlier/ejectedForMs").is_some()
            })?;
            Some(Ejection {
                cluster: cluster.get("name")?.as_str()?.to_owned(),
                endpoint: endpoint.get("address")?.as_str()?.to_owned(),
                ejected: endpoint.get("ejected") == Some(&serde_json::Value::Bool(true)),
                ejected_for_ms: endpoint.pointer("/outlier/ejectedForMs").and_then(serde_json::Value::as_u64),
            })
        })
}

/// The text a Trellis proxy's overflow answer carries in `x-trellis-error` (a circuit breaker rejected
/// the request).
pub const OVERFLOW_TEXT: &str = "upstream overflow";

/// Step 04: concurrent bookings while inventory is slow; booking's sidecar must let some through and
/// reject the overflow itself. Then one booking whose inventory call fails (`failing`): booking's sidecar
/// must eject the inventory endpoint (`ejection`, read from its `/config_dump` afterwards).
pub fn circuit_breaking(replies: &[Reply], failing: &Reply, ejection: Option<&Ejection>) -> Check {
    let booked = replies.iter().filter(|r| r.booked()).count();
    let rejected: Vec<&str> = replies
        .iter()
        .filter_map(|r| r.inventory.as_ref()?.proxy_error.as_deref())
        .filter(|reason| reason.contains(OVERFLOW_TEXT))
        .collect();
    let ejected = ejection.is_some_and(|e| e.ejected);
    let passed = booked > 0 && !rejected.is_empty() && ejected;
    let mut summary = format!(
        "{} concurrent bookings with a slow inventory: {booked} booked, {} rejected by booking's sidecar",
        replies.len(),
        rejected.len()
    );
    if let Some(reason) = rejected.first() {
        summary.push_str(&format!(" ({reason})"));
    }
    let inventory_status = failing.inventory.as_ref().and_then(|d| d.status);
    let failed = inventory_status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
    summary.push_str(&format!("; after one failing inventory answer ({failed}), "));
    match ejection {
        Some(e) if e.ejected => summary.push_str(&format!(
            "booking's sidecar ejected {} for {} s",
            e.endpoint,
            e.ejected_for_ms.map_or(0, |ms| ms.div_ceil(1000))
        )),
        Some(e) => summary.push_str(&format!("booking's sidecar holds {} ejected but still uses it", e.endpoint)),
        None => summary.push_str("booking's sidecar ejected no inventory endpoint"),
    }
    Check::judged(Feature::CircuitBreaking, passed, summary, Vec::new())
}

/// Step 05: a plain-text request straight to a sidecar's inbound listener gets no answer at all (the
/// sidecar closes the connection), while bookings through the mesh still succeed, and every proxy
/// holds a certificate. `identities` lists each proxy and the certificate it holds (`None`: none).
pub fn mtls(target: &str, plain: &Reply, mesh: &Reply, identities: &[(String, Option<Certificate>)]) -> Check {
    let refused = plain.status.is_none();
    let missing: Vec<&str> =
        identities.iter().filter(|(_, cert)| cert.is_none()).map(|(name, _)| name.as_str()).collect();
    let passed = refused && mesh.booked() && !identities.is_empty() && missing.is_empty();
    let mut summary = format!(
        "plain text to {target}: {}; a booking through the mesh: {}",
        if refused { plain.describe().replacen("no answer", "refused, no answer", 1) } else { plain.describe() },
        mesh.describe()
    );
    if !missing.is_empty() {
        summary.push_str(&format!("; no certificate: {}", missing.join(", ")));
    }
    let details = identities
        .iter()
        .map(|(name, cert)| match cert {
            Some(cert) => format!("{name}: {} (serial {})", cert.spiffe_id, cert.serial),
            None => format!("{name}: no certificate"),
        })
        .collect();
    Check::judged(Feature::Mtls, passed, summary, details)
}

/// Step 06: a booking without a token is denied (403 `RBAC: access denied`), one with a malformed
/// token is unauthenticated (401), and one with a valid token is booked. `details` says where the
/// valid token came from.
pub fn jwt(without: &Reply, malformed: &Reply, valid: &Reply, details: Vec<String>) -> Check {
    let denied = without.status == Some(403) && without.text.as_deref() == Some(DENIED_TEXT);
    let passed = denied && malformed.status == Some(401) && valid.booked();
    let summary = format!(
        "without a token: {}; with a malformed one: {}; with a valid one: {}",
        without.describe(),
        malformed.describe(),
        valid.describe()
    );
    Check::judged(Feature::Jwt, passed, summary, details)
}

/// The sidecar's Prometheus endpoint at `url` answered `answer`; each of `clusters` (label, cluster
/// name) must have counted requests, `at_least` of them together.
pub fn metrics(url: &str, answer: &Result<Answer, String>, clusters: &[(&str, String)], at_least: u64) -> Check {
    let text = match answer {
        Ok(answer) if answer.status == 200 => String::from_utf8_lossy(&answer.body).into_owned(),
        Ok(answer) => {
            return Check::judged(Feature::Metrics, false, format!("{url} answered {}", answer.status), vec![]);
        }
        Err(error) => return Check::judged(Feature::Metrics, false, format!("{url}: {error}"), vec![]),
    };
    let counts: Vec<(&str, u64)> = clusters
        .iter()
        .map(|(label, cluster)| (*label, counter_sum(&text, REQUESTS_METRIC, "cluster", cluster) as u64))
        .collect();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let passed = counts.iter().all(|(_, n)| *n > 0) && total >= at_least;
    let counted: Vec<String> = counts.iter().map(|(label, n)| format!("{n} to {label}")).collect();
    let summary = format!("{url}: booking's sidecar counted requests {}", counted.join(" and "));
    let details = (!passed).then(|| format!("expected at least {at_least} in all, each above 0"));
    Check::judged(Feature::Metrics, passed, summary, details.into_iter().collect())
}

/// The sum of the samples of `metric` whose `label` is `value`, in Prometheus text format.
pub fn counter_sum(text: &str, metric: &str, label: &str, value: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, sample) = rest.rsplit_once('}')?;
            let matches = parse_labels(labels).iter().any(|(k, v)| k == label && v == value);
            let number = sample.split_whitespace().next()?.parse::<f64>().ok()?;
            matches.then_some(number)
        })
        .sum()
}

/// `a="x",b="y\"z"` into pairs, unescaping `\"`, `\\` and `\n`.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                other => value.push(other),
            }
        }
        out.push((name.trim().to_owned(), value));
    }
}

/// Whether a proxy's `/config_dump` lists an outbound virtual host named `host`.
pub fn knows_host(config_dump: &serde_json::Value, host: &str) -> bool {
    config_dump
        .pointer("/config/outbound/virtualHosts")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|hosts| hosts.iter().any(|v| v.get("name").and_then(serde_json::Value::as_str) == Some(host)))
}

/// A proxy's current certificate, as its admin `GET /certs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub spiffe_id: String,
    pub serial: String,
}

/// The certificate in a proxy's `/certs` answer; `None` before it has one (`"spiffeId": null`).
pub fn certificate(certs: &serde_json::Value) -> Option<Certificate> {
    let field = |name: &str| certs.get(name).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
    Some(Certificate { spiffe_id: field("spiffeId")?.to_owned(), serial: field("serial")?.to_owned() })
}
