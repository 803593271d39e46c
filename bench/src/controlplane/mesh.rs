//! The mesh the control-plane bench serves: a folder of YAML (ServiceEntries with their WorkloadEntries,
//! one file per service, and a few VirtualServices), the proxies that connect (one workload of each
//! service), and which proxies a change should reach.
//!
//! Services are spread evenly over namespaces. Most are exported to their own namespace only
//! (`exportTo: ["."]`); every `shared_every`-th is exported mesh-wide (`"*"`), as shared platform
//! services are, so each proxy sees its own namespace's services and the shared ones. With
//! `export_all` every service is exported mesh-wide (Istio's default without `Sidecar` scoping: every
//! proxy sees everything). Each namespace has two VirtualServices: one on its first (shared) service,
//! visible everywhere, and one on its second (local) service, visible in the namespace.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context as _, Result};
use trellis_api::proxy_config::{Node, ProxyMode};
use trellis_api::push::Hello;

/// Port every service listens on and the workloads' port behind it.
pub const SERVICE_PORT: u16 = 80;
pub const WORKLOAD_PORT: u16 = 8080;
/// First address of the workloads (10.0.0.0/8, 64 addresses per service).
const FIRST_ADDRESS: u32 = 0x0A00_0000;
const ADDRESSES_PER_SERVICE: u32 = 64;
/// Timeout of the VirtualServices before any edit, in seconds.
const FIRST_TIMEOUT_SECONDS: u32 = 5;

/// The size and shape of the generated mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub namespaces: usize,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub proxies: usize,
    /// Every n-th service of a namespace is exported mesh-wide (the first one always is).
    pub shared_every: usize,
    /// Export every service mesh-wide.
    pub export_all: bool,
}

/// One ServiceEntry and its WorkloadEntries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub index: usize,
    pub namespace: String,
    pub name: String,
    pub shared: bool,
    /// How many WorkloadEntries it has now (changes add some).
    pub endpoints: usize,
}

impl Service {
    pub fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    pub fn file_name(&self) -> String {
        format!("{}/{}.yaml", self.namespace, self.name)
    }
}

/// A VirtualService on one service's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub service: usize,
    /// Its route timeout; an edit increments it.
    pub timeout_seconds: u32,
}

/// The generated mesh, as it is now.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub shape: Shape,
    pub services: Vec<Service>,
    pub virtual_services: Vec<VirtualService>,
}

/// Where a change goes, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    EndpointLocal,
    EndpointShared,
    VirtualServiceShared,
    VirtualServiceLocal,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 4] = [
        ChangeKind::EndpointLocal,
        ChangeKind::EndpointShared,
        ChangeKind::VirtualServiceShared,
        ChangeKind::VirtualServiceLocal,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::EndpointLocal => "endpoint added (namespace-local service)",
            ChangeKind::EndpointShared => "endpoint added (mesh-wide service)",
            ChangeKind::VirtualServiceShared => "VirtualService edited (mesh-wide host)",
            ChangeKind::VirtualServiceLocal => "VirtualService edited (namespace-local host)",
        }
    }

    pub fn is_endpoint(self) -> bool {
        matches!(self, ChangeKind::EndpointLocal | ChangeKind::EndpointShared)
    }
}

/// One change written to the folder: the file it rewrote and the proxies that should see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    pub file: String,
    pub text: String,
    pub expected: Vec<usize>,
}

impl Mesh {
    pub fn new(shape: Shape) -> Self {
        let per_namespace = shape.services.div_ceil(shape.namespaces.max(1));
        let services = (0..shape.services)
            .map(|index| {
                let (ns, within) = (index / per_namespace, index % per_namespace);
                Service {
                    index,
                    namespace: format!("ns-{ns:02}"),
                    name: format!("svc-{index:04}"),
                    shared: shape.export_all || within % shape.shared_every.max(1) == 0,
                    endpoints: shape.endpoints_per_service,
                }
            })
            .collect();
        let virtual_services = (0..shape.namespaces)
            .flat_map(|ns| [ns * per_namespace, ns * per_namespace + 1])
            .filter(|&s| s < shape.services)
            .map(|service| VirtualService { service, timeout_seconds: FIRST_TIMEOUT_SECONDS })
            .collect();
        Self { shape, services, virtual_services }
    }

    /// Writes every file under `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        for service in &self.services {
            write_file(dir, &service.file_name(), &service_yaml(service))?;
        }
        for vs in &self.virtual_services {
            let service = &self.services[vs.service];
            write_file(dir, &vs_file_name(service), &vs_yaml(service, vs))?;
        }
        Ok(())
    }

    /// The service proxy `proxy` is a workload of (its first WorkloadEntry).
    pub fn service_of(&self, proxy: usize) -> &Service {
        &self.services[proxy % self.services.len()]
    }

    /// The hello of proxy `proxy`: the node of the first workload of its service.
    pub fn hello(&self, proxy: usize) -> Hello {
        let service = self.service_of(proxy);
        let workload = proxy / self.services.len();
        Hello {
            node: Node {
                id: format!("{}-{workload:02}.{}", service.name, service.namespace),
                namespace: service.namespace.clone(),
                service_account: service.name.clone(),
                identity: String::new(),
                labels: [("app".to_owned(), service.name.clone())].into(),
            },
            mode: ProxyMode::Sidecar,
            proxy_version: "bench".to_owned(),
            ips: vec![IpAddr::V4(address(service.index, workload))],
        }
    }

    /// The proxies that see `service` (its host is exported to their namespace).
    pub fn seeing(&self, service: &Service) -> Vec<usize> {
        (0..self.shape.proxies)
            .filter(|&p| service.shared || self.service_of(p).namespace == service.namespace)
            .collect()
    }

    /// The `round`-th change of `kind`, applied to the model; the caller writes its file.
    pub fn change(&mut self, kind: ChangeKind, round: usize) -> Change {
        let namespaces = self.shape.namespaces.max(1);
        let per_namespace = self.services.len().div_ceil(namespaces);
        let ns = round % namespaces;
        match kind {
            ChangeKind::EndpointLocal | ChangeKind::EndpointShared => {
                let want_shared = kind == ChangeKind::EndpointShared;
                // A service of that namespace without a VirtualService, local or shared as asked.
                let index = (ns * per_namespace + 2..(ns + 1) * per_namespace)
                    .chain(ns * per_namespace..ns * per_namespace + 2)
                    .filter(|&s| s < self.services.len())
                    .find(|&s| self.services[s].shared == want_shared)
                    .or_else(|| (0..self.services.len()).find(|&s| self.services[s].shared == want_shared))
                    .unwrap_or(0);
                self.services[index].endpoints += 1;
                let service = &self.services[index];
                Change { kind, file: service.file_name(), text: service_yaml(service), expected: self.seeing(service) }
            }
            ChangeKind::VirtualServiceShared | ChangeKind::VirtualServiceLocal => {
                let slot =
                    (ns * 2 + usize::from(kind == ChangeKind::VirtualServiceLocal)) % self.virtual_services.len();
                self.virtual_services[slot].timeout_seconds += 1;
                let vs = self.virtual_services[slot].clone();
                let service = &self.services[vs.service];
                Change {
                    kind,
                    file: vs_file_name(service),
                    text: vs_yaml(service, &vs),
                    expected: self.seeing(service),
                }
            }
        }
    }
}

/// Address of workload `workload` of service `service`.
pub fn address(service: usize, workload: usize) -> Ipv4Addr {
    let offset = u32::try_from(service).unwrap_or(u32::MAX / ADDRESSES_PER_SERVICE) * ADDRESSES_PER_SERVICE
        + u32::try_from(workload % ADDRESSES_PER_SERVICE as usize).unwrap_or(0)
        + 1;
    Ipv4Addr::from(FIRST_ADDRESS + offset)
}

fn export_to(shared: bool) -> &'static str {
    if shared { "\"*\"" } else { "\".\"" }
}

/// The ServiceEntry of `service` and its WorkloadEntries, as one YAML file.
pub fn service_yaml(service: &Service) -> String {
    let (name, ns) = (&service.name, &service.namespace);
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  exportTo: [{export}]\n  \
         ports: [{{number: {SERVICE_PORT}, name: http, protocol: HTTP, targetPort: {WORKLOAD_PORT}}}]\n  \
         workloadSelector: {{labels: {{app: {name}}}}}\n",
        host = service.host(),
        export = export_to(service.shared),
    );
    for workload in 0..service.endpoints {
        let _ = write!(
            yaml,
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}-{workload:02}, \
             namespace: {ns}}}\nspec: {{address: {address}, labels: {{app: {name}}}, serviceAccount: {name}}}\n",
            address = address(service.index, workload),
        );
    }
    yaml
}

fn vs_file_name(service: &Service) -> String {
    format!("{}/vs-{}.yaml", service.namespace, service.name)
}

/// A VirtualService routing `service`'s host with a timeout and retries.
pub fn vs_yaml(service: &Service, vs: &VirtualService) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         hosts: [{host}]\n  exportTo: [{export}]\n  http:\n  - timeout: {timeout}s\n    retries: {{attempts: 2, \
         perTryTimeout: 1s}}\n    route: [{{destination: {{host: {host}, port: {{number: {SERVICE_PORT}}}}}}}]\n",
        name = service.name,
        ns = service.namespace,
        host = service.host(),
        export = export_to(service.shared),
        timeout = vs.timeout_seconds,
    )
}

/// Writes `text` to `dir/name` atomically (a hidden temporary file renamed into place), so the folder
/// source never reads half a file.
pub fn write_file(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    let parent = path.parent().context("a file name has a folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).context("a file name")?;
    let temporary = parent.join(format!(".{file_name}.tmp"));
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape { namespaces: 2, services: 10, endpoints_per_service: 3, proxies: 10, shared_every: 5, export_all: false }
    }

    #[test]
    fn a_namespace_local_service_is_seen_by_its_namespace_and_a_shared_one_by_everybody() {
        let mesh = Mesh::new(shape());
        assert!(mesh.services[0].shared && !mesh.services[1].shared && mesh.services[5].shared);
        assert_eq!(mesh.seeing(&mesh.services[1]), [0, 1, 2, 3, 4]);
        assert_eq!(mesh.seeing(&mesh.services[5]).len(), 10);
        let all = Mesh::new(Shape { export_all: true, ..shape() });
        assert_eq!(all.seeing(&all.services[1]).len(), 10);
    }

    #[test]
    fn an_endpoint_change_adds_one_workload_entry_to_a_service_without_a_virtual_service() {
        let mut mesh = Mesh::new(shape());
        let change = mesh.change(ChangeKind::EndpointLocal, 1);
        assert_eq!(change.file, "ns-01/svc-0007.yaml");
        assert_eq!(change.text.matches("kind: WorkloadEntry").count(), 4);
        assert_eq!(change.expected, [5, 6, 7, 8, 9]);
        let shared = mesh.change(ChangeKind::EndpointShared, 0);
        assert_eq!(shared.file, "ns-00/svc-0000.yaml", "ns-00 has no other shared service");
    }

    #[test]
    fn a_virtual_service_edit_moves_its_timeout() {
        let mut mesh = Mesh::new(shape());
        let change = mesh.change(ChangeKind::VirtualServiceLocal, 0);
        assert_eq!(change.file, "ns-00/vs-svc-0001.yaml");
        assert!(change.text.contains("timeout: 6s"), "{}", change.text);
        assert_eq!(change.expected, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn each_proxy_is_a_workload_of_one_service_at_its_address() {
        let mesh = Mesh::new(shape());
        let hello = mesh.hello(7);
        assert_eq!(hello.node.id, "svc-0007-00.ns-01");
        assert_eq!(hello.ips, [IpAddr::V4(address(7, 0))]);
        assert!(service_yaml(&mesh.services[7]).contains(&format!("address: {}", address(7, 0))));
    }
}
