//! Clusters: the endpoint set of a service port (or of one DestinationRule subset of it), with the
//! traffic policy the applicable rule gives it, and the resolution of route destinations to clusters.
//!
//! Names follow Istio: `outbound|<port>|<subset>|<host>`. A destination that does not resolve (a host
//! the proxy cannot see, a port the service lacks, a subset no rule defines) gets an empty cluster of
//! that name, so requests routed there fail with 503 as they do in Istio, while every other route works.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use trellis_api::FieldPath;
use trellis_api::istio::destination_rule::Subset;
use trellis_api::istio::virtual_service::Destination;
use trellis_api::proxy_config::{Cluster, Endpoint, InboundMtls, LoadBalancer, Protocol, UpstreamTls};

use super::policy::{self, Rule};
use super::{Context, hosts, scope, security};
use crate::index::{Key, Kind, Resolution, Service, ServicePort, TargetPort, Workload, WorkloadKind};

/// The Istio-style name of a cluster.
pub fn name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// The clusters of one translation, built once each, and the DestinationRule of each host.
///
/// Built clusters are kept as values ([`Clusters::into_vec`]), or, with a sink
/// ([`Clusters::handing_to`]), handed on the moment each is built and only their names kept: the
/// control plane encodes and shares each cluster as it comes, so a translation never holds all of
/// its clusters as values at once (~7 KB each with ten endpoints; 190 per sidecar outbound side in
/// the control-plane bench, computed for every namespace at every change).
#[derive(Default)]
pub struct Clusters<'a> {
    /// By name; `None` once handed to the sink.
    map: BTreeMap<String, Option<Cluster>>,
    rules: BTreeMap<String, Option<Rule<'a>>>,
    sink: Option<&'a mut dyn FnMut(Cluster)>,
}

impl std::fmt::Debug for Clusters<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters")
            .field("map", &self.map)
            .field("rules", &self.rules)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl<'a> Clusters<'a> {
    /// Clusters handed to `sink` as each is built (in the order routes first use them), not kept.
    pub fn handing_to(sink: &'a mut dyn FnMut(Cluster)) -> Self {
        Self { map: BTreeMap::new(), rules: BTreeMap::new(), sink: Some(sink) }
    }

    /// Every cluster kept, by name (none when they went to a sink).
    pub fn into_vec(self) -> Vec<Cluster> {
        self.map.into_values().flatten().collect()
    }

    /// Records `cluster` as built under `name`: kept, or handed to the sink.
    fn add(&mut self, name: String, cluster: Cluster) {
        match &mut self.sink {
            Some(sink) => {
                sink(cluster);
                self.map.insert(name, None);
            }
            None => {
                self.map.insert(name, Some(cluster));
            }
        }
    }

    /// The DestinationRule that applies to `service` for the proxy.
    pub fn rule(&mut self, cx: &Context<'a>, service: &Service) -> Option<Rule<'a>> {
        self.rules.entry(service.hostname.clone()).or_insert_with(|| policy::lookup(cx, service)).clone()
    }

    /// The cluster of `port` of `service`, or of one subset of it, built on first use.
    pub fn service_port(
        &mut self,
        cx: &mut Context<'a>,
        service: &Service,
        port: &ServicePort,
        subset: Option<(&Subset, &Key, usize)>,
    ) -> String {
        let subset_name = subset.map_or("", |(s, _, _)| s.name.as_str());
        let cluster_name = name(port.port, subset_name, &service.hostname);
        if self.map.contains_key(&cluster_name) {
            return cluster_name;
        }
        let rule = self.rule(cx, service);
        let settings = policy::cluster_policy(cx, rule.as_ref(), subset, port.port);
        let endpoints = endpoints(cx, service, port)
            .into_iter()
            .filter(|e| subset.is_none_or(|(s, _, _)| policy::subset_selects(s, &e.labels)))
            .collect();
        let cluster = Cluster {
            name: cluster_name.clone(),
            service: service.hostname.clone(),
            port: port.port,
            subset: subset_name.to_owned(),
            protocol: port.protocol,
            endpoints,
            load_balancer: settings.load_balancer,
            connection_pool: settings.connection_pool,
            outlier_detection: settings.outlier_detection,
            tls: settings.tls,
            retry_budget: settings.retry_budget,
        };
        self.add(cluster_name.clone(), cluster);
        cluster_name
    }

    /// Every cluster of `service`: each port, and each port of each subset of its DestinationRule.
    pub fn all_of(&mut self, cx: &mut Context<'a>, service: &Service) {
        let rule = self.rule(cx, service);
        for port in &service.ports {
            self.service_port(cx, service, port, None);
            for subset in rule.iter().flat_map(|r| r.subsets.iter().copied()) {
                self.service_port(cx, service, port, Some(subset));
            }
        }
    }

    /// An empty cluster for a destination that does not resolve: requests sent to it fail with 503.
    pub fn unresolved(&mut self, host: &str, port: u16, subset: &str) -> String {
        let cluster_name = name(port, subset, host);
        if !self.map.contains_key(&cluster_name) {
            let cluster = Cluster {
                name: cluster_name.clone(),
                service: host.to_owned(),
                port,
                subset: subset.to_owned(),
                protocol: Protocol::default(),
                endpoints: Vec::new(),
                load_balancer: LoadBalancer::default(),
                connection_pool: None,
                outlier_detection: None,
                tls: UpstreamTls::default(),
                retry_budget: None,
            };
            self.add(cluster_name.clone(), cluster);
        }
        cluster_name
    }
}

/// Why a service's traffic cannot be given a cluster, if it cannot: clusters hold IP endpoints only.
pub fn unrepresentable(service: &Service) -> Option<(FieldPath, String)> {
    let spec = FieldPath::of("spec");
    if service.hostname.starts_with('*') {
        let reason = format!(
            "wildcard host {} needs per-request DNS or the original destination, which clusters cannot express \
             yet; its traffic is handled as an unknown destination",
            service.hostname
        );
        return Some((spec.key("hosts"), reason));
    }
    let by_dns = || {
        format!(
            "host {} is resolved by DNS, which clusters cannot express yet; its traffic is handled as an unknown \
             destination",
            service.hostname
        )
    };
    match service.resolution {
        Resolution::Static => None,
        Resolution::Dns if service.external_name.is_some() => Some((spec.key("externalName"), by_dns())),
        Resolution::Dns if !service.endpoints.is_empty() && service.endpoints.iter().all(|e| e.ip().is_some()) => None,
        Resolution::Dns | Resolution::DynamicDns => Some((spec.key("resolution"), by_dns())),
        Resolution::Passthrough => Some((
            spec.key("resolution"),
            format!(
                "host {} has resolution NONE (forward to the original destination), which clusters cannot express \
                 yet; its traffic is handled as an unknown destination",
                service.hostname
            ),
        )),
    }
}

/// The cluster a route destination of the object `owner` (field `at`) resolves to. `listener_port` is the
/// port of the virtual host being built, used when the destination names no port and the service has
/// several.
pub fn destination<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    dest: &Destination,
    owner: &Key,
    at: &FieldPath,
    listener_port: u16,
) -> String {
    let host = hosts::qualify(&dest.host, &owner.namespace);
    let subset = dest.subset.as_deref().unwrap_or("");
    let requested = dest.port.as_ref().and_then(|p| p.number).and_then(|n| u16::try_from(n).ok());
    let fail = " requests routed to it fail with 503";
    let Some(service) = cx.service(&host) else {
        let ns = cx.proxy.namespace.clone();
        cx.skip(owner, at.key("host"), format!("host {host} is not a service visible in namespace {ns};{fail}"));
        return clusters.unresolved(&host, requested.unwrap_or(listener_port), subset);
    };
    if let Some((_, reason)) = unrepresentable(service) {
        cx.skip(owner, at.key("host"), format!("{reason};{fail}"));
        return clusters.unresolved(&host, requested.unwrap_or(listener_port), subset);
    }
    let port = match requested {
        Some(number) => service.port(number),
        None if service.ports.len() == 1 => service.ports.first(),
        None => service.port(listener_port),
    };
    let Some(port) = port else {
        let ports: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
        let wanted = requested.unwrap_or(listener_port);
        let reason = format!("service {host} has no port {wanted} (its ports: {});{fail}", ports.join(", "));
        cx.skip(owner, at.key("port"), reason);
        return clusters.unresolved(&host, wanted, subset);
    };
    if subset.is_empty() {
        return clusters.service_port(cx, service, port, None);
    }
    let rule = clusters.rule(cx, service);
    match rule.as_ref().and_then(|r| r.subset(subset)) {
        Some(found) => clusters.service_port(cx, service, port, Some(found)),
        None => {
            let reason = match &rule {
                Some(rule) => format!(
                    "subset {subset:?} of host {host} is not defined by DestinationRule {} (it defines: {});{fail}",
                    rule.names(),
                    if rule.subsets.is_empty() {
                        "none".to_owned()
                    } else {
                        rule.subsets.iter().map(|(s, _, _)| s.name.as_str()).collect::<Vec<_>>().join(", ")
                    }
                ),
                None => format!(
                    "subset {subset:?} of host {host} is not defined: no DestinationRule for that host applies in \
                     namespace {};{fail}",
                    cx.proxy.namespace
                ),
            };
            cx.skip(owner, at.key("subset"), reason);
            clusters.unresolved(&host, port.port, subset)
        }
    }
}

/// The port of `workload` that `port` of a service forwards to: a WorkloadEntry's override for the port's
/// name first, then the target port (a named target port among the workload's named ports).
pub(crate) fn workload_port(workload: &Workload, port: &ServicePort) -> Option<u16> {
    if let Some(p) = workload.ports.get(&port.name).filter(|_| !port.name.is_empty()) {
        return Some(*p);
    }
    match &port.target_port {
        TargetPort::Same => Some(port.port),
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => workload.ports.get(name).copied(),
    }
}

/// Every ready endpoint of `port` of `service`, sorted by address.
fn endpoints(cx: &mut Context<'_>, service: &Service, port: &ServicePort) -> Vec<Endpoint> {
    let ns = service.namespace();
    let mut out: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    // Auto mTLS talks plain text to a workload port whose PeerAuthentication is DISABLE, as Istio does.
    let any_disabled = security::any_disabled(cx);
    let mut add = |cx: &Context<'_>, ip: IpAddr, target: u16, workload: Option<&Workload>| {
        let meshed = workload.filter(|w| {
            w.meshed
                && !(any_disabled
                    && security::workload_mtls(cx, &w.namespace, &w.labels, target) == InboundMtls::Disable)
        });
        let endpoint = Endpoint {
            address: SocketAddr::new(ip, target),
            labels: workload.map(|w| w.labels.as_ref().clone()).unwrap_or_default(),
            identity: meshed.map(|w| cx.identity(&w.namespace, &w.service_account)).unwrap_or_default(),
            weight: workload.map_or(1, |w| w.weight.max(1)),
            meshed: meshed.is_some(),
        };
        out.entry(endpoint.address).or_insert(endpoint);
    };
    let mut workloads: Vec<&Workload> = Vec::new();
    if service.is_kubernetes() {
        for slice in cx.index.endpoint_slices(ns, &service.origin.name) {
            let Some((_, target)) = slice.ports.iter().find(|(name, _)| *name == port.name) else { continue };
            for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
                let pod = endpoint.pod.as_ref().and_then(|p| cx.index.workload(&Key::new(Kind::Pod, ns, p)));
                for ip in &endpoint.addresses {
                    add(cx, *ip, *target, pod);
                }
            }
        }
        // Kubernetes Services select WorkloadEntries by label too; pods come through EndpointSlices.
        if let Some(selector) = &service.selector {
            workloads.extend(
                cx.index
                    .workloads_in(ns)
                    .filter(|w| w.kind == WorkloadKind::WorkloadEntry && scope::selects(selector, &w.labels)),
            );
        }
    } else {
        if let Some(selector) = &service.selector {
            workloads.extend(cx.index.workloads_in(ns).filter(|w| scope::selects(selector, &w.labels)));
        }
        workloads.extend(service.endpoints.iter());
    }
    for workload in workloads.into_iter().filter(|w| w.ready) {
        let Some(target) = workload_port(workload, port) else {
            let key = Key::new(Kind::WorkloadEntry, &workload.namespace, &workload.name);
            let reason = format!(
                "has no port for port {} of {} (no named port {:?}); it gets no traffic on that port",
                port.port,
                service.hostname,
                match &port.target_port {
                    TargetPort::Name(n) => n.as_str(),
                    _ => port.name.as_str(),
                }
            );
            cx.skip(&key, FieldPath::of("spec").key("ports"), reason);
            continue;
        };
        match workload.ip() {
            Some(ip) => add(cx, ip, target, Some(workload)),
            None if workload.address.is_empty() => {}
            None => {
                let (key, at) = match workload.kind {
                    WorkloadKind::ServiceEntryEndpoint => {
                        (service.origin.clone(), FieldPath::of("spec").key("endpoints"))
                    }
                    kind => {
                        let kind = if kind == WorkloadKind::Pod { Kind::Pod } else { Kind::WorkloadEntry };
                        (Key::new(kind, &workload.namespace, &workload.name), FieldPath::of("spec").key("address"))
                    }
                };
                let reason = format!(
                    "endpoint address {:?} is a DNS name, which clusters cannot express yet; it gets no traffic",
                    workload.address
                );
                cx.skip(&key, at, reason);
            }
        }
    }
    out.into_values().collect()
}
