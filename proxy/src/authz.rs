//! Authorization, pure: the `AuthorizationPolicy` rules of an inbound port, compiled once per config
//! ([`AuthzPolicies::compile`]) and evaluated per request or connection ([`AuthzPolicies::evaluate`]) on facts
//! the caller has already gathered (peer identity from mutual TLS, verified JWT, request line and headers).
//! No I/O happens here; the HTTP and TCP paths turn a denial into [`DENIED_STATUS`] / [`DENIED_BODY`] or a
//! closed connection.
//!
//! Semantics are Istio's (<https://istio.io/latest/docs/concepts/security/#authorization>): any matching DENY
//! policy denies; otherwise, with no ALLOW policy the request is allowed, and with some it is allowed only if
//! one matches. An ALLOW policy without rules matches nothing, so it denies everything. AUDIT policies never
//! change the decision; the ones that match are reported. A rule matches when any `from` entry, any `to`
//! entry and every `when` condition match (absent parts match everything); within a source or operation every
//! field set must match; a field matches when any of its values matches, its `not` form when none does.
//!
//! Plain TCP connections (no HTTP facts) carry no host, method, path, header or JWT. Istio's "Security
//! Problems" page (<https://istio.io/latest/docs/ops/common-problems/security-issues/>, "Make sure you are NOT
//! using HTTP-only fields on TCP ports") says: "In the case of `ALLOW` policy, these fields are never matched.
//! In the case of `DENY` and `CUSTOM` action, these fields are considered always matched." So on TCP an ALLOW
//! rule that uses any HTTP-only field (`hosts`, `methods`, `paths`, `requestPrincipals`, their `not` forms, or
//! a `request.*` condition) never matches, while DENY and AUDIT rules treat those fields as matching: the
//! rule still denies on what it can check, which is the more restrictive reading.

use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, StatusCode};
use trellis_api::istio::authorization_policy::{Operation, Rule, Source};
use trellis_api::proxy_config::{AuthorizationAction, AuthorizationRule};

use crate::Error;
use conditions::ConditionMatch;
use matchers::{Cidr, PathMatch, ServiceAccount, StrMatch, ValueSet, parse_port};

mod conditions;
mod matchers;

/// The status of a request refused by authorization (Envoy's RBAC filter answers the same).
pub const DENIED_STATUS: StatusCode = StatusCode::FORBIDDEN;
/// The body of that answer, byte for byte Envoy's, so clients and tests written for Istio still match.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What is known about one request (or TCP connection) when it is authorized; all borrowed, cheap to build.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The peer address of the connection (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client address (`remote.ip`, `remoteIpBlocks`): from trusted `X-Forwarded-For` or the PROXY
    /// protocol, else the same as `source_ip`.
    pub remote_ip: IpAddr,
    /// The local address the connection arrived on (`destination.ip`).
    pub destination_ip: IpAddr,
    /// The workload port the connection is for (`ports`, `destination.port`).
    pub destination_port: u16,
    /// The peer's mutual-TLS identity without `spiffe://` (`cluster.local/ns/shop/sa/web`); `None` for plain
    /// text. Namespace, service account and trust domain are read from it, as Istio does.
    pub peer: Option<&'a str>,
    /// The TLS server name the client asked for (`connection.sni`).
    pub sni: Option<&'a str>,
    /// The request's HTTP facts; `None` for a plain TCP connection.
    pub http: Option<HttpFacts<'a>>,
}

/// The HTTP part of a request's facts.
#[derive(Debug, Clone, Copy)]
pub struct HttpFacts<'a> {
    /// `:authority` (or `Host`), port included when the client sent one: Istio matches it as sent.
    pub host: &'a str,
    pub method: &'a str,
    /// The request target's path, query included; `paths` match the part before `?`.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The verified JWT, if the request carried one.
    pub jwt: Option<JwtFacts<'a>>,
}

/// A verified JWT.
#[derive(Debug, Clone, Copy)]
pub struct JwtFacts<'a> {
    /// `<iss>/<sub>` (`requestPrincipals`, `request.auth.principal`).
    pub principal: &'a str,
    /// The payload; `aud` gives `request.auth.audiences`, `azp` `request.auth.presenter`.
    pub claims: &'a serde_json::Value,
}

/// A policy that matched, and the first of its rules that did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyMatch<'p> {
    /// `namespace/name`.
    pub policy: &'p str,
    pub action: AuthorizationAction,
    /// Index into the policy's `rules`.
    pub rule: usize,
}

/// The outcome of [`AuthzPolicies::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub allowed: bool,
    /// The DENY or ALLOW policy that decided; `None` when no policy did (allowed because no ALLOW policy
    /// applies, or denied because ALLOW policies exist and none matched).
    pub decided_by: Option<PolicyMatch<'p>>,
    /// The AUDIT policies that matched; they do not change `allowed`.
    pub audits: Vec<PolicyMatch<'p>>,
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match &self.decided_by {
            Some(m) => {
                let action = match m.action {
                    AuthorizationAction::Allow => "ALLOW",
                    AuthorizationAction::Deny => "DENY",
                    AuthorizationAction::Audit => "AUDIT",
                };
                write!(f, "{verdict} by {action} policy {} rules[{}]", m.policy, m.rule)
            }
            None if self.allowed => write!(f, "{verdict}: no ALLOW policy applies"),
            None => write!(f, "{verdict}: no ALLOW policy matched"),
        }
    }
}

/// The authorization policies of one inbound port, compiled.
#[derive(Debug, Clone, Default)]
pub struct AuthzPolicies {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
}

#[derive(Debug, Clone)]
struct Policy {
    name: Box<str>,
    action: AuthorizationAction,
    rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    /// `None`: any source.
    from: Option<Vec<SourceMatch>>,
    /// `None`: any operation.
    to: Option<Vec<OperationMatch>>,
    when: Vec<ConditionMatch>,
    /// Whether any part reads an HTTP-only attribute (such a rule never matches TCP in an ALLOW policy).
    http_only: bool,
}

#[derive(Debug, Clone, Default)]
struct SourceMatch {
    principals: ValueSet<StrMatch>,
    request_principals: ValueSet<StrMatch>,
    namespaces: ValueSet<StrMatch>,
    service_accounts: ValueSet<ServiceAccount>,
    ip_blocks: ValueSet<Cidr>,
    remote_ip_blocks: ValueSet<Cidr>,
    trust_domains: ValueSet<StrMatch>,
}

#[derive(Debug, Clone, Default)]
struct OperationMatch {
    hosts: ValueSet<StrMatch>,
    ports: ValueSet<u16>,
    methods: ValueSet<StrMatch>,
    paths: ValueSet<PathMatch>,
}

impl AuthzPolicies {
    /// Compiles the policies of a port. Errors name the policy and the field, e.g.
    /// `policy shop/deny-x: rules[0].from[0].source.ipBlocks[1]: "10.0.0.300/8" is not an IP or CIDR`.
    pub fn compile(rules: &[AuthorizationRule]) -> Result<AuthzPolicies, Error> {
        let mut compiled = AuthzPolicies::default();
        for rule in rules {
            let policy = Policy::compile(rule)
                .map_err(|message| Error::Authorization { policy: rule.policy.clone(), message })?;
            match rule.action {
                AuthorizationAction::Deny => compiled.deny.push(policy),
                AuthorizationAction::Allow => compiled.allow.push(policy),
                AuthorizationAction::Audit => compiled.audit.push(policy),
            }
        }
        Ok(compiled)
    }

    /// Whether no policy applies, so every request is allowed and facts need not be gathered.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }

    /// Decides one request or connection.
    pub fn evaluate(&self, facts: &RequestFacts<'_>) -> Decision<'_> {
        let cx = Context::new(facts);
        let audits = self.audit.iter().filter_map(|p| p.first_match(&cx)).collect();
        if let Some(deny) = self.deny.iter().find_map(|p| p.first_match(&cx)) {
            return Decision { allowed: false, decided_by: Some(deny), audits };
        }
        if self.allow.is_empty() {
            return Decision { allowed: true, decided_by: None, audits };
        }
        let allow = self.allow.iter().find_map(|p| p.first_match(&cx));
        Decision { allowed: allow.is_some(), decided_by: allow, audits }
    }
}

impl Policy {
    fn compile(rule: &AuthorizationRule) -> Result<Policy, String> {
        let namespace = rule.policy.split_once('/').map(|(namespace, _)| namespace);
        let rules = rule
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| CompiledRule::compile(r, &format!("rules[{i}]"), namespace))
            .collect::<Result<_, _>>()?;
        Ok(Policy { name: rule.policy.as_str().into(), action: rule.action, rules })
    }

    /// The first rule of this policy that matches, as a [`PolicyMatch`].
    fn first_match(&self, cx: &Context<'_, '_>) -> Option<PolicyMatch<'_>> {
        let tcp = cx.facts.http.is_none();
        let rule = self.rules.iter().position(|rule| {
            if tcp && rule.http_only && self.action == AuthorizationAction::Allow {
                return false;
            }
            rule.matches(cx)
        })?;
        Some(PolicyMatch { policy: &self.name, action: self.action, rule })
    }
}

impl CompiledRule {
    fn compile(rule: &Rule, at: &str, namespace: Option<&str>) -> Result<CompiledRule, String> {
        let from = match &rule.from {
            None => None,
            Some(entries) if entries.is_empty() => return Err(format!("{at}.from: must not be empty when set")),
            Some(entries) => Some(
                entries
                    .iter()
                    .enumerate()
                    .map(|(j, entry)| {
                        let at = format!("{at}.from[{j}].source");
                        let source = entry.source.as_ref().ok_or_else(|| format!("{at}: must be set"))?;
                        SourceMatch::compile(source, &at, namespace)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let to = match &rule.to {
            None => None,
            Some(entries) if entries.is_empty() => return Err(format!("{at}.to: must not be empty when set")),
            Some(entries) => Some(
                entries
                    .iter()
                    .enumerate()
                    .map(|(j, entry)| {
                        let at = format!("{at}.to[{j}].operation");
                        let operation = entry.operation.as_ref().ok_or_else(|| format!("{at}: must be set"))?;
                        OperationMatch::compile(operation, &at)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let when = rule
            .when
            .iter()
            .flatten()
            .enumerate()
            .map(|(k, condition)| ConditionMatch::compile(condition, &format!("{at}.when[{k}]"), namespace))
            .collect::<Result<Vec<_>, _>>()?;
        let http_only = from.iter().flatten().any(|s| s.request_principals.is_set())
            || to.iter().flatten().any(|o| o.hosts.is_set() || o.methods.is_set() || o.paths.is_set())
            || when.iter().any(ConditionMatch::is_http_only);
        Ok(CompiledRule { from, to, when, http_only })
    }

    fn matches(&self, cx: &Context<'_, '_>) -> bool {
        self.from.as_ref().is_none_or(|sources| sources.iter().any(|s| s.matches(cx)))
            && self.to.as_ref().is_none_or(|operations| operations.iter().any(|o| o.matches(cx)))
            && self.when.iter().all(|c| c.matches(cx))
    }
}

impl SourceMatch {
    fn compile(source: &Source, at: &str, namespace: Option<&str>) -> Result<SourceMatch, String> {
        let strings = |names, values| ValueSet::compile(at, names, values, StrMatch::parse);
        let ips = |names, values| ValueSet::compile(at, names, values, Cidr::parse);
        let compiled = SourceMatch {
            principals: strings(
                ("principals", "notPrincipals"),
                (source.principals.as_ref(), source.not_principals.as_ref()),
            )?,
            request_principals: strings(
                ("requestPrincipals", "notRequestPrincipals"),
                (source.request_principals.as_ref(), source.not_request_principals.as_ref()),
            )?,
            namespaces: strings(
                ("namespaces", "notNamespaces"),
                (source.namespaces.as_ref(), source.not_namespaces.as_ref()),
            )?,
            service_accounts: ValueSet::compile(
                at,
                ("serviceAccounts", "notServiceAccounts"),
                (source.service_accounts.as_ref(), source.not_service_accounts.as_ref()),
                |value| ServiceAccount::parse(value, namespace),
            )?,
            ip_blocks: ips(("ipBlocks", "notIpBlocks"), (source.ip_blocks.as_ref(), source.not_ip_blocks.as_ref()))?,
            remote_ip_blocks: ips(
                ("remoteIpBlocks", "notRemoteIpBlocks"),
                (source.remote_ip_blocks.as_ref(), source.not_remote_ip_blocks.as_ref()),
            )?,
            trust_domains: strings(
                ("trustDomains", "notTrustDomains"),
                (source.trust_domains.as_ref(), source.not_trust_domains.as_ref()),
            )?,
        };
        Ok(compiled)
    }

    fn matches(&self, cx: &Context<'_, '_>) -> bool {
        let facts = cx.facts;
        let one = |set: &ValueSet<StrMatch>, value: Option<&str>| {
            set.check(|m| value.is_some_and(|v| m.matches(v.as_bytes())))
        };
        one(&self.principals, facts.peer)
            && one(&self.namespaces, cx.peer.namespace)
            && one(&self.trust_domains, cx.peer.trust_domain)
            && self.service_accounts.check(|sa| sa.matches(cx.peer.namespace, cx.peer.service_account))
            && self.ip_blocks.check(|c| c.contains(facts.source_ip))
            && self.remote_ip_blocks.check(|c| c.contains(facts.remote_ip))
            && match &facts.http {
                // HTTP-only: considered matching on TCP (see the module's TCP notes).
                None => true,
                Some(http) => one(&self.request_principals, http.jwt.map(|j| j.principal)),
            }
    }
}

impl OperationMatch {
    fn compile(operation: &Operation, at: &str) -> Result<OperationMatch, String> {
        let strings = |names, values| ValueSet::compile(at, names, values, StrMatch::parse);
        Ok(OperationMatch {
            hosts: strings(("hosts", "notHosts"), (operation.hosts.as_ref(), operation.not_hosts.as_ref()))?,
            ports: ValueSet::compile(
                at,
                ("ports", "notPorts"),
                (operation.ports.as_ref(), operation.not_ports.as_ref()),
                parse_port,
            )?,
            methods: strings(("methods", "notMethods"), (operation.methods.as_ref(), operation.not_methods.as_ref()))?,
            paths: ValueSet::compile(
                at,
                ("paths", "notPaths"),
                (operation.paths.as_ref(), operation.not_paths.as_ref()),
                PathMatch::parse,
            )?,
        })
    }

    fn matches(&self, cx: &Context<'_, '_>) -> bool {
        let facts = cx.facts;
        self.ports.check(|p| *p == facts.destination_port)
            && match &facts.http {
                // HTTP-only: considered matching on TCP (see the module's TCP notes).
                None => true,
                Some(http) => {
                    self.hosts.check(|m| m.matches_ignoring_case(http.host.as_bytes()))
                        && self.methods.check(|m| m.matches(http.method.as_bytes()))
                        && self.paths.check(|m| m.matches(cx.path))
                }
            }
    }
}

/// The facts of one evaluation, with what is derived from them once.
struct Context<'c, 'a> {
    facts: &'c RequestFacts<'a>,
    peer: Peer<'a>,
    /// The request path without query or fragment.
    path: &'a str,
}

impl<'c, 'a> Context<'c, 'a> {
    fn new(facts: &'c RequestFacts<'a>) -> Self {
        let path = facts.http.map_or("", |http| http.path.split(['?', '#']).next().unwrap_or(http.path));
        Context { facts, peer: facts.peer.map(Peer::parse).unwrap_or_default(), path }
    }
}

/// The parts of a peer identity `<trust domain>/ns/<namespace>/sa/<service account>`.
#[derive(Debug, Clone, Copy, Default)]
struct Peer<'a> {
    trust_domain: Option<&'a str>,
    namespace: Option<&'a str>,
    service_account: Option<&'a str>,
}

impl<'a> Peer<'a> {
    fn parse(identity: &'a str) -> Self {
        let mut segments = identity.split('/');
        let trust_domain = segments.next().filter(|s| !s.is_empty());
        let (mut namespace, mut service_account) = (None, None);
        while let Some(segment) = segments.next() {
            match segment {
                "ns" if namespace.is_none() => namespace = segments.next(),
                "sa" if service_account.is_none() => service_account = segments.next(),
                _ => {}
            }
        }
        Peer { trust_domain, namespace, service_account }
    }
}

#[cfg(test)]
mod tests;
