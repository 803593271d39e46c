//! DestinationRules: which one applies to a service for a proxy, and its traffic policy mapped onto a
//! cluster's load balancer, connection pool, outlier detection, upstream TLS and retry budget.
//!
//! Lookup (Istio, "Cross-namespace configuration sharing"): the first namespace of the client's, the
//! service's and the root namespace that holds a rule exported to the client for the service's host wins;
//! within it the most specific host wins, a rule whose `workloadSelector` selects the client beats one
//! without, and rules for the same host merge (the oldest rule's traffic policy, subsets of all, the first
//! definition of a subset name winning).
//!
//! Merging for one cluster follows Istio's `MergeSubsetTrafficPolicy`: the rule's top-level settings,
//! replaced as a whole by the rule's port-level entry for the cluster's port; then the subset's settings
//! over those field by field, or as a whole when the subset has a port-level entry for the port. A
//! port-level entry never inherits: what it omits takes its default.

use std::time::Duration;

use trellis_api::FieldPath;
use trellis_api::istio::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, RetryBudget,
    SimpleLb, Subset, TrafficPolicy,
};
use trellis_api::istio::{DestinationRuleSpec, destination_rule};
use trellis_api::object::Object;
use trellis_api::proxy_config::{self, ConnectionPool, HashKey, LoadBalancer, UpstreamTls};

use super::{Context, hosts, scope};
use crate::index::{Key, Kind, Service};

/// Envoy's (and so Istio's) consecutive 5xx errors before ejection when a rule does not say.
pub const DEFAULT_CONSECUTIVE_5XX_ERRORS: u32 = 5;
/// Envoy's consecutive local-origin failures before ejection when they are split from upstream answers.
pub const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES: u32 = 5;
/// Istio's default time between ejection sweeps.
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
/// Istio's default base ejection time.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Istio's default share of endpoints that may be ejected at once, in percent.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// The DestinationRule (or merged rules) that applies to a service for the proxy.
#[derive(Debug, Clone)]
pub struct Rule<'a> {
    /// The rules merged, the one whose traffic policy applies first.
    pub keys: Vec<&'a Key>,
    /// The traffic policy and the rule it comes from.
    pub policy: Option<(&'a TrafficPolicy, &'a Key)>,
    /// Subsets by first definition: the subset, its rule and its index in that rule.
    pub subsets: Vec<(&'a Subset, &'a Key, usize)>,
}

impl<'a> Rule<'a> {
    /// The subset of that name, with its rule and index.
    pub fn subset(&self, name: &str) -> Option<(&'a Subset, &'a Key, usize)> {
        self.subsets.iter().copied().find(|(s, _, _)| s.name == name)
    }

    /// `namespace/name` of the rules, for messages.
    pub fn names(&self) -> String {
        self.keys.iter().map(|k| format!("{}/{}", k.namespace, k.name)).collect::<Vec<_>>().join(", ")
    }
}

/// The DestinationRule that applies to `service` for the proxy, if any.
pub fn lookup<'a>(cx: &Context<'a>, service: &Service) -> Option<Rule<'a>> {
    let index = cx.index;
    let proxy_ns = cx.proxy.namespace.as_str();
    let mut namespaces: Vec<&str> = vec![proxy_ns, service.namespace()];
    namespaces.extend(cx.roots.iter().map(String::as_str));
    let mut seen = Vec::new();
    for ns in namespaces {
        if seen.contains(&ns) {
            continue;
        }
        seen.push(ns);
        let mut candidates: Vec<(&'a Key, &'a DestinationRuleSpec, String, bool, crate::index::Age)> = Vec::new();
        for (key, entry) in index.in_namespace(Kind::DestinationRule, ns) {
            let Some(Object::DestinationRule(rule)) = (match &entry.resource {
                crate::index::Resource::Config(c) => c.valid(),
                _ => None,
            }) else {
                continue;
            };
            let spec = &rule.spec;
            if !scope::exported(spec.export_to.as_deref().unwrap_or(&[]), ns, proxy_ns) {
                continue;
            }
            let selected = match spec.workload_selector.as_ref().and_then(|s| s.match_labels.as_ref()) {
                None => false,
                Some(labels) if ns == proxy_ns && scope::selects(labels, &cx.proxy.labels) => true,
                Some(_) => continue,
            };
            let host = hosts::qualify(&spec.host, ns);
            if hosts::matches(&host, &service.hostname) {
                candidates.push((key, spec, host, selected, entry.age));
            }
        }
        // Most specific host: exact first, then the longest wildcard.
        let rank = |host: &str| (host == service.hostname, host.len());
        let Some(best) = candidates.iter().map(|c| rank(&c.2)).max() else { continue };
        let mut chosen: Vec<_> = candidates.into_iter().filter(|c| rank(&c.2) == best).collect();
        chosen.sort_by_key(|c| (!c.3, c.4, c.0.clone()));
        let mut rule = Rule { keys: Vec::new(), policy: None, subsets: Vec::new() };
        for (key, spec, ..) in chosen {
            rule.keys.push(key);
            if rule.policy.is_none() {
                rule.policy = spec.traffic_policy.as_ref().map(|p| (p, key));
            }
            for (i, subset) in spec.subsets.iter().flatten().enumerate() {
                if rule.subset(&subset.name).is_none() {
                    rule.subsets.push((subset, key, i));
                }
            }
        }
        return Some(rule);
    }
    None
}

/// One setting of the merged policy, with where it was written.
#[derive(Debug, Clone, Copy)]
struct Setting<'a, T> {
    value: &'a T,
    key: &'a Key,
}

/// The policy in force for one cluster, each setting with its origin.
#[derive(Debug, Default)]
struct Effective<'a> {
    load_balancer: Option<(Setting<'a, LoadBalancerSettings>, FieldPath)>,
    connection_pool: Option<(Setting<'a, ConnectionPoolSettings>, FieldPath)>,
    outlier_detection: Option<(Setting<'a, OutlierDetection>, FieldPath)>,
    tls: Option<(Setting<'a, ClientTlsSettings>, FieldPath)>,
    retry_budget: Option<(Setting<'a, RetryBudget>, FieldPath)>,
}

impl<'a> Effective<'a> {
    /// Takes each setting `policy` has, leaving the others as they are (a subset over its rule).
    fn take(&mut self, policy: &'a TrafficPolicy, key: &'a Key, at: &FieldPath) {
        if let Some(v) = &policy.load_balancer {
            self.load_balancer = Some((Setting { value: v, key }, at.key("loadBalancer")));
        }
        if let Some(v) = &policy.connection_pool {
            self.connection_pool = Some((Setting { value: v, key }, at.key("connectionPool")));
        }
        if let Some(v) = &policy.outlier_detection {
            self.outlier_detection = Some((Setting { value: v, key }, at.key("outlierDetection")));
        }
        if let Some(v) = &policy.tls {
            self.tls = Some((Setting { value: v, key }, at.key("tls")));
        }
        // Istio's port-level settings have no retry budget: the rule's or the subset's applies.
        if let Some(v) = &policy.retry_budget {
            self.retry_budget = Some((Setting { value: v, key }, at.key("retryBudget")));
        }
    }

    /// The policy's own settings, replaced as a whole by its port-level entry for `port` when it has
    /// one: Istio's port-level settings do not inherit, a field they omit takes its default. Returns
    /// whether a port-level entry applied.
    fn of_policy(policy: &'a TrafficPolicy, key: &'a Key, at: &FieldPath, port: u16) -> (Self, bool) {
        let levels = policy.port_level_settings.iter().flatten().enumerate();
        let level = levels.into_iter().find(|(_, l)| l.port.as_ref().and_then(|p| p.number) == Some(u32::from(port)));
        let Some((i, level)) = level else {
            let mut own = Effective::default();
            own.take(policy, key, at);
            return (own, false);
        };
        // Port-level settings have no retry budget: the policy's own stays.
        let retry_budget = policy.retry_budget.as_ref().map(|v| (Setting { value: v, key }, at.key("retryBudget")));
        let at = at.key("portLevelSettings").index(i);
        let own = Effective {
            load_balancer: level.load_balancer.as_ref().map(|v| (Setting { value: v, key }, at.key("loadBalancer"))),
            connection_pool: level
                .connection_pool
                .as_ref()
                .map(|v| (Setting { value: v, key }, at.key("connectionPool"))),
            outlier_detection: level
                .outlier_detection
                .as_ref()
                .map(|v| (Setting { value: v, key }, at.key("outlierDetection"))),
            tls: level.tls.as_ref().map(|v| (Setting { value: v, key }, at.key("tls"))),
            retry_budget,
        };
        (own, true)
    }

    /// Overrides with `other`: field by field, or as a whole when `other` came from a port-level entry.
    fn overridden_by(mut self, mut other: Effective<'a>, whole: bool) -> Self {
        if whole {
            // Only what port-level entries hold is replaced as a whole; the retry budget is not one.
            other.retry_budget = other.retry_budget.or(self.retry_budget);
            return other;
        }
        self.retry_budget = other.retry_budget.or(self.retry_budget);
        self.load_balancer = other.load_balancer.or(self.load_balancer);
        self.connection_pool = other.connection_pool.or(self.connection_pool);
        self.outlier_detection = other.outlier_detection.or(self.outlier_detection);
        self.tls = other.tls.or(self.tls);
        self
    }
}

/// The cluster settings a rule gives a port (and subset) of a service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterPolicy {
    pub load_balancer: LoadBalancer,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<proxy_config::OutlierDetection>,
    pub tls: UpstreamTls,
    pub retry_budget: Option<proxy_config::RetryBudget>,
}

/// The settings for `port` and `subset` (by index in its rule) under `rule`, recording what cannot apply.
pub fn cluster_policy(
    cx: &mut Context<'_>,
    rule: Option<&Rule<'_>>,
    subset: Option<(&Subset, &Key, usize)>,
    port: u16,
) -> ClusterPolicy {
    // Istio's MergeSubsetTrafficPolicy: the rule's policy with its port-level entry applied, then the
    // subset's (with its own port-level entry applied) over it.
    let spec = FieldPath::of("spec");
    let top = rule.and_then(|r| r.policy);
    let mut effective = match top {
        Some((policy, key)) => Effective::of_policy(policy, key, &spec.key("trafficPolicy"), port).0,
        None => Effective::default(),
    };
    let subset_policy = subset.and_then(|(s, key, i)| s.traffic_policy.as_ref().map(|p| (p, key, i)));
    if let Some((policy, key, i)) = subset_policy {
        let (own, whole) = Effective::of_policy(policy, key, &spec.key("subsets").index(i).key("trafficPolicy"), port);
        effective = effective.overridden_by(own, whole);
    }
    ClusterPolicy {
        load_balancer: effective.load_balancer.map(|(s, at)| load_balancer(cx, s, &at)).unwrap_or_default(),
        connection_pool: effective.connection_pool.map(|(s, at)| connection_pool(cx, s, &at)),
        outlier_detection: effective.outlier_detection.map(|(s, at)| outlier_detection(cx, s, &at)),
        tls: effective.tls.map(|(s, at)| tls(cx, s, &at)).unwrap_or_default(),
        retry_budget: effective.retry_budget.map(|(s, at)| retry_budget(cx, s, &at)),
    }
}

/// A retry budget with Envoy's defaults (20 percent, 3 retries) for what the rule leaves out.
fn retry_budget(cx: &mut Context<'_>, setting: Setting<'_, RetryBudget>, at: &FieldPath) -> proxy_config::RetryBudget {
    let budget = setting.value;
    let defaults = proxy_config::RetryBudget::default();
    if parse_duration(cx, setting.key, &at.key("budgetInterval"), budget.budget_interval.as_deref()).is_some() {
        let reason = "a budget over an interval is not supported; the budget counts the requests active now";
        cx.skip(setting.key, at.key("budgetInterval"), reason);
    }
    proxy_config::RetryBudget {
        percent: budget.percent.filter(|p| (0.0..=100.0).contains(p)).unwrap_or(defaults.percent),
        min_retry_concurrency: budget.min_retry_concurrency.unwrap_or(defaults.min_retry_concurrency),
    }
}

fn load_balancer(cx: &mut Context<'_>, setting: Setting<'_, LoadBalancerSettings>, at: &FieldPath) -> LoadBalancer {
    let lb = setting.value;
    if let Some(hash) = &lb.consistent_hash {
        let at = at.key("consistentHash");
        let key = if let Some(header) = &hash.http_header_name {
            Some(HashKey::Header(header.to_ascii_lowercase()))
        } else if let Some(cookie) = &hash.http_cookie {
            let ttl = parse_duration(cx, setting.key, &at.key("httpCookie").key("ttl"), cookie.ttl.as_deref());
            Some(HashKey::Cookie { name: cookie.name.clone(), ttl })
        } else if hash.use_source_ip == Some(true) {
            Some(HashKey::SourceIp)
        } else {
            hash.http_query_parameter_name.clone().map(HashKey::QueryParameter)
        };
        return match key {
            Some(key) => LoadBalancer::ConsistentHash(key),
            None => {
                cx.skip(setting.key, at, "consistent hash names nothing to hash; the default balancer is used");
                LoadBalancer::default()
            }
        };
    }
    if lb.backend_utilization.is_some() {
        let reason = "backend-utilization balancing is not supported; the default balancer is used";
        cx.skip(setting.key, at.key("backendUtilization"), reason);
    }
    match lb.simple {
        None | Some(SimpleLb::Unspecified) => LoadBalancer::default(),
        Some(SimpleLb::RoundRobin) => LoadBalancer::RoundRobin,
        Some(SimpleLb::Random) => LoadBalancer::Random,
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => LoadBalancer::LeastRequest,
        Some(SimpleLb::Passthrough) => {
            let reason = "PASSTHROUGH (forward to the original destination) cannot be expressed in a cluster yet; \
                          the default balancer is used";
            cx.skip(setting.key, at.key("simple"), reason);
            LoadBalancer::default()
        }
    }
}

fn connection_pool(
    cx: &mut Context<'_>,
    setting: Setting<'_, ConnectionPoolSettings>,
    at: &FieldPath,
) -> ConnectionPool {
    let pool = setting.value;
    let mut out = ConnectionPool::default();
    let count = |cx: &mut Context<'_>, value: Option<i32>, path: FieldPath| -> Option<u32> {
        let value = value?;
        match u32::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                cx.skip(setting.key, path, format!("{value} is negative; the limit is not applied"));
                None
            }
        }
    };
    if let Some(tcp) = &pool.tcp {
        let at = at.key("tcp");
        out.max_connections = count(cx, tcp.max_connections, at.key("maxConnections"));
        out.connect_timeout =
            parse_duration(cx, setting.key, &at.key("connectTimeout"), tcp.connect_timeout.as_deref());
    }
    if let Some(http) = &pool.http {
        let at = at.key("http");
        out.max_pending_requests = count(cx, http.http1_max_pending_requests, at.key("http1MaxPendingRequests"));
        out.max_requests = count(cx, http.http2_max_requests, at.key("http2MaxRequests"));
        out.max_requests_per_connection =
            count(cx, http.max_requests_per_connection, at.key("maxRequestsPerConnection")).filter(|v| *v > 0);
        out.max_retries = count(cx, http.max_retries, at.key("maxRetries"));
        out.idle_timeout = parse_duration(cx, setting.key, &at.key("idleTimeout"), http.idle_timeout.as_deref());
    }
    out
}

fn outlier_detection(
    cx: &mut Context<'_>,
    setting: Setting<'_, OutlierDetection>,
    at: &FieldPath,
) -> proxy_config::OutlierDetection {
    let od = setting.value;
    let deprecated = od.consecutive_errors.and_then(|e| u32::try_from(e).ok()).filter(|e| *e > 0);
    // Istio: `consecutiveErrors` counts gateway errors only and turns the 5xx default off.
    let consecutive_5xx_errors = match (od.consecutive_5xx_errors, deprecated) {
        (Some(n), _) => Some(n).filter(|n| *n > 0),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_CONSECUTIVE_5XX_ERRORS),
    };
    let consecutive_gateway_errors = od.consecutive_gateway_errors.or(deprecated).filter(|n| *n > 0);
    // Counted apart only when the rule splits them; otherwise they count as 503s (Envoy).
    let consecutive_local_origin_failures = match od.split_external_local_origin_errors {
        Some(true) => Some(od.consecutive_local_origin_failures.unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES))
            .filter(|n| *n > 0),
        _ => None,
    };
    let interval = parse_duration(cx, setting.key, &at.key("interval"), od.interval.as_deref());
    let base = parse_duration(cx, setting.key, &at.key("baseEjectionTime"), od.base_ejection_time.as_deref());
    let percent = |value: Option<i32>| value.and_then(|v| u32::try_from(v).ok()).map(|v| v.min(100));
    if od.outlier_detection_http_error_codes.is_some() {
        let reason = "custom error codes for ejection are not supported; 5xx and gateway errors count";
        cx.skip(setting.key, at.key("outlierDetectionHttpErrorCodes"), reason);
    }
    proxy_config::OutlierDetection {
        consecutive_5xx_errors,
        consecutive_gateway_errors,
        consecutive_local_origin_failures,
        interval: interval.unwrap_or(DEFAULT_OUTLIER_INTERVAL),
        base_ejection_time: base.unwrap_or(DEFAULT_BASE_EJECTION_TIME),
        max_ejection_percent: percent(od.max_ejection_percent).unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
        min_health_percent: percent(od.min_health_percent).unwrap_or(0),
    }
}

fn tls(cx: &mut Context<'_>, setting: Setting<'_, ClientTlsSettings>, at: &FieldPath) -> UpstreamTls {
    let tls = setting.value;
    match tls.mode {
        None => UpstreamTls::Auto,
        Some(ClientTlsMode::Disable) => UpstreamTls::Disable,
        Some(ClientTlsMode::IstioMutual) => UpstreamTls::IstioMutual,
        Some(ClientTlsMode::Simple) => {
            UpstreamTls::Simple { sni: tls.sni.clone(), ca_certificates: tls.ca_certificates.clone() }
        }
        Some(ClientTlsMode::Mutual) => {
            let reason = "MUTUAL TLS with a client certificate cannot be expressed yet; TLS is originated without \
                          a client certificate (SIMPLE)";
            cx.skip(setting.key, at.key("mode"), reason);
            UpstreamTls::Simple { sni: tls.sni.clone(), ca_certificates: tls.ca_certificates.clone() }
        }
    }
}

/// Parses an optional Go-style duration, recording a bad one (validation normally refused it already).
pub(crate) fn parse_duration(cx: &mut Context<'_>, key: &Key, at: &FieldPath, text: Option<&str>) -> Option<Duration> {
    let text = text?;
    match trellis_api::duration::parse(text) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(err) => {
            cx.skip(key, at.clone(), format!("{err}; the setting is not applied"));
            None
        }
    }
}

/// Whether the subset's labels select an endpoint's labels.
pub fn subset_selects(subset: &destination_rule::Subset, labels: &crate::index::Labels) -> bool {
    subset.labels.as_ref().is_none_or(|l| scope::selects(l, labels))
}
