//! An [`Explanation`] as readable text: one `label: value` line per fact, in the order the proxy
//! decides them (virtual host, route, destinations, clusters and endpoints), then translate's notes.

use std::collections::BTreeMap;
use std::fmt::Write;

use trellis_api::duration::format as duration;
use trellis_api::proxy_config::{
    Cluster, HashKey, HeaderOps, LoadBalancer, Protocol, ProxyMode, RouteMatch, StringMatcher, UpstreamTls,
};

use super::model::{Destination, Explanation, MatchedBy, Origin, Outcome, RouteView};

/// Width of the label column.
const LABEL_WIDTH: usize = 15;

/// The explanation as text, ending with a newline.
pub fn text(e: &Explanation) -> String {
    let mut out = Out::default();
    let r = &e.request;
    out.line("request", format!("{} {}", r.method, r.url));
    let extra: Vec<String> =
        r.headers.iter().filter(|(k, _)| k.as_str() != "host").map(|(k, v)| format!("{k}: {v}")).collect();
    if !extra.is_empty() {
        out.line("  headers", extra.join(", "));
    }
    let mode = match e.proxy.mode {
        ProxyMode::Sidecar => "sidecar",
        ProxyMode::Gateway => "gateway",
    };
    out.line("proxy", format!("{mode} {} ({})", e.proxy.id, e.proxy.identity));
    if let Some(port) = e.listener {
        out.line("listener", port.to_string());
    }
    if let Some(vhost) = &e.virtual_host {
        out.line("virtual host", format!("{}:{} ({})", vhost.name, vhost.port, protocol(vhost.protocol)));
        let how = match &vhost.matched_by {
            MatchedBy::Name => format!("its name {:?}", r.host),
            MatchedBy::Domain(d) => format!("the client name {d:?}"),
            MatchedBy::Address(a) => format!("the service address {a}"),
            MatchedBy::Wildcard(w) => format!("the wildcard {w:?}"),
        };
        let port = match e.proxy.mode {
            ProxyMode::Sidecar => format!(" on port {}", r.port),
            ProxyMode::Gateway => String::new(),
        };
        out.line("  matched by", format!("{how}{port}"));
    }
    if let Some(route) = &e.route {
        route_lines(&mut out, route);
    }
    if !e.tcp.is_empty() {
        out.line("connection", "opaque (TCP or TLS by SNI): HTTP routes do not apply");
        destination_lines(&mut out, "forwarded to", &e.tcp);
    }
    for cluster in &e.clusters {
        cluster_lines(&mut out, cluster);
    }
    if let Some(limit) = e.authorization.as_ref().and_then(|a| a.rate_limit.as_ref()) {
        // The proxy counts the request against its rate limit before it judges authorization.
        out.line(
            "rate limit",
            format!(
                "RateLimitPolicy {} rules[{}]: {} (else {})",
                limit.policy, limit.rule, limit.bucket, limit.status_code
            ),
        );
    }
    if let Some(authz) = &e.authorization {
        let verdict = if authz.allowed { "allowed" } else { "denied (403 RBAC: access denied)" };
        out.line("authorization", format!("at {} port {}: {verdict}", authz.workload, authz.port));
        out.line("", authz.reason.clone());
        for audit in &authz.audits {
            out.line("", format!("audited by {audit}"));
        }
    }
    out.line("result", result(e));
    if !e.skipped.is_empty() {
        out.line("notes", "translate left these out of the proxy's config:");
        for note in &e.skipped {
            out.line("", note.clone());
        }
    }
    out.text
}

/// The one-line verdict.
fn result(e: &Explanation) -> String {
    let r = &e.request;
    match e.outcome {
        Outcome::Routed => match (&e.local_response, &e.route) {
            (Some(local), _) => format!("answered by the proxy: {} ({})", local.status, local.reason),
            (None, Some(route)) if route.destinations.len() > 1 => {
                format!("forwarded to one of {} destinations by weight", route.destinations.len())
            }
            _ => "forwarded".to_owned(),
        },
        Outcome::Tcp => "connection forwarded".to_owned(),
        Outcome::NoRoute => format!(
            "no route -> 404: none of the {} route(s) of the virtual host matched ({})",
            e.routes_tried.len(),
            e.routes_tried.join(", ")
        ),
        Outcome::Passthrough => format!(
            "no virtual host for {}:{} -> passthrough: forwarded unchanged to the original destination \
             (outbound traffic policy ALLOW_ANY)",
            r.host, r.port
        ),
        Outcome::Refused => format!(
            "no virtual host for {}:{} -> 502: destinations outside the registry are refused (REGISTRY_ONLY)",
            r.host, r.port
        ),
        Outcome::NoVirtualHost => {
            format!("no virtual host for {} on the gateway's port {} -> 404", r.host, r.port)
        }
        Outcome::NoListener => format!(
            "the gateway does not listen on port {} (it listens on: {}) -> connection refused",
            r.port,
            e.listeners.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn route_lines(out: &mut Out, route: &RouteView) {
    out.line("route", route.name.clone());
    let from = match &route.origin {
        Origin::VirtualService { namespace, name, rule, rule_name } => {
            let rule = match (rule, rule_name) {
                (Some(i), Some(n)) => format!("spec.http[{i}] ({n:?})"),
                (Some(i), None) => format!("spec.http[{i}]"),
                (None, Some(n)) => format!("the rule named {n:?}"),
                (None, None) => "a rule".to_owned(),
            };
            format!("VirtualService {namespace}/{name}, {rule}")
        }
        Origin::Default { host } => format!("Istio's default route for {host} (no VirtualService routes it)"),
        Origin::HttpsRedirect { namespace, name, server } => {
            format!("Gateway {namespace}/{name}, spec.servers[{server}].tls.httpsRedirect")
        }
        Origin::Unknown => "(not traceable to a policy object)".to_owned(),
    };
    out.line("  from", from);
    let matched = match (&route.matched, route.matched_block) {
        (Some(m), Some(b)) => format!("block {} of {}: {}", b + 1, route.blocks, describe_match(m)),
        _ => "every request (the rule has no match conditions)".to_owned(),
    };
    out.line("  match", matched);
    if !route.destinations.is_empty() {
        destination_lines(out, "forwarded to", &route.destinations);
    }
    if let Some(path) = &route.rewritten_path {
        out.line("rewrite path", path.clone());
    }
    if let Some(authority) = &route.rewritten_authority {
        out.line("rewrite host", authority.clone());
    }
    if let Some(location) = &route.redirect {
        out.line("redirect to", location.clone());
    }
    if let Some(body) = &route.direct_body {
        out.line("direct body", format!("{body:?}"));
    }
    if let Some(timeout) = &route.timeout {
        out.line("timeout", timeout.clone());
    }
    if let Some(retries) = &route.retries {
        let mut text = format!("{} attempt(s)", retries.attempts);
        if !retries.retry_on.is_empty() {
            let _ = write!(text, " on {}", retries.retry_on.join(","));
        }
        if let Some(per_try) = retries.per_try_timeout {
            let _ = write!(text, ", {} per try", duration(per_try));
        }
        if let Some(backoff) = retries.backoff {
            let _ = write!(text, ", backoff {}", duration(backoff));
        }
        out.line("retries", text);
    }
    if let Some(fault) = &route.fault {
        if let Some(delay) = &fault.delay {
            out.line("fault delay", format!("{} for {}% of requests", duration(delay.fixed_delay), delay.percentage));
        }
        if let Some(abort) = &fault.abort {
            let status = match (&abort.http_status, &abort.grpc_status) {
                (Some(s), _) => format!("HTTP {s}"),
                (None, Some(g)) => format!("gRPC {g}"),
                (None, None) => "an error".to_owned(),
            };
            out.line("fault abort", format!("{status} for {}% of requests", abort.percentage));
        }
    }
    for mirror in &route.mirrors {
        out.line("mirror", format!("{}% to {}", mirror.percentage, mirror.cluster));
    }
    header_lines(out, "request headers", &route.request_headers);
    header_lines(out, "response headers", &route.response_headers);
}

fn destination_lines(out: &mut Out, label: &str, destinations: &[Destination]) {
    out.line(label, "");
    for d in destinations {
        out.line("", format!("{:>5}%  {}", percent(d.percent), d.cluster));
        header_lines(out, "  request headers", &d.request_headers);
        header_lines(out, "  response headers", &d.response_headers);
    }
}

fn cluster_lines(out: &mut Out, cluster: &Cluster) {
    out.line("cluster", cluster.name.clone());
    let subset = if cluster.subset.is_empty() { String::new() } else { format!(", subset {}", cluster.subset) };
    out.line(
        "  service",
        format!("{} port {}{subset} ({})", cluster.service, cluster.port, protocol(cluster.protocol)),
    );
    out.line("  balancer", load_balancer(&cluster.load_balancer));
    out.line("  tls", tls(&cluster.tls));
    if let Some(pool) = &cluster.connection_pool {
        let mut limits = Vec::new();
        let mut limit = |name: &str, value: Option<u32>| {
            if let Some(v) = value {
                limits.push(format!("{name} {v}"));
            }
        };
        limit("max connections", pool.max_connections);
        limit("max pending requests", pool.max_pending_requests);
        limit("max requests", pool.max_requests);
        limit("max requests per connection", pool.max_requests_per_connection);
        limit("max retries", pool.max_retries);
        if let Some(t) = pool.connect_timeout {
            limits.push(format!("connect timeout {}", duration(t)));
        }
        if let Some(t) = pool.idle_timeout {
            limits.push(format!("idle timeout {}", duration(t)));
        }
        out.line("  limits", limits.join(", "));
    }
    if let Some(od) = &cluster.outlier_detection {
        let mut after = Vec::new();
        if let Some(n) = od.consecutive_5xx_errors {
            after.push(format!("{n} consecutive 5xx"));
        }
        if let Some(n) = od.consecutive_gateway_errors {
            after.push(format!("{n} consecutive gateway errors"));
        }
        out.line(
            "  ejection",
            format!(
                "after {}, checked every {}, for {} and more, at most {}% of endpoints",
                if after.is_empty() { "errors".to_owned() } else { after.join(" or ") },
                duration(od.interval),
                duration(od.base_ejection_time),
                od.max_ejection_percent
            ),
        );
    }
    if cluster.endpoints.is_empty() {
        out.line("  endpoints", "none: requests get 503");
    }
    for (i, ep) in cluster.endpoints.iter().enumerate() {
        let mut text = format!("{}", ep.address);
        if !ep.labels.is_empty() {
            let _ = write!(text, "  {}", labels(&ep.labels));
        }
        if ep.weight != 1 {
            let _ = write!(text, "  weight {}", ep.weight);
        }
        if ep.meshed {
            text.push_str("  meshed");
        }
        if !ep.identity.is_empty() {
            let _ = write!(text, "  {}", ep.identity);
        }
        out.line(if i == 0 { "  endpoints" } else { "" }, text);
    }
}

/// A match block's conditions, as a reader says them.
pub fn describe_match(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    let mut add = |what: String, matcher: &StringMatcher| parts.push(format!("{what} {}", string_matcher(matcher)));
    if let Some(uri) = &m.uri {
        add(if m.ignore_uri_case { "uri (any case)".to_owned() } else { "uri".to_owned() }, uri);
    }
    for (what, matcher) in [("method", &m.method), ("authority", &m.authority), ("scheme", &m.scheme)] {
        if let Some(matcher) = matcher {
            add(what.to_owned(), matcher);
        }
    }
    for (name, matcher) in &m.headers {
        add(format!("header {name}"), matcher);
    }
    for (name, matcher) in &m.without_headers {
        add(format!("not header {name}"), matcher);
    }
    for (name, matcher) in &m.query_params {
        add(format!("query {name}"), matcher);
    }
    if let Some(port) = m.port {
        parts.push(format!("port {port}"));
    }
    if !m.source_labels.is_empty() {
        parts.push(format!("source labels {}", labels(&m.source_labels)));
    }
    if parts.is_empty() { "every request".to_owned() } else { parts.join(", ") }
}

fn string_matcher(m: &StringMatcher) -> String {
    match m {
        StringMatcher::Exact(s) => format!("= {s:?}"),
        StringMatcher::Prefix(s) => format!("starts with {s:?}"),
        StringMatcher::Regex(s) => format!("matches /{s}/"),
        StringMatcher::Present => "is present".to_owned(),
    }
}

fn header_lines(out: &mut Out, label: &str, ops: &HeaderOps) {
    if ops.is_empty() {
        return;
    }
    let mut edits = Vec::new();
    edits.extend(ops.remove.iter().map(|k| format!("remove {k}")));
    edits.extend(ops.set.iter().map(|(k, v)| format!("set {k}: {v}")));
    edits.extend(ops.add.iter().map(|(k, v)| format!("add {k}: {v}")));
    out.line(label, edits.join("; "));
}

fn load_balancer(lb: &LoadBalancer) -> String {
    match lb {
        LoadBalancer::PeakEwma => "peak EWMA (latency-aware, the default)".to_owned(),
        LoadBalancer::RoundRobin => "round robin".to_owned(),
        LoadBalancer::Random => "random".to_owned(),
        LoadBalancer::LeastRequest => "least request".to_owned(),
        LoadBalancer::ConsistentHash(key) => match key {
            HashKey::Header(h) => format!("consistent hash of header {h}"),
            HashKey::Cookie { name, .. } => format!("consistent hash of cookie {name}"),
            HashKey::SourceIp => "consistent hash of the source IP".to_owned(),
            HashKey::QueryParameter(q) => format!("consistent hash of query parameter {q}"),
        },
    }
}

fn tls(tls: &UpstreamTls) -> String {
    match tls {
        UpstreamTls::Auto => "auto: mutual TLS to meshed endpoints, plain text to the others".to_owned(),
        UpstreamTls::IstioMutual => "mesh mutual TLS (ISTIO_MUTUAL)".to_owned(),
        UpstreamTls::Disable => "plain text (DISABLE)".to_owned(),
        UpstreamTls::Simple { sni, .. } => match sni {
            Some(sni) => format!("TLS (SIMPLE), SNI {sni}"),
            None => "TLS (SIMPLE)".to_owned(),
        },
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Detect => "protocol sniffed",
        Protocol::Http => "http",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
        Protocol::Tls => "tls",
        Protocol::Tcp => "tcp",
    }
}

fn labels(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `90`, `33.3`: whole numbers without decimals.
fn percent(p: f64) -> String {
    if (p - p.round()).abs() < 0.05 { format!("{}", p.round()) } else { format!("{p:.1}") }
}

/// Lines of `label: value`, labels padded to one column.
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn line(&mut self, label: &str, value: impl AsRef<str>) {
        let value = value.as_ref();
        let label = if label.is_empty() { String::new() } else { format!("{label}:") };
        let line = format!("{label:<LABEL_WIDTH$} {value}");
        self.text.push_str(line.trim_end());
        self.text.push('\n');
    }
}
