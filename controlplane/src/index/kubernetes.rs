//! Kubernetes objects (Services, EndpointSlices, Pods, Namespaces) into index records.
//!
//! A Kubernetes source watches these kinds and hands each object here; the folder loader does the same
//! for such objects written in YAML. Nothing here does I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use trellis_api::crosscheck::CLUSTER_DOMAIN_SUFFIX;
use trellis_api::object::DEFAULT_NAMESPACE;
use trellis_api::proxy_config::Protocol;

use super::{
    DEFAULT_SERVICE_ACCOUNT, EndpointSlice, Key, Kind, KubeService, Namespace, Resolution, Service, ServicePort,
    SliceEndpoint, TLS_MODE_ISTIO, TLS_MODE_LABEL, TargetPort, Workload, WorkloadKind,
};
use crate::Error;

/// Service annotation Istio reads as the service's `exportTo` (comma-separated).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Pod label naming the network the pod is on.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Pod annotation an injector sets on pods that got a sidecar.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// `clusterIP` of a headless service.
pub const HEADLESS: &str = "None";

/// The creation time of an object in Unix seconds, as [`crate::index::Age`] wants it.
pub fn created(meta: &ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

struct Named<'a> {
    source: &'a str,
    kind: &'static str,
    namespace: String,
    name: String,
}

impl Named<'_> {
    fn of<'a>(source: &'a str, kind: &'static str, meta: &ObjectMeta, namespaced: bool) -> Result<Named<'a>, Error> {
        let namespace = if namespaced {
            meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
        } else {
            String::new()
        };
        let named = Named { source, kind, namespace, name: meta.name.clone().unwrap_or_default() };
        if named.name.is_empty() {
            return Err(named.error("metadata.name", "name is required"));
        }
        Ok(named)
    }

    fn error(&self, field: &str, message: impl Into<String>) -> Error {
        let object = if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        };
        Error::Kubernetes {
            source_name: self.source.to_owned(),
            object,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A Namespace and its labels.
pub fn namespace(source: &str, object: &core::Namespace) -> Result<Namespace, Error> {
    let named = Named::of(source, "Namespace", &object.metadata, false)?;
    Ok(Namespace { name: named.name, labels: object.metadata.labels.clone().unwrap_or_default() })
}

/// A Service. UDP and SCTP ports are left out (Trellis proxies TCP only).
pub fn service(source: &str, object: &core::Service) -> Result<KubeService, Error> {
    let named = Named::of(source, "Service", &object.metadata, true)?;
    let spec = object.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if port.protocol.as_deref().is_some_and(|p| !p.eq_ignore_ascii_case("TCP")) {
            continue;
        }
        let at = format!("spec.ports[{i}]");
        let number = u16::try_from(port.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| named.error(&format!("{at}.port"), format!("port {} is out of range 1-65535", port.port)))?;
        let target_port = match &port.target_port {
            None => TargetPort::Same,
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(u16::try_from(*n).ok().filter(|p| *p > 0).ok_or_else(|| {
                    named.error(&format!("{at}.targetPort"), format!("port {n} is out of range 1-65535"))
                })?)
            }
            Some(IntOrString::String(name)) => match name.parse::<u16>() {
                Ok(n) => TargetPort::Number(n),
                Err(_) => TargetPort::Name(name.clone()),
            },
        };
        ports.push(ServicePort {
            name: port.name.clone().unwrap_or_default(),
            port: number,
            target_port,
            protocol: Protocol::for_port(port.name.as_deref(), port.app_protocol.as_deref()),
        });
    }
    let ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    let mut cluster_ips = Vec::new();
    for ip in ips.iter().filter(|ip| !ip.is_empty() && ip.as_str() != HEADLESS) {
        cluster_ips.push(
            ip.parse::<IpAddr>().map_err(|_| named.error("spec.clusterIP", format!("{ip:?} is not an IP address")))?,
        );
    }
    let export_to = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let external_name = spec.external_name.clone().filter(|_| spec.type_.as_deref() == Some("ExternalName"));
    Ok(KubeService {
        namespace: named.namespace,
        name: named.name,
        cluster_ips,
        external_name,
        ports,
        selector: spec.selector.clone().filter(|s| !s.is_empty()),
        export_to,
    })
}

/// The registry entry of a Kubernetes Service: host `<name>.<namespace>.svc.cluster.local`.
pub fn registry_entry(service: &KubeService) -> Service {
    Service {
        origin: Key::new(Kind::Service, &service.namespace, &service.name),
        hostname: format!("{}.{}.{CLUSTER_DOMAIN_SUFFIX}", service.name, service.namespace),
        addresses: service.cluster_ips.clone(),
        ports: service.ports.clone(),
        resolution: if service.external_name.is_some() { Resolution::Dns } else { Resolution::Static },
        selector: service.selector.clone(),
        endpoints: Vec::new(),
        export_to: service.export_to.clone(),
        mesh_external: false,
        external_name: service.external_name.clone(),
    }
}

/// An EndpointSlice of IPv4 or IPv6 addresses (FQDN slices are left empty: their names are not IPs).
pub fn endpoint_slice(source: &str, object: &discovery::EndpointSlice) -> Result<EndpointSlice, Error> {
    let named = Named::of(source, "EndpointSlice", &object.metadata, true)?;
    let service = object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or_else(|| named.error("metadata.labels", format!("label {SERVICE_NAME_LABEL} is required")))?;
    let mut ports = Vec::new();
    for (i, port) in object.ports.iter().flatten().enumerate() {
        if port.protocol.as_deref().is_some_and(|p| !p.eq_ignore_ascii_case("TCP")) {
            continue;
        }
        let Some(number) = port.port else { continue };
        let number = u16::try_from(number).ok().filter(|p| *p > 0).ok_or_else(|| {
            named.error(&format!("ports[{i}].port"), format!("port {number} is out of range 1-65535"))
        })?;
        ports.push((port.name.clone().unwrap_or_default(), number));
    }
    let ip_slice = matches!(object.address_type.as_str(), "IPv4" | "IPv6");
    let endpoints = object
        .endpoints
        .iter()
        .filter(|_| ip_slice)
        .map(|endpoint| SliceEndpoint {
            addresses: endpoint.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            ready: endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            pod: endpoint.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone()),
        })
        .collect();
    Ok(EndpointSlice { namespace: named.namespace, name: named.name, service, ports, endpoints })
}

/// A pod as a workload. It counts as meshed when it carries Istio's `security.istio.io/tlsMode: istio`
/// label or an injector's status annotation, and as ready when its `Ready` condition is true.
pub fn pod(source: &str, object: &core::Pod) -> Result<Workload, Error> {
    let named = Named::of(source, "Pod", &object.metadata, true)?;
    let labels = object.metadata.labels.clone().unwrap_or_default();
    let annotations = object.metadata.annotations.clone().unwrap_or_default();
    let status = object.status.clone().unwrap_or_default();
    let spec = object.spec.clone().unwrap_or_default();
    let address = status.pod_ip.clone().unwrap_or_default();
    if !address.is_empty() && address.parse::<IpAddr>().is_err() {
        return Err(named.error("status.podIP", format!("{address:?} is not an IP address")));
    }
    let ready = !address.is_empty()
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status.eq_ignore_ascii_case("True"));
    let ports: BTreeMap<String, u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let meshed = labels.get(TLS_MODE_LABEL).is_some_and(|m| m == TLS_MODE_ISTIO)
        || annotations.contains_key(SIDECAR_STATUS_ANNOTATION);
    Ok(Workload {
        kind: WorkloadKind::Pod,
        network: labels.get(NETWORK_LABEL).cloned().unwrap_or_default(),
        namespace: named.namespace,
        name: named.name,
        address,
        service_account: spec
            .service_account_name
            .clone()
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned()),
        labels: std::sync::Arc::new(labels),
        locality: String::new(),
        weight: 1,
        ports,
        meshed,
        ready,
    })
}
