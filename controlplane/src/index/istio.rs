//! Istio's own registry kinds in the index: each host of a `ServiceEntry` becomes a [`Service`] (as Istio
//! makes one service per host), and a `WorkloadEntry` or an inline ServiceEntry endpoint a [`Workload`].

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_api::istio::service_entry::{Location, Protocol as EntryProtocol, Resolution as EntryResolution};
use trellis_api::istio::{ServiceEntrySpec, WorkloadEntrySpec};
use trellis_api::proxy_config::Protocol;

use super::{
    DEFAULT_SERVICE_ACCOUNT, Key, Resolution, Service, ServicePort, TLS_MODE_DISABLED, TLS_MODE_LABEL, TargetPort,
    Workload, WorkloadKind,
};

/// The protocol of a ServiceEntry (or Gateway) port as written in `protocol`; `None` for UDP, which Trellis
/// does not proxy. An absent or unknown protocol is sniffed, as Istio does.
pub fn entry_protocol(protocol: Option<&str>) -> Option<Protocol> {
    let Some(text) = protocol else { return Some(Protocol::Detect) };
    Some(match EntryProtocol::parse(text) {
        Some(EntryProtocol::Http | EntryProtocol::HttpProxy) => Protocol::Http,
        Some(EntryProtocol::Http2) => Protocol::Http2,
        Some(EntryProtocol::Grpc | EntryProtocol::GrpcWeb) => Protocol::Grpc,
        Some(EntryProtocol::Https | EntryProtocol::Tls) => Protocol::Tls,
        Some(EntryProtocol::Tcp | EntryProtocol::Mongo | EntryProtocol::Redis | EntryProtocol::Mysql) => Protocol::Tcp,
        Some(EntryProtocol::Udp) => return None,
        None => Protocol::Detect,
    })
}

/// One registry entry per host of a valid ServiceEntry.
pub fn registry_entries(key: &Key, spec: &ServiceEntrySpec) -> Vec<Service> {
    let resolution = match spec.resolution.unwrap_or(EntryResolution::None) {
        EntryResolution::None => Resolution::Passthrough,
        EntryResolution::Static => Resolution::Static,
        EntryResolution::Dns | EntryResolution::DnsRoundRobin => Resolution::Dns,
        EntryResolution::DynamicDns => Resolution::DynamicDns,
    };
    let mesh_external = spec.location.unwrap_or(Location::MeshExternal) == Location::MeshExternal;
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.number).ok()?;
            let target_port = match p.target_port.map(u16::try_from) {
                Some(Ok(n)) => TargetPort::Number(n),
                _ => TargetPort::Same,
            };
            Some(ServicePort {
                name: p.name.clone(),
                port,
                target_port,
                protocol: entry_protocol(p.protocol.as_deref())?,
            })
        })
        .collect();
    let addresses = spec.addresses.iter().flatten().filter_map(|a| a.parse().ok()).collect::<Vec<_>>();
    let endpoints: Vec<Workload> = spec
        .endpoints
        .iter()
        .flatten()
        .map(|endpoint| {
            let mut workload = workload_of(WorkloadKind::ServiceEntryEndpoint, key, endpoint);
            workload.meshed &= !mesh_external;
            workload
        })
        .collect();
    spec.hosts
        .iter()
        .map(|host| Service {
            origin: key.clone(),
            hostname: host.to_ascii_lowercase(),
            addresses: addresses.clone(),
            ports: ports.clone(),
            resolution,
            selector: spec.workload_selector.as_ref().map(|s| s.labels.clone().unwrap_or_default()),
            endpoints: endpoints.clone(),
            export_to: spec.export_to.clone().unwrap_or_default(),
            mesh_external,
            external_name: None,
        })
        .collect()
}

/// The workload a valid WorkloadEntry describes.
pub fn workload(key: &Key, spec: &WorkloadEntrySpec) -> Workload {
    workload_of(WorkloadKind::WorkloadEntry, key, spec)
}

/// A WorkloadEntry (or inline endpoint) as a workload. It counts as meshed unless it carries
/// `security.istio.io/tlsMode: disabled`: in Trellis's local mode every workload runs beside a proxy.
fn workload_of(kind: WorkloadKind, key: &Key, spec: &WorkloadEntrySpec) -> Workload {
    let labels = spec.labels.clone().unwrap_or_default();
    let meshed = labels.get(TLS_MODE_LABEL).is_none_or(|mode| mode != TLS_MODE_DISABLED);
    let ports: BTreeMap<String, u16> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|(name, port)| Some((name.clone(), u16::try_from(*port).ok()?)))
        .collect();
    Workload {
        kind,
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        address: spec.address.clone().unwrap_or_default(),
        labels: Arc::new(labels),
        service_account: spec
            .service_account
            .clone()
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned()),
        network: spec.network.clone().unwrap_or_default(),
        locality: spec.locality.clone().unwrap_or_default(),
        weight: spec.weight.filter(|w| *w > 0).unwrap_or(1),
        ports,
        meshed,
        ready: true,
    }
}
