//! Gateway proxies: the listeners of the Gateways whose `selector` matches the proxy's labels (in any
//! namespace, Istio's default), with the VirtualServices bound to them.
//!
//! A VirtualService binds to a Gateway through `gateways:` (`namespace/name`, a short name meaning the
//! VirtualService's namespace), must be exported to the gateway proxy's namespace, and serves the hosts
//! where its own hosts intersect the server's (`namespace/host`: `./` the Gateway's namespace, `*/` or
//! no prefix any namespace). Unlike sidecars, gateways merge every VirtualService for a host: their rules
//! are concatenated in precedence order. HTTP, HTTP2 and GRPC servers are served; an HTTP server with
//! `tls.httpsRedirect` answers every request with a redirect to HTTPS.

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::FieldPath;
use trellis_api::istio::GatewaySpec;
use trellis_api::istio::gateway::Server;
use trellis_api::object::Object;
use trellis_api::proxy_config::{GatewayListener, HeaderOps, Protocol, Route, RouteAction, VirtualHost};

use super::clusters::Clusters;
use super::routes::{self, Scope};
use super::{Context, hosts, scope};
use crate::index::{Key, Kind};

/// Status of the redirect an HTTP server with `httpsRedirect` answers with.
pub const HTTPS_REDIRECT_STATUS: u16 = 301;

struct Listener {
    protocol: Protocol,
    /// `namespace/name` of the Gateway that first declared the port.
    owner: String,
    hosts: BTreeMap<String, VirtualHost>,
    /// (domain, VirtualService) pairs already merged, so a route is never added twice.
    merged: BTreeSet<(String, Key)>,
}

/// Builds the gateway listeners and the clusters their routes use.
pub fn build<'a>(cx: &mut Context<'a>, clusters: &mut Clusters<'a>) -> Vec<GatewayListener> {
    let proxy_ns = cx.proxy.namespace.clone();
    let mut gateways: Vec<(scope::Precedence, &'a Key, &'a GatewaySpec)> = cx
        .index
        .configs(Kind::Gateway)
        .filter_map(|(key, age, object)| match object {
            Object::Gateway(gw) => Some((scope::Precedence::new(key, age, &proxy_ns), key, &gw.spec)),
            _ => None,
        })
        .filter(|(_, _, spec)| spec.selector.as_ref().is_none_or(|s| scope::selects(s, &cx.proxy.labels)))
        .collect();
    gateways.sort_by(|a, b| a.0.cmp(&b.0));
    let mut listeners: BTreeMap<u16, Listener> = BTreeMap::new();
    for (_, key, spec) in gateways {
        let name = format!("{}/{}", key.namespace, key.name);
        for (i, server) in spec.servers.iter().flatten().enumerate() {
            let at = FieldPath::of("spec").key("servers").index(i);
            let Some(protocol) = server_protocol(cx, key, server, &at) else { continue };
            let Ok(port) = u16::try_from(server.port.number) else { continue };
            let listener = listeners.entry(port).or_insert_with(|| Listener {
                protocol,
                owner: name.clone(),
                hosts: BTreeMap::new(),
                merged: BTreeSet::new(),
            });
            if listener.protocol != protocol {
                let reason = format!(
                    "port {port} is already served as {:?} by Gateway {}; this server is ignored",
                    listener.protocol, listener.owner
                );
                cx.skip(key, at.key("port"), reason);
                continue;
            }
            if server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
                for host in &server.hosts {
                    let (_, host) = split_host(host, &key.namespace);
                    let redirected = vhost(listener, &host, port, protocol);
                    if redirected.routes.is_empty() {
                        redirected.routes.push(https_redirect(&name, i));
                    }
                }
                continue;
            }
            bind(cx, clusters, &name, server, listener, port);
        }
    }
    listeners
        .into_iter()
        .map(|(port, listener)| GatewayListener {
            port,
            protocol: listener.protocol,
            virtual_hosts: listener.hosts.into_values().filter(|v| !v.routes.is_empty()).collect(),
        })
        .collect()
}

/// Adds the routes of every VirtualService bound to the gateway `name` for the server's hosts.
fn bind<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    name: &str,
    server: &Server,
    listener: &mut Listener,
    port: u16,
) {
    let gateway_ns = name.split_once('/').map_or("", |(ns, _)| ns);
    let server_hosts: Vec<(Option<String>, String)> = server.hosts.iter().map(|h| split_host(h, gateway_ns)).collect();
    for vs in routes::virtual_services(cx, name) {
        let mut domains = BTreeSet::new();
        for vs_host in vs.hosts() {
            for (ns, server_host) in &server_hosts {
                if ns.as_deref().is_some_and(|ns| ns != &*vs.key.namespace) {
                    continue;
                }
                if let Some(domain) = hosts::intersect(server_host, &vs_host) {
                    domains.insert(domain);
                }
            }
        }
        if domains.is_empty() {
            continue;
        }
        let routes = routes::http(cx, clusters, vs, Scope { gateway: name, port });
        if routes.is_empty() {
            continue;
        }
        for domain in domains {
            if !listener.merged.insert((domain.clone(), vs.key.clone())) {
                continue;
            }
            let protocol = listener.protocol;
            vhost(listener, &domain, port, protocol).routes.extend(routes.iter().cloned());
        }
    }
}

fn vhost<'l>(listener: &'l mut Listener, domain: &str, port: u16, protocol: Protocol) -> &'l mut VirtualHost {
    listener.hosts.entry(domain.to_owned()).or_insert_with(|| VirtualHost {
        name: domain.to_owned(),
        port,
        protocol,
        domains: Vec::new(),
        addresses: Vec::new(),
        routes: Vec::new(),
        tcp: Vec::new(),
    })
}

/// A server host as (namespace the VirtualService must be in, if any; host).
fn split_host(host: &str, gateway_ns: &str) -> (Option<String>, String) {
    match host.split_once('/') {
        Some((".", h)) => (Some(gateway_ns.to_owned()), h.to_ascii_lowercase()),
        Some(("*", h)) => (None, h.to_ascii_lowercase()),
        Some((ns, h)) => (Some(ns.to_owned()), h.to_ascii_lowercase()),
        None => (None, host.to_ascii_lowercase()),
    }
}

/// The protocol a server is served with; `None`, with a reason, for servers gateways cannot serve yet.
fn server_protocol(cx: &mut Context<'_>, key: &Key, server: &Server, at: &FieldPath) -> Option<Protocol> {
    let protocol = match server.port.protocol.to_ascii_uppercase().as_str() {
        "HTTP" => Protocol::Http,
        "HTTP2" => Protocol::Http2,
        "GRPC" | "GRPC-WEB" => Protocol::Grpc,
        other => {
            let reason = format!(
                "{other} servers need TLS or opaque TCP on gateway listeners, which cannot be expressed yet; \
                 this server is ignored"
            );
            cx.skip(key, at.key("port").key("protocol"), reason);
            return None;
        }
    };
    Some(protocol)
}

fn https_redirect(gateway: &str, server: usize) -> Route {
    Route {
        name: format!("{gateway}#servers[{server}].tls.httpsRedirect"),
        matches: Vec::new(),
        action: RouteAction::Redirect {
            uri: None,
            authority: None,
            scheme: Some("https".to_owned()),
            port: None,
            status: HTTPS_REDIRECT_STATUS,
        },
        timeout: None,
        retries: None,
        fault: None,
        mirrors: Vec::new(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}
