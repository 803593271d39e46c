//! VirtualService rules into routes, for one virtual host (a port of a sidecar's service, or a gateway
//! listener).
//!
//! Rules keep their order (the first match wins). A `match` block that cannot apply to this proxy is
//! dropped at translate time, as Istio does: a `port` other than the host's, `sourceLabels` the proxy's
//! workload lacks, a `sourceNamespace` other than the proxy's, `gateways` that do not name the gateway
//! being built (or `mesh` for sidecars). A rule whose blocks are all dropped is left out.

use std::collections::BTreeMap;

use trellis_api::FieldPath;
use trellis_api::crosscheck::{MESH_GATEWAY, qualify_gateway};
use trellis_api::istio::VirtualServiceSpec;
use trellis_api::istio::common::StringMatch;
use trellis_api::istio::virtual_service::{
    HeaderOperations, Headers, HttpMatchRequest, HttpRoute, L4MatchAttributes, RedirectPortSelection, RouteDestination,
    TlsMatchAttributes,
};
use trellis_api::proxy_config::{HeaderOps, Route, RouteAction, RouteMatch, StringMatcher, WeightedCluster};

use super::clusters::{self, Clusters};
use super::{Context, hosts, scope};
use crate::index::{Age, Key};

mod actions;

pub use actions::{
    DEFAULT_MIRROR_PERCENT, DEFAULT_REDIRECT_STATUS, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_ON, default_retries,
};

/// Header prefix of JWT claim matches, which only gateways with request authentication can evaluate.
pub const CLAIM_HEADER_PREFIX: &str = "@request.auth.claims.";

/// A valid VirtualService as translate reads it.
#[derive(Debug, Clone, Copy)]
pub struct VirtualServiceRef<'a> {
    pub key: &'a Key,
    pub age: Age,
    pub spec: &'a VirtualServiceSpec,
}

impl VirtualServiceRef<'_> {
    /// Its hosts, qualified in its namespace.
    pub fn hosts(&self) -> Vec<String> {
        self.spec.hosts.iter().flatten().map(|h| hosts::qualify(h, &self.key.namespace)).collect()
    }

    /// The gateways its rules apply to by default, qualified (`mesh` when it names none).
    pub fn gateways(&self) -> Vec<String> {
        qualified_gateways(self.spec.gateways.as_deref(), &self.key.namespace)
            .unwrap_or_else(|| vec![MESH_GATEWAY.into()])
    }

    /// Whether any of its rules can apply to `gateway` (`namespace/name`, or `mesh`): its own gateways and
    /// those of its match blocks, as Istio attaches a VirtualService.
    pub fn attaches_to(&self, gateway: &str) -> bool {
        let ns = &self.key.namespace;
        let in_blocks = |list: Option<&Vec<String>>| {
            qualified_gateways(list.map(Vec::as_slice), ns).is_some_and(|l| l.iter().any(|g| g == gateway))
        };
        self.gateways().iter().any(|g| g == gateway)
            || self
                .spec
                .http
                .iter()
                .flatten()
                .flat_map(|r| r.r#match.iter().flatten())
                .any(|m| in_blocks(m.gateways.as_ref()))
            || self
                .spec
                .tcp
                .iter()
                .flatten()
                .flat_map(|r| r.r#match.iter().flatten())
                .any(|m| in_blocks(m.gateways.as_ref()))
            || self.spec.tls.iter().flatten().flat_map(|r| r.r#match.iter()).any(|m| in_blocks(m.gateways.as_ref()))
    }
}

fn qualified_gateways(list: Option<&[String]>, namespace: &str) -> Option<Vec<String>> {
    let list = list.filter(|l| !l.is_empty())?;
    Some(list.iter().map(|g| qualify_gateway(g, namespace)).collect())
}

/// Where routes are being built: the gateway (`namespace/name`, or `mesh` for sidecars) and the port.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'s> {
    pub gateway: &'s str,
    pub port: u16,
}

/// The HTTP routes of `vs` for a virtual host.
pub fn http<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    at_scope: Scope<'_>,
) -> Vec<Route> {
    let spec = FieldPath::of("spec");
    let mut routes = Vec::new();
    for (i, rule) in vs.spec.http.iter().flatten().enumerate() {
        let at = spec.key("http").index(i);
        if let Some(route) = http_route(cx, clusters, vs, (i, rule), &at, at_scope) {
            routes.push(route);
        }
    }
    routes
}

fn http_route<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    (index, rule): (usize, &HttpRoute),
    at: &FieldPath,
    at_scope: Scope<'_>,
) -> Option<Route> {
    let blocks = rule.r#match.as_deref().unwrap_or(&[]);
    let mut matches = Vec::new();
    for (m, block) in blocks.iter().enumerate() {
        if let Some(converted) = http_match(cx, vs, block, &at.key("match").index(m), at_scope) {
            matches.push(converted);
        }
    }
    if !blocks.is_empty() && matches.is_empty() {
        return None;
    }
    if blocks.is_empty() && !applies(cx, vs, None, None, None, at_scope) {
        return None;
    }
    let label = rule.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| index.to_string());
    let name = format!("{}/{}#{label}", vs.key.namespace, vs.key.name);
    let action = actions::action(cx, clusters, vs, rule, at, at_scope.port)?;
    let (request_headers, response_headers) = header_ops(rule.headers.as_ref());
    Some(Route {
        name,
        matches,
        action,
        timeout: super::policy::parse_duration(cx, vs.key, &at.key("timeout"), rule.timeout.as_deref()),
        retries: actions::retries(cx, vs.key, rule, at),
        fault: actions::fault(cx, vs.key, rule, at),
        mirrors: actions::mirrors(cx, clusters, vs, rule, at, at_scope.port),
        request_headers,
        response_headers,
    })
}

/// Whether a block's `gateways`, `sourceLabels` and `sourceNamespace` let it apply here.
fn applies(
    cx: &Context<'_>,
    vs: VirtualServiceRef<'_>,
    gateways: Option<&[String]>,
    labels: Option<&crate::index::Labels>,
    source_ns: Option<&str>,
    at_scope: Scope<'_>,
) -> bool {
    let bound = qualified_gateways(gateways, &vs.key.namespace).unwrap_or_else(|| vs.gateways());
    if !bound.iter().any(|g| g == at_scope.gateway) {
        return false;
    }
    if labels.is_some_and(|l| !scope::selects(l, &cx.proxy.labels)) {
        return false;
    }
    source_ns.is_none_or(|ns| ns == cx.proxy.namespace)
}

fn http_match(
    cx: &mut Context<'_>,
    vs: VirtualServiceRef<'_>,
    block: &HttpMatchRequest,
    at: &FieldPath,
    at_scope: Scope<'_>,
) -> Option<RouteMatch> {
    let source_ns = block.source_namespace.as_deref();
    if !applies(cx, vs, block.gateways.as_deref(), block.source_labels.as_ref(), source_ns, at_scope) {
        return None;
    }
    if block.port.is_some_and(|p| p != u32::from(at_scope.port)) {
        return None;
    }
    let claims: Vec<&String> =
        block.headers.iter().flatten().map(|(k, _)| k).filter(|k| k.starts_with(CLAIM_HEADER_PREFIX)).collect();
    if let Some(claim) = claims.first() {
        let reason = format!("matching on JWT claims ({claim}) is not supported yet; this match block never matches");
        cx.skip(vs.key, at.key("headers").key(claim), reason);
        return None;
    }
    let headers = |map: Option<&BTreeMap<String, StringMatch>>| -> BTreeMap<String, StringMatcher> {
        map.into_iter()
            .flatten()
            .map(|(name, m)| (name.to_ascii_lowercase(), string_matcher(m).unwrap_or(StringMatcher::Present)))
            .collect()
    };
    Some(RouteMatch {
        uri: block.uri.as_ref().and_then(string_matcher),
        method: block.method.as_ref().and_then(string_matcher),
        authority: block.authority.as_ref().and_then(string_matcher),
        scheme: block.scheme.as_ref().and_then(string_matcher),
        headers: headers(block.headers.as_ref()),
        without_headers: headers(block.without_headers.as_ref()),
        query_params: block
            .query_params
            .iter()
            .flatten()
            .map(|(name, m)| (name.clone(), string_matcher(m).unwrap_or(StringMatcher::Present)))
            .collect(),
        port: None,
        source_labels: BTreeMap::new(),
        ignore_uri_case: block.ignore_uri_case.unwrap_or(false),
    })
}

/// A string match as the proxy's matcher; `None` when it sets nothing.
fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    if let Some(exact) = &m.exact {
        Some(StringMatcher::Exact(exact.clone()))
    } else if let Some(prefix) = &m.prefix {
        Some(StringMatcher::Prefix(prefix.clone()))
    } else {
        m.regex.clone().map(StringMatcher::Regex)
    }
}

/// A header operations block as the proxy's.
pub(crate) fn header_operations(ops: Option<&HeaderOperations>) -> HeaderOps {
    let Some(ops) = ops else { return HeaderOps::default() };
    HeaderOps {
        set: ops.set.clone().unwrap_or_default(),
        add: ops.add.clone().unwrap_or_default(),
        remove: ops.remove.clone().unwrap_or_default(),
    }
}

/// Request and response header operations of a `headers` block.
pub(crate) fn header_ops(headers: Option<&Headers>) -> (HeaderOps, HeaderOps) {
    (
        header_operations(headers.and_then(|h| h.request.as_ref())),
        header_operations(headers.and_then(|h| h.response.as_ref())),
    )
}

/// The weighted clusters of a TCP rule that applies to this host, if one does (the first that does).
pub fn tcp<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    at_scope: Scope<'_>,
) -> Option<Vec<WeightedCluster>> {
    let spec = FieldPath::of("spec");
    for (i, rule) in vs.spec.tcp.iter().flatten().enumerate() {
        let at = spec.key("tcp").index(i);
        let blocks = rule.r#match.as_deref().unwrap_or(&[]);
        let applies_here = (blocks.is_empty() && applies(cx, vs, None, None, None, at_scope))
            || blocks.iter().enumerate().any(|(m, b)| l4_applies(cx, vs, b, &at.key("match").index(m), at_scope));
        if applies_here {
            return Some(weighted(cx, clusters, vs, rule.route.as_deref().unwrap_or(&[]), &at, at_scope.port));
        }
    }
    None
}

fn l4_applies(
    cx: &mut Context<'_>,
    vs: VirtualServiceRef<'_>,
    block: &L4MatchAttributes,
    at: &FieldPath,
    at_scope: Scope<'_>,
) -> bool {
    if !applies(
        cx,
        vs,
        block.gateways.as_deref(),
        block.source_labels.as_ref(),
        block.source_namespace.as_deref(),
        at_scope,
    ) {
        return false;
    }
    if block.port.is_some_and(|p| p != u32::from(at_scope.port)) {
        return false;
    }
    for (field, set) in
        [("destinationSubnets", block.destination_subnets.is_some()), ("sourceSubnet", block.source_subnet.is_some())]
    {
        if set {
            cx.skip(
                vs.key,
                at.key(field),
                format!("matching on {field} is not supported yet; this match block never matches"),
            );
            return false;
        }
    }
    true
}

/// The weighted clusters of the first TLS rule whose SNI hosts cover `hostname` on this port.
pub fn tls<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    hostname: &str,
    at_scope: Scope<'_>,
) -> Option<Vec<WeightedCluster>> {
    let spec = FieldPath::of("spec");
    for (i, rule) in vs.spec.tls.iter().flatten().enumerate() {
        let at = spec.key("tls").index(i);
        let hit = rule
            .r#match
            .iter()
            .enumerate()
            .any(|(m, b)| tls_applies(cx, vs, b, hostname, &at.key("match").index(m), at_scope));
        if hit {
            return Some(weighted(cx, clusters, vs, rule.route.as_deref().unwrap_or(&[]), &at, at_scope.port));
        }
    }
    None
}

fn tls_applies(
    cx: &mut Context<'_>,
    vs: VirtualServiceRef<'_>,
    block: &TlsMatchAttributes,
    hostname: &str,
    at: &FieldPath,
    at_scope: Scope<'_>,
) -> bool {
    if !applies(
        cx,
        vs,
        block.gateways.as_deref(),
        block.source_labels.as_ref(),
        block.source_namespace.as_deref(),
        at_scope,
    ) {
        return false;
    }
    if block.port.is_some_and(|p| p != u32::from(at_scope.port)) {
        return false;
    }
    if !block.sni_hosts.iter().any(|sni| hosts::intersect(sni, hostname).is_some()) {
        return false;
    }
    if block.destination_subnets.is_some() {
        cx.skip(
            vs.key,
            at.key("destinationSubnets"),
            "matching on destinationSubnets is not supported yet; this match block never matches",
        );
        return false;
    }
    true
}

/// Weighted clusters of a TCP or TLS rule (Istio: a single destination without weight takes it all).
fn weighted<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    destinations: &[RouteDestination],
    at: &FieldPath,
    listener_port: u16,
) -> Vec<WeightedCluster> {
    let single = destinations.len() == 1;
    destinations
        .iter()
        .enumerate()
        .map(|(d, target)| {
            let at = at.key("route").index(d).key("destination");
            WeightedCluster {
                cluster: clusters::destination(cx, clusters, &target.destination, vs.key, &at, listener_port),
                weight: weight(target.weight, single),
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }
        })
        .collect()
}

/// A destination's weight: as written, 100 for a lone destination without one, 0 otherwise.
pub(crate) fn weight(weight: Option<i32>, single: bool) -> u32 {
    match weight {
        Some(w) => u32::try_from(w).unwrap_or(0),
        None if single => 100,
        None => 0,
    }
}

/// The route Istio gives a service no VirtualService routes: everything to its cluster, with the default
/// retry policy.
pub fn default_route(cluster: String, hostname: &str) -> Route {
    Route {
        name: format!("default/{hostname}"),
        matches: Vec::new(),
        action: RouteAction::Forward {
            clusters: vec![WeightedCluster {
                cluster,
                weight: 100,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }],
            rewrite: None,
        },
        timeout: None,
        retries: Some(default_retries()),
        fault: None,
        mirrors: Vec::new(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

/// Redirect ports Istio derives from the scheme.
pub(crate) fn derived_port(selection: RedirectPortSelection, scheme: Option<&str>) -> Option<u16> {
    match (selection, scheme) {
        (RedirectPortSelection::FromProtocolDefault, Some("https")) => Some(443),
        (RedirectPortSelection::FromProtocolDefault, Some("http")) => Some(80),
        _ => None,
    }
}

/// The valid VirtualServices visible to the proxy's namespace that attach to `gateway` (`mesh` for
/// sidecars), in precedence order: the proxy's namespace first, then the oldest.
pub fn virtual_services<'a>(cx: &Context<'a>, gateway: &str) -> Vec<VirtualServiceRef<'a>> {
    let proxy_ns = cx.proxy.namespace.as_str();
    let mut found: Vec<(scope::Precedence, VirtualServiceRef<'a>)> = cx
        .index
        .configs(crate::index::Kind::VirtualService)
        .filter_map(|(key, age, object)| match object {
            trellis_api::object::Object::VirtualService(vs) => Some(VirtualServiceRef { key, age, spec: &vs.spec }),
            _ => None,
        })
        .filter(|vs| scope::exported(vs.spec.export_to.as_deref().unwrap_or(&[]), &vs.key.namespace, proxy_ns))
        .filter(|vs| vs.attaches_to(gateway))
        .map(|vs| (scope::Precedence::new(vs.key, vs.age, proxy_ns), vs))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, vs)| vs).collect()
}
