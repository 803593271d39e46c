//! Following one request through one proxy's config, with the proxy's own code: the config is compiled
//! by `trellis_proxy::state::compile`, the virtual host found by the compiled host tables
//! (`HostTable::by_authority`), the route chosen by `trellis_proxy::route::select`, rewrites and redirects
//! computed by the compiled route. Nothing here matches a request by itself; it only reports what those
//! functions decided, and where in the policy the chosen route came from.

use std::collections::BTreeSet;
use std::net::IpAddr;

use trellis_api::istio::virtual_service::HttpRoute;
use trellis_api::object::Object;
use trellis_api::proxy_config::{
    Protocol, ProxyConfig, ProxyMode, Route, RouteAction, UnknownDestinations, VirtualHost,
};
use trellis_controlplane::Index;
use trellis_controlplane::index::{Key, Kind, Resource};
use trellis_proxy::metrics::Metrics;
use trellis_proxy::route::{Action, CompiledRoute, RequestParts, Target, compile_route, redirect_location, select};
use trellis_proxy::state::{Compiled, HostTable, VhostState, compile};

use super::model::{
    Destination, Explanation, LocalResponse, MatchedBy, Origin, Outcome, ProxyView, RequestView, RouteView,
    VirtualHostView,
};
use super::request::Request;

/// Prefix of the names translate gives Istio's default routes (`default/<host>`).
const DEFAULT_ROUTE_PREFIX: &str = "default/";
/// Label translate gives the route of a Gateway server's HTTPS redirect (`ns/gateway#servers[i].tls.httpsRedirect`).
const HTTPS_REDIRECT_SUFFIX: &str = "].tls.httpsRedirect";

/// Explains what the proxy holding `config` does with `request`. `index`, when the config was translated
/// locally, lets routes be traced back to their VirtualService rule. Fails only when the proxy itself
/// would refuse the config.
pub fn explain(config: ProxyConfig, request: &Request, index: Option<&Index>) -> Result<Explanation, String> {
    let compiled = compile(config, None, &Metrics::new()).map_err(|e| format!("the proxy refuses this config: {e}"))?;
    let config = compiled.config.as_ref();
    let mut out = Explanation {
        request: request_view(request),
        proxy: ProxyView {
            id: config.node.id.clone(),
            mode: config.mode,
            namespace: config.node.namespace.clone(),
            identity: config.node.identity.clone(),
            labels: config.node.labels.clone(),
            config_version: config.version.clone(),
        },
        outcome: Outcome::NoVirtualHost,
        local_response: None,
        listener: None,
        listeners: Vec::new(),
        virtual_host: None,
        routes_tried: Vec::new(),
        route: None,
        tcp: Vec::new(),
        clusters: Vec::new(),
        authorization: None,
        skipped: Vec::new(),
    };
    let (table, vhost_configs): (&HostTable, &[VirtualHost]) = match config.mode {
        ProxyMode::Sidecar => (&compiled.outbound, &config.outbound.virtual_hosts),
        ProxyMode::Gateway => {
            out.listener = Some(request.port);
            let listener = config.gateway_listeners.iter().find(|l| l.port == request.port);
            match (compiled.gateway.get(&request.port), listener) {
                (Some(table), Some(listener)) => (table, &listener.virtual_hosts),
                _ => {
                    out.outcome = Outcome::NoListener;
                    out.listeners = config.gateway_listeners.iter().map(|l| l.port).collect();
                    return Ok(out);
                }
            }
        }
    };
    let Some(vhost) = table.by_authority(&request.host, request.port) else {
        (out.outcome, out.local_response) = match (config.mode, config.outbound.unknown_destinations) {
            (ProxyMode::Sidecar, UnknownDestinations::Passthrough) => (Outcome::Passthrough, None),
            (ProxyMode::Sidecar, UnknownDestinations::Refuse) => {
                (Outcome::Refused, Some(local(502, "destination not in the mesh registry")))
            }
            (ProxyMode::Gateway, _) => (Outcome::NoVirtualHost, Some(local(404, "no virtual host for this authority"))),
        };
        return Ok(out);
    };
    let position = table.vhosts().iter().position(|v| std::ptr::eq(v, vhost));
    let vhost_config = position.and_then(|i| vhost_configs.get(i)).ok_or("virtual host not found in the config")?;
    out.virtual_host = Some(VirtualHostView {
        name: vhost.name.clone(),
        port: vhost.port,
        protocol: vhost.protocol,
        matched_by: matched_by(&request.host, vhost_config),
    });
    let opaque = matches!(vhost.protocol, Protocol::Tcp | Protocol::Tls) || request.is_tls();
    if config.mode == ProxyMode::Sidecar && opaque {
        out.outcome = Outcome::Tcp;
        out.tcp = destinations(&compiled, &vhost.tcp, vhost.tcp_total_weight, &vhost_config.tcp);
        out.clusters = clusters_of(&compiled, out.tcp.iter().map(|d| d.cluster.as_str()));
        return Ok(out);
    }
    route(&compiled, vhost, vhost_config, request, index, &mut out)?;
    Ok(out)
}

/// Runs the proxy's route selection on the virtual host and records what the chosen route does.
fn route(
    compiled: &Compiled,
    vhost: &VhostState,
    vhost_config: &VirtualHost,
    request: &Request,
    index: Option<&Index>,
    out: &mut Explanation,
) -> Result<(), String> {
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: request.query.as_deref(),
        authority: &request.host,
        scheme: &request.scheme,
        headers: &request.headers,
        port: vhost.port,
        source_labels: compiled.node_labels(),
    };
    let Some(chosen) = select(&vhost.routes, &parts) else {
        out.outcome = Outcome::NoRoute;
        out.local_response = Some(local(404, "no route matched"));
        out.routes_tried = vhost.routes.iter().map(|r| r.name.clone()).collect();
        return Ok(());
    };
    let at = vhost.routes.iter().position(|r| std::ptr::eq(r, chosen));
    let config = at.and_then(|i| vhost_config.routes.get(i)).ok_or("route not found in the config")?;
    let matched_block = matched_block(compiled, config, &parts)?;
    let mut view = RouteView {
        name: chosen.name.clone(),
        origin: origin(&chosen.name, index),
        matched_block,
        matched: matched_block.and_then(|b| config.matches.get(b).cloned()),
        blocks: config.matches.len(),
        destinations: Vec::new(),
        rewritten_path: None,
        rewritten_authority: None,
        redirect: None,
        direct_body: None,
        timeout: config.timeout.map(trellis_api::duration::format),
        retries: config.retries.clone(),
        fault: config.fault.clone(),
        mirrors: config.mirrors.clone(),
        request_headers: config.request_headers.clone(),
        response_headers: config.response_headers.clone(),
    };
    out.outcome = Outcome::Routed;
    match (&chosen.action, &config.action) {
        (Action::Forward { targets, total_weight, .. }, RouteAction::Forward { clusters, rewrite }) => {
            view.destinations = destinations(compiled, targets, *total_weight, clusters);
            view.rewritten_path = chosen.rewritten_path(&parts);
            view.rewritten_authority = rewrite.as_ref().and_then(|r| r.authority.clone());
        }
        (Action::Redirect { uri, authority, scheme, port, status }, _) => {
            let location = redirect_location(&parts, uri.as_deref(), authority.as_deref(), scheme.as_deref(), *port);
            view.redirect = Some(location);
            out.local_response = Some(local(*status, "redirect"));
            view.drop_upstream_settings();
        }
        (Action::Direct { status, body }, _) => {
            view.direct_body = Some(String::from_utf8_lossy(body).into_owned());
            out.local_response = Some(local(*status, "direct response"));
            view.drop_upstream_settings();
        }
        (Action::Forward { .. }, _) => {
            return Err(format!("route {} compiled differently from its config", chosen.name));
        }
    }
    let names =
        view.destinations.iter().map(|d| d.cluster.as_str()).chain(view.mirrors.iter().map(|m| m.cluster.as_str()));
    out.clusters = clusters_of(compiled, names);
    out.route = Some(view);
    Ok(())
}

/// Which match block of `route` holds for the request, asked of the proxy's matcher one block at a time.
fn matched_block(compiled: &Compiled, route: &Route, parts: &RequestParts<'_>) -> Result<Option<usize>, String> {
    let cluster_index = |name: &str| compiled.clusters.iter().position(|c| c.config.name == name);
    for (i, block) in route.matches.iter().enumerate() {
        let single = Route { matches: vec![block.clone()], ..route.clone() };
        let compiled_block: CompiledRoute = compile_route(&single, cluster_index).map_err(|e| e.to_string())?;
        if compiled_block.matches(parts) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// The weighted destinations of compiled targets, with their share and the header edits of their config.
fn destinations(
    compiled: &Compiled,
    targets: &[Target],
    total_weight: u64,
    configs: &[trellis_api::proxy_config::WeightedCluster],
) -> Vec<Destination> {
    targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            // The proxy sends everything to the first target when all weights are zero.
            let percent = match total_weight {
                0 if i == 0 => 100.0,
                0 => 0.0,
                total => f64::from(target.weight) * 100.0 / total as f64,
            };
            let config = configs.get(i);
            Destination {
                cluster: compiled.cluster(target.cluster).config.name.clone(),
                weight: target.weight,
                percent,
                request_headers: config.map(|c| c.request_headers.clone()).unwrap_or_default(),
                response_headers: config.map(|c| c.response_headers.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// The clusters named, once each, in order, as the proxy holds them.
fn clusters_of<'n>(
    compiled: &Compiled,
    names: impl Iterator<Item = &'n str>,
) -> Vec<trellis_api::proxy_config::Cluster> {
    let mut seen = BTreeSet::new();
    names
        .filter(|name| seen.insert(*name))
        .filter_map(|name| compiled.clusters.iter().find(|c| c.config.name == name))
        .map(|c| c.config.clone())
        .collect()
}

/// How `host` names the virtual host the proxy's lookup returned (for the reader; the lookup is done).
fn matched_by(host: &str, vhost: &VirtualHost) -> MatchedBy {
    let host = host.to_ascii_lowercase();
    if vhost.name.eq_ignore_ascii_case(&host) {
        return MatchedBy::Name;
    }
    if let Some(domain) = vhost.domains.iter().find(|d| d.eq_ignore_ascii_case(&host)) {
        return MatchedBy::Domain(domain.clone());
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && vhost.addresses.iter().any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == ip))
    {
        return MatchedBy::Address(ip.to_string());
    }
    let wildcard = vhost
        .domains
        .iter()
        .chain(std::iter::once(&vhost.name))
        .filter(|d| d.strip_prefix('*').is_some_and(|suffix| host.ends_with(&suffix.to_ascii_lowercase())))
        .max_by_key(|d| d.len());
    match wildcard {
        Some(domain) => MatchedBy::Wildcard(domain.clone()),
        None => MatchedBy::Domain(host),
    }
}

/// Where the route named `name` comes from. Translate names routes `namespace/virtualservice#label`
/// (the rule's name, else its index), `default/<host>` for Istio's default route, and
/// `namespace/gateway#servers[i].tls.httpsRedirect` for a Gateway's HTTPS redirect.
pub fn origin(name: &str, index: Option<&Index>) -> Origin {
    let Some((object, label)) = name.split_once('#') else {
        return match name.strip_prefix(DEFAULT_ROUTE_PREFIX) {
            Some(host) => Origin::Default { host: host.to_owned() },
            None => Origin::Unknown,
        };
    };
    let Some((namespace, object_name)) = object.split_once('/') else { return Origin::Unknown };
    let rules = index.and_then(|index| virtual_service_rules(index, namespace, object_name));
    if rules.is_none()
        && let Some(server) = label.strip_prefix("servers[").and_then(|s| s.strip_suffix(HTTPS_REDIRECT_SUFFIX))
        && let Ok(server) = server.parse()
    {
        return Origin::HttpsRedirect { namespace: namespace.to_owned(), name: object_name.to_owned(), server };
    }
    // A named rule carries its name; an unnamed one its index.
    let by_name = rules.and_then(|rules| rules.iter().position(|r| r.name.as_deref() == Some(label)));
    let (rule, rule_name) = match (by_name, label.parse::<usize>()) {
        (Some(i), _) => (Some(i), Some(label.to_owned())),
        (None, Ok(i)) => (Some(i), None),
        (None, Err(_)) => (None, Some(label.to_owned())),
    };
    Origin::VirtualService { namespace: namespace.to_owned(), name: object_name.to_owned(), rule, rule_name }
}

/// The HTTP rules of the valid VirtualService `namespace/name`, if the index has it.
fn virtual_service_rules<'i>(index: &'i Index, namespace: &str, name: &str) -> Option<&'i [HttpRoute]> {
    let entry = index.get(&Key::new(Kind::VirtualService, namespace, name))?;
    match &entry.resource {
        Resource::Config(config) => match config.valid()? {
            Object::VirtualService(vs) => Some(vs.spec.http.as_deref().unwrap_or(&[])),
            _ => None,
        },
        _ => None,
    }
}

fn local(status: u16, reason: &str) -> LocalResponse {
    LocalResponse { status, reason: reason.to_owned() }
}

fn request_view(request: &Request) -> RequestView {
    RequestView {
        method: request.method.to_string(),
        url: request.url.clone(),
        host: request.host.clone(),
        port: request.port,
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    }
}
