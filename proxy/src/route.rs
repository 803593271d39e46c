//! Request routing, pure: compiled VirtualService semantics applied to a request's parts.
//!
//! Everything here is built once per config ([`compile_route`]) and only looked up per request: regexes
//! are compiled, header names parsed, weights summed. First matching route wins; within a route, any
//! one `match` block matching is enough, and all conditions of a block must hold (Istio's semantics).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use regex::Regex;
use trellis_api::proxy_config::{HeaderOps, Route, RouteAction, RouteMatch, StringMatcher};

use crate::Error;
use crate::http::{Faults, MirrorTarget, share_of};
use crate::retry::RouteResilience;

/// A string condition, ready to evaluate.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored to the whole value, as Envoy's `safe_regex` matches.
    Regex(Regex),
    Present,
}

impl Matcher {
    fn compile(matcher: &StringMatcher) -> Result<Self, String> {
        Ok(match matcher {
            StringMatcher::Exact(s) => Matcher::Exact(s.clone()),
            StringMatcher::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatcher::Regex(r) => {
                Matcher::Regex(Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("regex {r:?}: {e}"))?)
            }
            StringMatcher::Present => Matcher::Present,
        })
    }

    /// Whether `value` satisfies the condition (`None` means the value is absent).
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        match self {
            Matcher::Exact(s) => value == s,
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(value),
            Matcher::Present => true,
        }
    }

    fn matches_ignoring_case(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => value.eq_ignore_ascii_case(s),
            Matcher::Prefix(p) => {
                value.len() >= p.len() && value.is_char_boundary(p.len()) && value[..p.len()].eq_ignore_ascii_case(p)
            }
            Matcher::Regex(r) => r.is_match(&value.to_ascii_lowercase()) || r.is_match(value),
            Matcher::Present => true,
        }
    }
}

/// One compiled `match` block.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    uri: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    scheme: Option<Matcher>,
    headers: Vec<(HeaderName, Matcher)>,
    without_headers: Vec<(HeaderName, Matcher)>,
    query_params: Vec<(String, Matcher)>,
    port: Option<u16>,
    source_labels: BTreeMap<String, String>,
    ignore_uri_case: bool,
}

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a Method,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Host without port.
    pub authority: &'a str,
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
    /// The destination port the client used.
    pub port: u16,
    /// Labels of the calling workload (the sidecar's own workload on the outbound side).
    pub source_labels: &'a BTreeMap<String, String>,
}

impl Conditions {
    fn compile(m: &RouteMatch) -> Result<Self, String> {
        let opt = |m: &Option<StringMatcher>| m.as_ref().map(Matcher::compile).transpose();
        let headers = |map: &BTreeMap<String, StringMatcher>| -> Result<Vec<(HeaderName, Matcher)>, String> {
            map.iter()
                .map(|(name, m)| {
                    let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("header name {name:?}"))?;
                    Ok((name, Matcher::compile(m)?))
                })
                .collect()
        };
        Ok(Self {
            uri: opt(&m.uri)?,
            method: opt(&m.method)?,
            authority: opt(&m.authority)?,
            scheme: opt(&m.scheme)?,
            headers: headers(&m.headers)?,
            without_headers: headers(&m.without_headers)?,
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| Ok((k.clone(), Matcher::compile(v)?)))
                .collect::<Result<_, String>>()?,
            port: m.port,
            source_labels: m.source_labels.clone(),
            ignore_uri_case: m.ignore_uri_case,
        })
    }

    /// Whether every condition holds for `req`.
    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        if let Some(port) = self.port
            && port != req.port
        {
            return false;
        }
        if let Some(uri) = &self.uri {
            let ok =
                if self.ignore_uri_case { uri.matches_ignoring_case(req.path) } else { uri.matches(Some(req.path)) };
            if !ok {
                return false;
            }
        }
        if self.method.as_ref().is_some_and(|m| !m.matches(Some(req.method.as_str()))) {
            return false;
        }
        if self.authority.as_ref().is_some_and(|m| !m.matches(Some(req.authority))) {
            return false;
        }
        if self.scheme.as_ref().is_some_and(|m| !m.matches(Some(req.scheme))) {
            return false;
        }
        let header = |name: &HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
        if !self.headers.iter().all(|(name, m)| m.matches(header(name))) {
            return false;
        }
        if self.without_headers.iter().any(|(name, m)| m.matches(header(name))) {
            return false;
        }
        if !self.query_params.is_empty() {
            let query = req.query.unwrap_or_default();
            let value = |key: &str| {
                query.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == key).then_some(v)
                })
            };
            if !self.query_params.iter().all(|(key, m)| m.matches(value(key))) {
                return false;
            }
        }
        self.source_labels.iter().all(|(k, v)| req.source_labels.get(k) == Some(v))
    }
}

/// Header operations with names and values parsed.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Parses header operations; a bad name or value is an error naming it.
    pub fn compile(ops: &HeaderOps) -> Result<Self, String> {
        let pair = |(k, v): (&String, &String)| -> Result<(HeaderName, HeaderValue), String> {
            let name =
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| format!("header name {k:?}"))?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("header value {v:?}"))?;
            Ok((name, value))
        };
        Ok(Self {
            set: ops.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: ops.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: ops
                .remove
                .iter()
                .map(|k| {
                    HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| format!("header name {k:?}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits in Envoy's order, which Istio's `HeaderOperations` get: `remove` first,
    /// then `set`, then `add`. So a header both removed and set (or added) ends up with the new
    /// value, and `add` appends to what `set` wrote.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A weighted destination of a route, resolved to a cluster index of the compiled config.
#[derive(Debug, Clone)]
pub struct Target {
    pub cluster: usize,
    pub weight: u32,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum Action {
    Forward { targets: Vec<Target>, total_weight: u64, rewrite: Option<Rewrite> },
    Redirect { uri: Option<String>, authority: Option<String>, scheme: Option<String>, port: Option<u16>, status: u16 },
    Direct { status: u16, body: Bytes },
}

/// A compiled path/authority rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    uri: Option<String>,
    uri_regex: Option<(Regex, String)>,
    pub authority: Option<HeaderValue>,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub name: String,
    conditions: Vec<Conditions>,
    pub action: Action,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// Fault injection (VirtualService `fault`).
    pub faults: Option<Faults>,
    /// Clusters a share of the requests is copied to.
    pub mirrors: Vec<MirrorTarget>,
    /// Timeouts and retries.
    pub resilience: RouteResilience,
}

impl CompiledRoute {
    /// Whether any match block holds (a route without blocks matches everything).
    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        self.conditions.is_empty() || self.conditions.iter().any(|c| c.matches(req))
    }

    /// The prefix of the first match block that matched by uri prefix, for prefix rewrites.
    fn matched_prefix(&self, req: &RequestParts<'_>) -> Option<&str> {
        self.conditions.iter().filter(|c| c.matches(req)).find_map(|c| match &c.uri {
            Some(Matcher::Prefix(p)) => Some(p.as_str()),
            _ => None,
        })
    }

    /// The path after this route's rewrite (Istio: a prefix match has its prefix replaced, otherwise
    /// the whole path is replaced), or `None` when the path is unchanged.
    pub fn rewritten_path(&self, req: &RequestParts<'_>) -> Option<String> {
        let Action::Forward { rewrite: Some(rewrite), .. } = &self.action else { return None };
        if let Some((regex, replacement)) = &rewrite.uri_regex {
            return Some(regex.replace_all(req.path, replacement.as_str()).into_owned());
        }
        let uri = rewrite.uri.as_ref()?;
        Some(match self.matched_prefix(req) {
            Some(prefix) => {
                let rest = req.path.get(prefix.len()..).unwrap_or_default();
                if uri.ends_with('/') && rest.starts_with('/') {
                    format!("{uri}{}", &rest[1..])
                } else {
                    format!("{uri}{rest}")
                }
            }
            None => uri.clone(),
        })
    }
}

/// Compiles one route; `cluster_index` resolves cluster names (checked to exist by `ProxyConfig::check`).
pub fn compile_route(route: &Route, cluster_index: impl Fn(&str) -> Option<usize>) -> Result<CompiledRoute, Error> {
    let fail = |message: String| Error::Config { origin: format!("route {}", route.name), message };
    let conditions = route.matches.iter().map(Conditions::compile).collect::<Result<Vec<_>, _>>().map_err(fail)?;
    let action = match &route.action {
        RouteAction::Forward { clusters, rewrite } => {
            let targets = clusters
                .iter()
                .map(|c| {
                    Ok(Target {
                        cluster: cluster_index(&c.cluster).ok_or_else(|| format!("unknown cluster {:?}", c.cluster))?,
                        weight: c.weight,
                        request_headers: HeaderEdits::compile(&c.request_headers)?,
                        response_headers: HeaderEdits::compile(&c.response_headers)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(fail)?;
            let total_weight = targets.iter().map(|t| u64::from(t.weight)).sum();
            let rewrite = rewrite
                .as_ref()
                .map(|r| -> Result<Rewrite, String> {
                    Ok(Rewrite {
                        uri: r.uri.clone(),
                        uri_regex: r
                            .uri_regex
                            .as_ref()
                            .map(|(p, s)| {
                                Regex::new(p).map(|re| (re, s.clone())).map_err(|e| format!("rewrite regex {p:?}: {e}"))
                            })
                            .transpose()?,
                        authority: r
                            .authority
                            .as_deref()
                            .map(HeaderValue::from_str)
                            .transpose()
                            .map_err(|_| "rewrite authority".to_owned())?,
                    })
                })
                .transpose()
                .map_err(fail)?;
            Action::Forward { targets, total_weight, rewrite }
        }
        RouteAction::Redirect { uri, authority, scheme, port, status } => Action::Redirect {
            uri: uri.clone(),
            authority: authority.clone(),
            scheme: scheme.clone(),
            port: *port,
            status: *status,
        },
        RouteAction::DirectResponse { status, body } => {
            Action::Direct { status: *status, body: Bytes::from(body.clone()) }
        }
    };
    let faults = route.fault.as_ref().map(Faults::compile).transpose().map_err(fail)?;
    let mirrors = route
        .mirrors
        .iter()
        .map(|m| {
            let cluster = cluster_index(&m.cluster).ok_or_else(|| format!("unknown mirror cluster {:?}", m.cluster))?;
            Ok(MirrorTarget { cluster, share: share_of(m.percentage) })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(fail)?;
    Ok(CompiledRoute {
        name: route.name.clone(),
        conditions,
        action,
        request_headers: HeaderEdits::compile(&route.request_headers).map_err(fail)?,
        response_headers: HeaderEdits::compile(&route.response_headers).map_err(fail)?,
        faults,
        mirrors,
        resilience: RouteResilience::compile(route).map_err(fail)?,
    })
}

/// The first route that matches `req`.
pub fn select<'r>(routes: &'r [CompiledRoute], req: &RequestParts<'_>) -> Option<&'r CompiledRoute> {
    routes.iter().find(|r| r.matches(req))
}

/// Picks a target by relative weight given a uniform random number in `0..total_weight`.
/// With all weights zero (refused by config checks) the first target is used.
pub fn pick_weighted(targets: &[Target], total_weight: u64, random: u64) -> Option<&Target> {
    if total_weight == 0 {
        return targets.first();
    }
    let mut point = random % total_weight;
    for target in targets {
        let weight = u64::from(target.weight);
        if point < weight {
            return Some(target);
        }
        point -= weight;
    }
    targets.last()
}

/// The `Location` of a redirect for `req`, built as Envoy builds it for Istio's `HTTPRedirect`:
///
/// - scheme: `scheme`, else the request's;
/// - host: `authority` as written (it may carry a port of its own), else the request's host with
///   the port its `Host` header named, which is dropped when `port` replaces it, or when the scheme
///   changes and the port was the old scheme's default (`http://a:80` to `https://a`);
/// - port: `port` when set (Istio's `port`; the control plane resolves `derivePort:
///   FROM_REQUEST_PORT` to the listener's port and `FROM_PROTOCOL_DEFAULT` to no port);
/// - path: `uri`, else the request's path; the request's query string follows unless `uri` has
///   one of its own.
pub fn redirect_location(
    req: &RequestParts<'_>,
    uri: Option<&str>,
    authority: Option<&str>,
    scheme: Option<&str>,
    port: Option<u16>,
) -> String {
    let new_scheme = scheme.unwrap_or(req.scheme);
    let host = match authority {
        Some(authority) => authority.to_owned(),
        None => {
            let host = bracketed(req.authority);
            let scheme_default = match req.scheme {
                "http" => Some(80),
                "https" => Some(443),
                _ => None,
            };
            let keep = |request_port: u16| {
                port.is_none() && !(new_scheme != req.scheme && Some(request_port) == scheme_default)
            };
            match request_port(req) {
                Some(request_port) if keep(request_port) => format!("{host}:{request_port}"),
                _ => host.into_owned(),
            }
        }
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let path = uri.unwrap_or(req.path);
    let slash = if path.starts_with('/') { "" } else { "/" };
    let query = match req.query {
        Some(q) if !path.contains('?') => format!("?{q}"),
        _ => String::new(),
    };
    format!("{new_scheme}://{host}{port}{slash}{path}{query}")
}

/// An IPv6 address as a URL host (`[::1]`); names and IPv4 addresses unchanged.
fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]").into() } else { host.into() }
}

/// The port the request's `Host` header names, when that header names the host routing used
/// (`req.authority`).
fn request_port(req: &RequestParts<'_>) -> Option<u16> {
    let value = req.headers.get(http::header::HOST)?.to_str().ok()?;
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            (ip, after.strip_prefix(':')?)
        }
        None => value.rsplit_once(':')?,
    };
    if !host.eq_ignore_ascii_case(req.authority) {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests;
