//! The typed records the index holds: what sources hand in ([`Resource`]) and what the index derives from
//! them for translate ([`Service`], [`Workload`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use trellis_api::object::{Object, ObjectId};
use trellis_api::proxy_config::Protocol;
use trellis_api::{Issue, Severity};

/// Labels as Kubernetes writes them.
pub type Labels = BTreeMap<String, String>;

/// Endpoint label Istio's injector sets on workloads that run a proxy; auto mTLS sends mutual TLS only to
/// endpoints carrying it with [`TLS_MODE_ISTIO`].
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Value of [`TLS_MODE_LABEL`] for a workload with a proxy.
pub const TLS_MODE_ISTIO: &str = "istio";
/// Value of [`TLS_MODE_LABEL`] for a workload without one.
pub const TLS_MODE_DISABLED: &str = "disabled";
/// Service account of a workload that names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The kinds of object the index holds, in the order it stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Mesh,
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    ServiceEntry,
    WorkloadEntry,
    VirtualService,
    DestinationRule,
    Gateway,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    RateLimitPolicy,
}

impl Kind {
    /// Every kind, in storage order.
    pub const ALL: [Kind; 14] = [
        Kind::Mesh,
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::RateLimitPolicy,
    ];

    /// The Kubernetes `kind` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mesh => "Mesh",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::RateLimitPolicy => "RateLimitPolicy",
        }
    }

    /// Whether objects of this kind are Istio objects (or the Trellis kinds), kept as [`Config`]s.
    pub fn is_config(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Service | Kind::EndpointSlice | Kind::Pod)
    }

    /// The kind of that `kind` name, if the index holds it.
    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an object is in the index: kind, namespace (empty for cluster-scoped kinds) and name.
///
/// Its texts are shared: a key is kept in several maps (the index's objects, its workloads and
/// registry, the folder source's files and owners), and a clone costs two reference counts instead
/// of two allocations; keys of one namespace share its name ([`Index`](super::Index) interns it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl Key {
    pub fn new(kind: Kind, namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Self { kind, namespace: Arc::from(namespace.as_ref()), name: Arc::from(name.as_ref()) }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How old an object is, which decides precedence between conflicting objects (Istio: the oldest wins).
///
/// `created` is the creation time in Unix seconds when the source knows it (Kubernetes); `seq` counts
/// first insertions into the index, so objects from files rank in the order they were read. Objects
/// without a creation time rank before those with one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Age {
    pub created: Option<i64>,
    pub seq: u64,
}

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// Which port of the endpoints a service port forwards to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetPort {
    /// The service port's own number.
    Same,
    Number(u16),
    /// A named port of the workload (a container port name, or a key of a WorkloadEntry's `ports`).
    Name(String),
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty when the port has no name.
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

/// A Kubernetes Service as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeService {
    pub namespace: String,
    pub name: String,
    /// Cluster IPs; empty for a headless service.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalName` of an `ExternalName` service.
    pub external_name: Option<String>,
    pub ports: Vec<ServicePort>,
    /// Pod (and WorkloadEntry) labels that select the endpoints; `None` for a service without selector.
    pub selector: Option<Labels>,
    /// From the `networking.istio.io/exportTo` annotation; empty means every namespace.
    pub export_to: Vec<String>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    /// Name of the pod behind it, in the slice's namespace.
    pub pod: Option<String>,
}

/// A Kubernetes EndpointSlice: the ready addresses and ports of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    /// `(port name, port)`; the name is empty for an unnamed port.
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// An Istio (or Trellis `Mesh`) object, with the errors validation found in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One of the Istio kinds or `Mesh`.
    pub kind: Kind,
    pub id: ObjectId,
    /// `None` when the document did not decode into the kind's type at all.
    pub object: Option<Object>,
    /// Validation errors; an object with any is skipped by translate. Warnings are not kept.
    pub errors: Vec<Issue>,
}

impl Config {
    /// A config from `trellis_api::object::decode`'s outcome, keeping only errors; `None` when the
    /// document is not of an Istio kind or `Mesh`.
    pub fn from_decoded(decoded: trellis_api::object::Decoded) -> Option<Self> {
        let kind = Kind::parse(&decoded.id.kind).filter(|k| k.is_config())?;
        let errors = decoded.issues.into_vec().into_iter().filter(|i| i.severity == Severity::Error).collect();
        Some(Self { kind, id: decoded.id, object: decoded.object, errors })
    }

    /// The object, if it is valid.
    pub fn valid(&self) -> Option<&Object> {
        self.object.as_ref().filter(|_| self.errors.is_empty())
    }
}

/// What a source hands to the index.
///
/// Every kind is behind a pointer, so a resource is two words: the index keeps ten thousand of them
/// inline in its map (whose nodes keep room for eleven), where the largest kind held inline (a
/// [`Config`], 264 B) made every entry that large, a WorkloadEntry's pointer too.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Box<Namespace>),
    Service(Box<KubeService>),
    EndpointSlice(Box<EndpointSlice>),
    /// A pod, already turned into a workload.
    Pod(Box<Workload>),
    /// An Istio kind or the `Mesh`.
    Config(Box<Config>),
    /// A valid WorkloadEntry as the index keeps it: the workload it stands for, shared with the index's
    /// list of workloads. The typed object (its metadata, a second copy of its labels, its id) is not
    /// kept: translate reads only the workload, and ten thousand entries held whole were ~14 MB. An
    /// upsert of this form (a folder source handing back what the index held) is indexed as it is.
    WorkloadEntry(Arc<Workload>),
}

/// What kind of object a workload comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Pod,
    WorkloadEntry,
    /// An inline `endpoints` entry of a ServiceEntry.
    ServiceEntryEndpoint,
}

/// A running instance that services send traffic to: a pod, a WorkloadEntry, or a ServiceEntry endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    /// Pod or WorkloadEntry name; the owning ServiceEntry's name for inline endpoints.
    pub name: String,
    /// IP address, or a DNS name for endpoints resolved by DNS.
    pub address: String,
    /// Shared by every workload of the index with equal labels (the replicas of one service carry
    /// the same few labels, and a map costs a node of room for eleven entries).
    pub labels: Arc<Labels>,
    pub service_account: String,
    pub network: String,
    pub locality: String,
    /// Relative load-balancing weight (at least 1).
    pub weight: u32,
    /// Named ports: container ports of a pod, or a WorkloadEntry's port overrides by service port name.
    pub ports: BTreeMap<String, u16>,
    /// Whether a Trellis (or Istio) proxy fronts it, so mutual TLS and HTTP/2 between proxies apply.
    pub meshed: bool,
    /// Whether it may receive traffic (a pod that is Ready; WorkloadEntries always are).
    pub ready: bool,
}

impl Workload {
    /// The address as an IP, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

/// How a service's endpoints are found, after Istio's `resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The endpoints are known (Kubernetes endpoints, selected workloads, static ServiceEntry endpoints).
    Static,
    /// Traffic goes to the address the client connected to (ServiceEntry `NONE`).
    Passthrough,
    /// The proxy resolves the endpoints' names by DNS (`DNS`, `DNS_ROUND_ROBIN`, `ExternalName`).
    Dns,
    /// Each request's host is resolved by DNS (`DYNAMIC_DNS`).
    DynamicDns,
}

/// One entry of the service registry: a Kubernetes Service, or one host of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The Kubernetes Service or ServiceEntry it comes from.
    pub origin: Key,
    /// Fully qualified host name (or a `*.` wildcard host of a ServiceEntry).
    pub hostname: String,
    /// Virtual IPs clients connect to.
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    /// Labels of the workloads (pods and WorkloadEntries in its namespace) that back it.
    pub selector: Option<Labels>,
    /// Inline endpoints of a ServiceEntry.
    pub endpoints: Vec<Workload>,
    /// Namespaces it is visible to (`.`, `*`, `~` or names); empty means every namespace.
    pub export_to: Vec<String>,
    /// A ServiceEntry with `MESH_EXTERNAL` location (the default).
    pub mesh_external: bool,
    /// The DNS name an `ExternalName` service or DNS ServiceEntry resolves to, when one is known.
    pub external_name: Option<String>,
}

impl Service {
    /// The namespace the service is defined in.
    pub fn namespace(&self) -> &str {
        &self.origin.namespace
    }

    /// Whether it is a Kubernetes Service (which wins over a ServiceEntry for the same host).
    pub fn is_kubernetes(&self) -> bool {
        self.origin.kind == Kind::Service
    }

    /// The port with that number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}
