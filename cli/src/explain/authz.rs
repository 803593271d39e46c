//! Which AuthorizationPolicy decides a request at the destination: the workload behind the first
//! endpoint the route reaches is translated as the mesh would translate it, and the request is judged
//! by the proxy's own authorization engine, with the sending workload as the peer (its SPIFFE
//! identity, as mutual TLS would show it) and without JWT (explain does not verify tokens). The
//! local rate-limit rule the request falls under there (checked first by the proxy) is named too.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;
use trellis_api::proxy_config::{Cluster, INBOUND_CATCH_ALL_PORT, ProxyConfig, ProxyMode};
use trellis_controlplane::index::{Index, Key, Kind, WorkloadKind};
use trellis_controlplane::{ProxyIdentity, translate};
use trellis_proxy::authz::{AuthzPolicies, HttpFacts, RequestFacts};
use trellis_proxy::metrics::Metrics;
use trellis_proxy::ratelimit::Limiter;
use trellis_proxy::tls::principal;

use super::request::Request;

/// The authorization verdict at the destination workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationView {
    /// `namespace/name` of the workload that judges the request.
    pub workload: String,
    /// The workload port the request arrives on.
    pub port: u16,
    pub allowed: bool,
    /// The policy (`namespace/name`) and rule that decided, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// The decision in words (`denied by DENY policy shop/x rules[0]`, `allowed: no ALLOW policy applies`).
    pub reason: String,
    /// AUDIT policies that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audits: Vec<String>,
    /// The local rate-limit rule the request counts against there, if one matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitView>,
}

/// The RateLimitPolicy rule a request falls under at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitView {
    /// `namespace/name` of the RateLimitPolicy.
    pub policy: String,
    pub rule: u32,
    /// The bucket in words (`100 tokens, +10 every 100ms, per source`).
    pub bucket: String,
    /// Status of a refused request.
    pub status_code: u16,
}

/// The verdict of the workload behind `cluster`'s first endpoint for `request` sent by `source`
/// (whose config is `source_config`); `None` when no workload of the index stands behind it.
pub fn judge(
    index: &Index,
    source_config: &ProxyConfig,
    cluster: &Cluster,
    request: &Request,
) -> Option<AuthorizationView> {
    let endpoint = cluster.endpoints.first()?;
    let workload = index.workloads().find(|w| w.ip() == Some(endpoint.address.ip()))?;
    let kind = match workload.kind {
        WorkloadKind::Pod => Kind::Pod,
        WorkloadKind::WorkloadEntry => Kind::WorkloadEntry,
        WorkloadKind::ServiceEntryEndpoint => return None,
    };
    let key = Key::new(kind, &workload.namespace, &workload.name);
    let identity = ProxyIdentity::for_workload(index, &key, ProxyMode::Sidecar)?;
    let config = translate(index, &identity).config;
    let port = endpoint.address.port();
    let listener = config
        .inbound
        .iter()
        .find(|l| l.port == port)
        .or_else(|| config.inbound.iter().find(|l| l.port == INBOUND_CATCH_ALL_PORT));
    let rate_limit = listener.and_then(|l| rate_limit(&l.rate_limits, request, port));
    let rules = listener.map(|l| l.authorization.as_slice()).unwrap_or_default();
    let policies = AuthzPolicies::compile(rules).ok()?;
    let source_ip = index_ip(index, source_config).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let host = request.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(&request.host);
    let path = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let http = HttpFacts { host, method: request.method.as_str(), path: &path, headers: &request.headers, jwt: None };
    let peer = (!source_config.node.identity.is_empty()).then(|| principal(&source_config.node.identity));
    let facts = RequestFacts {
        source_ip,
        remote_ip: source_ip,
        destination_ip: endpoint.address.ip(),
        destination_port: port,
        peer,
        sni: None,
        http: Some(http),
    };
    let decision = policies.evaluate(&facts);
    Some(AuthorizationView {
        workload: format!("{}/{}", workload.namespace, workload.name),
        port,
        allowed: decision.allowed,
        policy: decision.decided_by.map(|m| m.policy.to_owned()),
        rule: decision.decided_by.map(|m| m.rule),
        reason: decision.to_string(),
        audits: decision.audits.iter().map(|m| m.policy.to_owned()).collect(),
        rate_limit,
    })
}

/// The first of a port's rate-limit rules that `request` matches, as the proxy picks it.
fn rate_limit(rules: &[trellis_api::proxy_config::RateLimit], request: &Request, port: u16) -> Option<RateLimitView> {
    let metrics = Metrics::new();
    let rule = rules
        .iter()
        .find(|rule| Limiter::new(rule, &metrics).matches_http(request.method.as_str(), &request.path, port))?;
    let per_source = if rule.per_source { ", per source" } else { "" };
    Some(RateLimitView {
        policy: rule.policy.clone(),
        rule: rule.rule,
        bucket: format!(
            "{} tokens, +{} every {}{per_source}",
            rule.max_tokens,
            rule.tokens_per_fill,
            trellis_api::duration::format(rule.fill_interval)
        ),
        status_code: rule.status_code,
    })
}

/// The IP of the sending workload, from the index.
fn index_ip(index: &Index, config: &ProxyConfig) -> Option<IpAddr> {
    let name = config.node.id.strip_suffix(&format!(".{}", config.node.namespace))?;
    index.workloads().find(|w| w.namespace == config.node.namespace && w.name == name)?.ip()
}
