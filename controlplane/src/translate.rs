//! Translate: a pure function from (index, proxy identity) to the proxy's `ProxyConfig`.
//!
//! It holds every Istio semantic the proxy does not: which services and policies a proxy sees
//! (`exportTo`, the root namespace), which of several conflicting objects wins, how short host names
//! expand, which VirtualService routes a host and which DestinationRule shapes its clusters, and which
//! Gateways and routes a gateway proxy serves. Invalid objects, and the parts of valid ones that cannot
//! apply, are left out with a [`Skipped`] entry naming the object, the field and the reason; everything
//! else keeps working. The same index and identity always give byte-identical JSON.
//!
//! Modules by concern: `scope` (visibility and precedence), `hosts` (host names), `outbound` (sidecar
//! virtual hosts), `routes` (VirtualService rules into routes), `clusters` (endpoint sets), `policy`
//! (DestinationRule lookup and traffic policy), `gateway` (gateway listeners), `inbound`, `security` and
//! `ratelimit` (the workload's own ports, their security and their local rate limits), `sharing` (which sidecars get the same outbound side).
//!
//! A sidecar's config is two parts: [`sidecar_shared`] (outbound virtual hosts, clusters, telemetry),
//! which every sidecar with the same [`sharing::SharingKey`] gets, and [`sidecar_own`] (node and inbound
//! listeners). [`translate`] joins them; the control plane computes the shared part once per key.

use std::collections::BTreeMap;
use std::net::IpAddr;

use trellis_api::FieldPath;
use trellis_api::mesh::{AccessLogFormat, DEFAULT_TRUST_DOMAIN, MeshSpec, OutboundMode};
use trellis_api::proxy_config::{
    Cluster, InboundListener, Node, Outbound, ProxyConfig, ProxyMode, Telemetry, UnknownDestinations,
};

use crate::index::{Index, Key, Labels, Service, Workload};

mod clusters;
mod gateway;
pub mod hosts;
mod inbound;
mod outbound;
mod policy;
mod ratelimit;
mod routes;
pub mod scope;
mod security;
pub mod sharing;

pub use clusters::name as cluster_name;
pub use gateway::HTTPS_REDIRECT_STATUS;
pub use outbound::DEFAULT_HTTP_PORT;
pub use policy::{
    DEFAULT_BASE_EJECTION_TIME, DEFAULT_CONSECUTIVE_5XX_ERRORS, DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_OUTLIER_INTERVAL,
};
pub use routes::{
    CLAIM_HEADER_PREFIX, DEFAULT_MIRROR_PERCENT, DEFAULT_REDIRECT_STATUS, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_ON,
    default_retries,
};
pub use security::{DEFAULT_JWT_HEADER, DEFAULT_JWT_PARAM, DEFAULT_JWT_PREFIX};

/// Who a proxy serves: what translate needs to know about the proxy asking for its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Unique id of the proxy (pod name and namespace, or a local name).
    pub id: String,
    pub mode: ProxyMode,
    pub namespace: String,
    pub service_account: String,
    /// Labels of the workload (a gateway's labels select the Gateways it serves).
    pub labels: Labels,
    /// Addresses of the workload, through which its pod or WorkloadEntry (and so its named ports) is found.
    pub addresses: Vec<IpAddr>,
}

impl ProxyIdentity {
    /// The identity of the proxy beside the pod or WorkloadEntry under `key`, if the index has it.
    pub fn for_workload(index: &Index, key: &Key, mode: ProxyMode) -> Option<Self> {
        let workload = index.workload(key)?;
        Some(Self {
            id: format!("{}.{}", workload.name, workload.namespace),
            mode,
            namespace: workload.namespace.clone(),
            service_account: workload.service_account.clone(),
            labels: workload.labels.as_ref().clone(),
            addresses: workload.ip().into_iter().collect(),
        })
    }
}

/// Something translate left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    /// The object it is in.
    pub object: Key,
    /// The field, such as `spec.http[0].route[1].destination.subset`; the root for a whole object.
    pub path: FieldPath,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    /// `Kind namespace/name: field.path: reason`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.object)?;
        if !self.path.segments().is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.reason)
    }
}

/// The outcome of translating for one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub config: ProxyConfig,
    /// Everything left out, sorted and without duplicates.
    pub skipped: Vec<Skipped>,
}

/// Translates the index for one proxy.
pub fn translate(index: &Index, proxy: &ProxyIdentity) -> Translation {
    let (mut config, mut skipped) = match proxy.mode {
        ProxyMode::Sidecar => {
            let shared = sidecar_shared(index, proxy);
            let own = sidecar_own(index, proxy);
            let mut config = ProxyConfig::new(String::new(), own.node, proxy.mode);
            config.outbound = shared.outbound;
            config.inbound = own.inbound;
            config.clusters = shared.clusters;
            config.telemetry = shared.telemetry;
            let mut skipped = shared.skipped;
            skipped.extend(own.skipped);
            (config, skipped)
        }
        ProxyMode::Gateway => {
            let mut cx = Context::new(index, proxy, Parts::Both);
            cx.report_invalid();
            let mut clusters = clusters::Clusters::default();
            let mut config = ProxyConfig::new(String::new(), cx.node(), proxy.mode);
            config.gateway_listeners = gateway::build(&mut cx, &mut clusters);
            config.clusters = clusters.into_vec();
            config.telemetry = telemetry(cx.mesh);
            (config, cx.skipped)
        }
    };
    config.version = version_of(&config);
    skipped.sort();
    skipped.dedup();
    Translation { config, skipped }
}

/// The part of a sidecar's config that every sidecar with the same [`sharing::SharingKey`] gets.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedPart {
    pub outbound: Outbound,
    /// In name order.
    pub clusters: Vec<Cluster>,
    pub telemetry: Telemetry,
    /// What was left out (invalid objects included), sorted and without duplicates.
    pub skipped: Vec<Skipped>,
}

/// [`SharedPart`] but its clusters (which [`sidecar_shared_into`] hands out one by one).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSections {
    pub outbound: Outbound,
    pub telemetry: Telemetry,
    /// What was left out (invalid objects included), sorted and without duplicates.
    pub skipped: Vec<Skipped>,
}

/// The part of a sidecar's config that is its own.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnPart {
    pub node: Node,
    pub inbound: Vec<InboundListener>,
    /// What was left out, sorted and without duplicates.
    pub skipped: Vec<Skipped>,
}

/// A sidecar's outbound virtual hosts, their clusters and the telemetry settings. It reads only the
/// proxy's namespace and the labels [`sharing::outbound_label_keys`] names, so it is equal for every
/// sidecar with the same [`sharing::SharingKey`].
pub fn sidecar_shared(index: &Index, proxy: &ProxyIdentity) -> SharedPart {
    let mut clusters = Vec::new();
    let sections = sidecar_shared_into(index, proxy, &mut |cluster| clusters.push(cluster));
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    SharedPart { outbound: sections.outbound, clusters, telemetry: sections.telemetry, skipped: sections.skipped }
}

/// [`sidecar_shared`] with each cluster handed to `sink` as soon as it is built (each once, in no
/// particular order) instead of collected: a caller that keeps clusters in another form (the push's
/// encoded, shared ones) never holds all of them as values at once.
pub fn sidecar_shared_into(index: &Index, proxy: &ProxyIdentity, sink: &mut dyn FnMut(Cluster)) -> SharedSections {
    let mut cx = Context::new(index, proxy, Parts::Shared);
    cx.report_invalid();
    let mut clusters = clusters::Clusters::handing_to(sink);
    let outbound = outbound::build(&mut cx, &mut clusters);
    SharedSections { outbound, telemetry: telemetry(cx.mesh), skipped: sorted(std::mem::take(&mut cx.skipped)) }
}

/// A sidecar's node and inbound listeners (found through its own workload, by address).
pub fn sidecar_own(index: &Index, proxy: &ProxyIdentity) -> OwnPart {
    let mut cx = Context::new(index, proxy, Parts::Own);
    let inbound = inbound::build(&mut cx);
    OwnPart { node: cx.node(), inbound, skipped: sorted(std::mem::take(&mut cx.skipped)) }
}

fn sorted(mut skipped: Vec<Skipped>) -> Vec<Skipped> {
    skipped.sort();
    skipped.dedup();
    skipped
}

/// Which parts of a config a [`Context`] is made for, so it looks up only what they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parts {
    /// The outbound side: needs the services visible to the proxy.
    Shared,
    /// The node and inbound side: needs the proxy's own workload.
    Own,
    Both,
}

/// What every part of translate shares: the index, the proxy, the mesh settings, the registry as the
/// proxy sees it, and the list of what was left out.
pub(crate) struct Context<'a> {
    pub index: &'a Index,
    pub proxy: &'a ProxyIdentity,
    pub mesh: Option<&'a MeshSpec>,
    pub roots: Vec<String>,
    /// The service each host name means to this proxy.
    services: BTreeMap<&'a str, &'a Service>,
    /// The proxy's own pod or WorkloadEntry, found by address.
    pub own: Option<&'a Workload>,
    skipped: Vec<Skipped>,
}

impl<'a> Context<'a> {
    fn new(index: &'a Index, proxy: &'a ProxyIdentity, parts: Parts) -> Self {
        let mesh = index.mesh();
        let mut services: BTreeMap<&'a str, &'a Service> = BTreeMap::new();
        for service in index.services().filter(|_| parts != Parts::Own) {
            if !scope::exported(&service.export_to, service.namespace(), &proxy.namespace) {
                continue;
            }
            match services.get(service.hostname.as_str()) {
                Some(current) if service_rank(index, current, proxy) <= service_rank(index, service, proxy) => {}
                _ => {
                    services.insert(service.hostname.as_str(), service);
                }
            }
        }
        let own = match parts {
            Parts::Shared => None,
            Parts::Own | Parts::Both => {
                index.workloads_in(&proxy.namespace).find(|w| w.ip().is_some_and(|ip| proxy.addresses.contains(&ip)))
            }
        };
        Self { index, proxy, mesh, roots: scope::root_namespaces(mesh), services, own, skipped: Vec::new() }
    }

    /// The proxy's node.
    fn node(&self) -> Node {
        Node {
            id: self.proxy.id.clone(),
            namespace: self.proxy.namespace.clone(),
            service_account: self.proxy.service_account.clone(),
            identity: self.identity(&self.proxy.namespace, &self.proxy.service_account),
            labels: self.proxy.labels.clone(),
        }
    }

    /// Records that something was left out.
    pub fn skip(&mut self, object: &Key, path: FieldPath, reason: impl Into<String>) {
        self.skipped.push(Skipped { object: object.clone(), path, reason: reason.into() });
    }

    /// The service a fully qualified host name means to this proxy.
    pub fn service(&self, hostname: &str) -> Option<&'a Service> {
        self.services.get(hostname).copied()
    }

    /// Every service visible to the proxy, by host name.
    pub fn visible_services(&self) -> impl Iterator<Item = &'a Service> + use<'a> {
        self.services.values().copied().collect::<Vec<_>>().into_iter()
    }

    /// The SPIFFE identity of a service account.
    pub fn identity(&self, namespace: &str, service_account: &str) -> String {
        let trust_domain = self.mesh.map(|m| m.trust_domain.as_str()).filter(|t| !t.is_empty());
        format!("spiffe://{}/ns/{namespace}/sa/{service_account}", trust_domain.unwrap_or(DEFAULT_TRUST_DOMAIN))
    }

    /// Whether `namespace` is the root namespace (or its `istio-system` alias).
    pub fn is_root(&self, namespace: &str) -> bool {
        self.roots.iter().any(|r| r == namespace)
    }

    fn report_invalid(&mut self) {
        let invalid: Vec<Skipped> = self
            .index
            .invalid()
            .flat_map(|(key, config)| {
                config.errors.iter().map(move |issue| Skipped {
                    object: key.clone(),
                    path: issue.path.clone(),
                    reason: format!("invalid, the whole object is ignored: {}", issue.message),
                })
            })
            .collect();
        self.skipped.extend(invalid);
    }
}

/// Which of several services with one host name a proxy uses (Istio: the one in the proxy's namespace,
/// then a Kubernetes Service over a ServiceEntry, then the oldest).
fn service_rank(index: &Index, service: &Service, proxy: &ProxyIdentity) -> (bool, bool, crate::index::Age, Key) {
    (
        service.namespace() != proxy.namespace,
        !service.is_kubernetes(),
        index.age(&service.origin),
        service.origin.clone(),
    )
}

fn telemetry(mesh: Option<&MeshSpec>) -> Telemetry {
    let settings = mesh.map(|m| m.telemetry.clone()).unwrap_or_default();
    Telemetry {
        access_log: settings.access_log.enabled,
        access_log_json: settings.access_log.format == AccessLogFormat::Json,
        tracing_sampling_percent: settings.tracing.sampling_percent,
        otlp_endpoint: settings.tracing.otlp_endpoint.clone(),
        zipkin_endpoint: settings.tracing.zipkin_endpoint.clone(),
        istio_metric_names: settings.metrics.istio_compatible_names,
    }
}

/// What traffic to destinations outside the registry does, from the Mesh's `outboundTrafficPolicy`.
pub(crate) fn unknown_destinations(mesh: Option<&MeshSpec>) -> UnknownDestinations {
    match mesh.map(|m| m.outbound_traffic_policy.mode).unwrap_or_default() {
        OutboundMode::AllowAny => UnknownDestinations::Passthrough,
        OutboundMode::RegistryOnly => UnknownDestinations::Refuse,
    }
}

/// A version that changes exactly when the config does: FNV-1a of the config's JSON with an empty
/// version, in hexadecimal.
fn version_of(config: &ProxyConfig) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    let hash = bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
    format!("{hash:016x}")
}
