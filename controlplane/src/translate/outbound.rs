//! The sidecar's outbound side: one virtual host per port of every service visible to the proxy's
//! namespace, named the ways clients name it, with the routes of the VirtualService that wins the host or
//! Istio's default route; and virtual hosts for VirtualService hosts that are not services.
//!
//! One VirtualService routes a host for sidecars (Istio merges VirtualServices only on gateways): the one
//! in the proxy's namespace, else the oldest (istio/istio pull request 22868); the others are reported.
//! A VirtualService that gives no HTTP route for a port leaves that port Istio's default route.

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::FieldPath;
use trellis_api::crosscheck::MESH_GATEWAY;
use trellis_api::proxy_config::{HeaderOps, Outbound, Protocol, VirtualHost, WeightedCluster};

use super::clusters::{self, Clusters};
use super::routes::{self, Scope, VirtualServiceRef};
use super::{Context, hosts, scope, unknown_destinations};
use crate::index::{Service, ServicePort};

/// Port every VirtualService host that is not a service is served on, besides the HTTP ports of services.
pub const DEFAULT_HTTP_PORT: u16 = 80;

/// Builds the outbound virtual hosts and the clusters they use.
pub fn build<'a>(cx: &mut Context<'a>, clusters: &mut Clusters<'a>) -> Outbound {
    let routing = routes::virtual_services(cx, MESH_GATEWAY);
    let hosts_of: Vec<Vec<String>> = routing.iter().map(VirtualServiceRef::hosts).collect();
    let mut virtual_hosts = Vec::new();
    let mut http_ports = BTreeSet::from([DEFAULT_HTTP_PORT]);
    let mut service_hosts = BTreeSet::new();
    for service in cx.visible_services() {
        if let Some((at, reason)) = clusters::unrepresentable(service) {
            cx.skip(&service.origin, at, reason);
            continue;
        }
        service_hosts.insert(service.hostname.clone());
        clusters.all_of(cx, service);
        let claimants: Vec<usize> =
            (0..routing.len()).filter(|&i| hosts_of[i].iter().any(|h| hosts::matches(h, &service.hostname))).collect();
        if let Some((&winner, losers)) = claimants.split_first() {
            for &loser in losers {
                report_loser(cx, &routing, &hosts_of, winner, loser, &service.hostname);
            }
        }
        let chosen = claimants.first().map(|&i| routing[i]);
        for port in &service.ports {
            if is_http(port.protocol) {
                http_ports.insert(port.port);
            }
            virtual_hosts.push(service_host(cx, clusters, service, port, chosen));
        }
    }
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    for (i, vs) in routing.iter().enumerate() {
        for (h, host) in hosts_of[i].iter().enumerate() {
            if service_hosts.contains(host) {
                continue;
            }
            let at = FieldPath::of("spec").key("hosts").index(h);
            if host == "*" {
                cx.skip(vs.key, at, "the wildcard host * cannot be routed for sidecars (Istio refuses it for mesh)");
                continue;
            }
            if let Some(&first) = claimed.get(host) {
                report_loser(cx, &routing, &hosts_of, first, i, host);
                continue;
            }
            claimed.insert(host.clone(), i);
            for &port in &http_ports {
                let routes = routes::http(cx, clusters, *vs, Scope { gateway: MESH_GATEWAY, port });
                if !routes.is_empty() {
                    virtual_hosts.push(VirtualHost {
                        name: host.clone(),
                        port,
                        protocol: Protocol::Http,
                        domains: Vec::new(),
                        addresses: Vec::new(),
                        routes,
                        tcp: Vec::new(),
                    });
                }
            }
        }
    }
    Outbound { virtual_hosts, unknown_destinations: unknown_destinations(cx.mesh) }
}

fn is_http(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::Detect)
}

fn is_opaque(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Tcp | Protocol::Tls | Protocol::Detect)
}

fn report_loser(
    cx: &mut Context<'_>,
    routing: &[VirtualServiceRef<'_>],
    hosts_of: &[Vec<String>],
    winner: usize,
    loser: usize,
    host: &str,
) {
    let proxy_ns = cx.proxy.namespace.clone();
    let first = scope::Precedence::new(routing[winner].key, routing[winner].age, &proxy_ns);
    let second = scope::Precedence::new(routing[loser].key, routing[loser].age, &proxy_ns);
    let h = hosts_of[loser].iter().position(|pattern| hosts::matches(pattern, host)).unwrap_or(0);
    let winner_key = routing[winner].key;
    let reason = format!(
        "host {host} is routed by VirtualService {}/{} for namespace {proxy_ns}, which takes precedence because {}; \
         sidecars use one VirtualService per host, so this one is ignored for it",
        winner_key.namespace,
        winner_key.name,
        first.why_first(&second)
    );
    cx.skip(routing[loser].key, FieldPath::of("spec").key("hosts").index(h), reason);
}

fn service_host<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    service: &Service,
    port: &ServicePort,
    chosen: Option<VirtualServiceRef<'a>>,
) -> VirtualHost {
    let at_scope = Scope { gateway: MESH_GATEWAY, port: port.port };
    let default_cluster = clusters::name(port.port, "", &service.hostname);
    let mut routes = Vec::new();
    let mut tcp = Vec::new();
    if is_http(port.protocol) {
        if let Some(vs) = chosen {
            routes = routes::http(cx, clusters, vs, at_scope);
        }
        if routes.is_empty() {
            routes.push(routes::default_route(default_cluster.clone(), &service.hostname));
        }
    }
    if is_opaque(port.protocol) {
        let from_rules = chosen.and_then(|vs| match port.protocol {
            Protocol::Tls => routes::tls(cx, clusters, vs, &service.hostname, at_scope),
            _ => routes::tcp(cx, clusters, vs, at_scope),
        });
        tcp = from_rules.filter(|t| !t.is_empty()).unwrap_or_else(|| {
            vec![WeightedCluster {
                cluster: default_cluster,
                weight: 100,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }]
        });
    }
    VirtualHost {
        name: service.hostname.clone(),
        port: port.port,
        protocol: port.protocol,
        domains: hosts::client_names(&service.hostname, &cx.proxy.namespace),
        addresses: service.addresses.iter().map(ToString::to_string).collect(),
        routes,
        tcp,
    }
}
