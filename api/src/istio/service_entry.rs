//! `ServiceEntry` (networking.istio.io): adds a service to the mesh's registry (an external API, a
//! VM-backed service), with its hosts, virtual addresses, ports, resolution and endpoints.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Labels;
use super::workload_entry::{
    EndpointContext, WorkloadEntrySpec, fqdn_problem, ip_or_cidr_problem, is_dns1123_label, max_chars,
    wildcard_domain_problem,
};
use crate::{FieldPath, Issues, Validate, status::Status};

/// Whether the service is part of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mutual TLS, and policy applies on the client side only.
    MeshExternal,
    /// Inside the mesh, such as VMs added by hand.
    MeshInternal,
}

/// How the proxy finds the addresses of the service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the client connected to (the default).
    None,
    /// Use the IPs of `endpoints` (or of the selected workloads).
    Static,
    /// Resolve hosts (or endpoint addresses) by DNS, balancing over every answer.
    Dns,
    /// Resolve by DNS and use the first answer for new connections.
    DnsRoundRobin,
    /// Resolve each request's host by DNS, for wildcard hosts.
    DynamicDns,
}

/// A port the service listens on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The port number.
    #[schemars(range(max = 4294967295u32))]
    #[x_kube(validation = kube::core::cel::Rule::new("0 < self && self <= 65535").message("port must be between 1-65535"))]
    pub number: u32,
    /// Protocol on the port: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, UDP...; sniffed when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub protocol: Option<String>,
    /// Name of the port, unique in the entry.
    #[schemars(length(max = 256))]
    pub name: String,
    /// Port on the endpoints that receives the traffic, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    #[x_kube(validation = kube::core::cel::Rule::new("0 < self && self <= 65535").message("port must be between 1-65535"))]
    pub target_port: Option<u32>,
}

/// Selects workloads (pods and WorkloadEntries) by label, as the endpoints of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabelSelector {
    /// Labels a workload must carry (all of them) to be selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = 256,
        "additionalProperties" = {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{"rule": "!self.contains(\"*\")", "message": "wildcard is not supported in selector"}]
        }
    ))]
    pub labels: Option<Labels>,
}

impl Validate for WorkloadLabelSelector {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at = path.key("labels");
        match &self.labels {
            None => issues.warn(&at, "workload selector has no labels, so it selects every workload of the namespace"),
            Some(labels) if labels.is_empty() => {
                issues.warn(&at, "workload selector has no labels, so it selects every workload of the namespace")
            }
            Some(labels) if labels.len() > 256 => issues.error(&at, "at most 256 labels can be set"),
            Some(_) => {}
        }
        for (key, value) in self.labels.iter().flatten() {
            let at_key = at.key(key);
            if key.is_empty() {
                issues.error(&at_key, "label key must not be empty");
            }
            if key.contains('*') || value.contains('*') {
                issues.error(&at_key, format!("wildcard is not supported in selector: {key:?}={value:?}"));
            }
            max_chars(issues, &at_key, Some(value), 63);
        }
    }
}

/// A port protocol as Istio parses it (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// HTTP/1.1.
    Http,
    /// HTTP proxy (CONNECT).
    HttpProxy,
    /// HTTP/2.
    Http2,
    /// HTTP over TLS.
    Https,
    /// Opaque TCP.
    Tcp,
    /// TLS with SNI.
    Tls,
    /// UDP.
    Udp,
    /// MongoDB.
    Mongo,
    /// Redis.
    Redis,
    /// MySQL.
    Mysql,
}

impl Protocol {
    /// Parses a protocol name the way Istio does, ignoring case; `None` for an unknown one.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// Whether the traffic is HTTP (1 or 2, including gRPC).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::HttpProxy | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Whether the traffic is TLS (so SNI tells hosts apart).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Whether the traffic is opaque TCP.
    pub fn is_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql)
    }
}

/// A service added to the mesh's registry: its hosts, addresses, ports and where its endpoints are.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    namespaced,
    status = "Status",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1").message("only one of WorkloadSelector or Endpoints can be set"))]
#[x_kube(validation = kube::core::cel::Rule::new("!((has(self.addresses) ? self.addresses : []).exists(k, k.contains(\"/\")) && !((has(self.resolution) ? self.resolution : \"NONE\") in [\"STATIC\", \"NONE\"]))").message("CIDR addresses are allowed only for NONE/STATIC resolution types"))]
#[x_kube(validation = kube::core::cel::Rule::new("((has(self.resolution) ? self.resolution : \"NONE\") == \"NONE\") ? !has(self.endpoints) : true").message("NONE mode cannot set endpoints"))]
#[x_kube(validation = kube::core::cel::Rule::new("((has(self.resolution) ? self.resolution : \"\") == \"DNS_ROUND_ROBIN\") ? ((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true").message("DNS_ROUND_ROBIN mode cannot have multiple endpoints"))]
pub struct ServiceEntrySpec {
    /// Host names of the service (DNS names, optionally with a `*.` wildcard prefix).
    #[schemars(length(min = 1, max = 256))]
    #[schemars(extend("items" = {
        "type": "string",
        "x-kubernetes-validations": [{"rule": "self != \"*\"", "message": "hostname cannot be wildcard"}]
    }))]
    pub hosts: Vec<String>,
    /// Virtual IPs (or CIDR blocks) of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[schemars(extend("items" = {"type": "string", "maxLength": 64}))]
    pub addresses: Option<Vec<String>>,
    /// Ports of the service; numbers and names are unique (a list-map keyed by name, as Istio's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = kube::core::cel::Rule::new("self.all(l1, self.exists_one(l2, l1.number == l2.number))").message("port number cannot be duplicated"))]
    pub ports: Option<Vec<ServicePort>>,
    /// Whether the service is inside or outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoint addresses are found; NONE when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// The endpoints of the service, each shaped like a WorkloadEntry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub endpoints: Option<Vec<WorkloadEntrySpec>>,
    /// Selects pods and WorkloadEntries as endpoints instead of listing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    /// Namespaces the service is visible to (`.` this one, `*` all, `~` none); all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
    /// Identities the endpoints' certificates must carry, checked on mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
}

impl Validate for ServiceEntrySpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let resolution = self.resolution.unwrap_or(Resolution::None);
        let endpoints = self.endpoints.as_deref().unwrap_or(&[]);

        self.workload_selector.validate(&path.key("workloadSelector"), issues);
        if self.workload_selector.is_some() && self.endpoints.is_some() {
            issues.error(path, "only one of workloadSelector or endpoints can be set");
        }

        self.validate_hosts(path, resolution, endpoints.is_empty(), issues);
        self.validate_addresses(path, resolution, issues);
        let service_ports = self.validate_ports(path, resolution, issues);

        match resolution {
            Resolution::None => {
                if self.endpoints.is_some() {
                    issues.error(&path.key("endpoints"), "resolution NONE cannot have endpoints");
                }
                if self.workload_selector.is_some() {
                    issues.warn(&path.key("workloadSelector"), "workloadSelector has no effect with resolution NONE");
                }
            }
            Resolution::Static if endpoints.is_empty() && self.workload_selector.is_none() => {
                issues.error(&path.key("endpoints"), "resolution STATIC requires endpoints or a workloadSelector");
            }
            Resolution::DnsRoundRobin if endpoints.len() > 1 => {
                issues.error(
                    &path.key("endpoints"),
                    format!("resolution DNS_ROUND_ROBIN allows at most 1 endpoint, not {}", endpoints.len()),
                );
            }
            _ => {}
        }

        if let Some(list) = &self.endpoints {
            let at = path.key("endpoints");
            if list.len() > 4096 {
                issues.error(&at, "at most 4096 endpoints can be set");
            }
            let context = match resolution {
                Resolution::Static => EndpointContext::Static { service_ports: &service_ports },
                Resolution::Dns | Resolution::DnsRoundRobin => EndpointContext::Dns { service_ports: &service_ports },
                Resolution::None | Resolution::DynamicDns => EndpointContext::Other { service_ports: &service_ports },
            };
            for (i, endpoint) in list.iter().enumerate() {
                endpoint.validate_in(context, &at.index(i), issues);
            }
        }

        validate_export_to(&path.key("exportTo"), self.export_to.as_deref(), issues);
    }
}

impl ServiceEntrySpec {
    fn validate_hosts(&self, path: &FieldPath, resolution: Resolution, no_endpoints: bool, issues: &mut Issues) {
        let at = path.key("hosts");
        if self.hosts.is_empty() {
            issues.error(&at, "at least one host is required");
        }
        if self.hosts.len() > 256 {
            issues.error(&at, format!("at most 256 hosts can be set, not {}", self.hosts.len()));
        }
        let dns_resolved = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        for (i, host) in self.hosts.iter().enumerate() {
            let at_host = at.index(i);
            if host == "*" {
                issues.error(&at_host, "host cannot be the wildcard \"*\"");
                continue;
            }
            if let Some(problem) = wildcard_domain_problem(host) {
                issues.error(&at_host, problem);
                continue;
            }
            if host.contains('*') && !host.starts_with("*.") {
                issues.warn(&at_host, format!("partial wildcard {host:?} is not allowed"));
            }
            if dns_resolved && no_endpoints && fqdn_problem(host).is_some() {
                issues.error(
                    &at_host,
                    format!("host {host:?} must be a DNS name without wildcards when DNS resolution has no endpoints"),
                );
            }
        }
    }

    fn validate_addresses(&self, path: &FieldPath, resolution: Resolution, issues: &mut Issues) {
        let Some(addresses) = &self.addresses else { return };
        let at = path.key("addresses");
        if addresses.len() > 256 {
            issues.error(&at, format!("at most 256 addresses can be set, not {}", addresses.len()));
        }
        for (i, address) in addresses.iter().enumerate() {
            let at_address = at.index(i);
            max_chars(issues, &at_address, Some(address), 64);
            if let Some(problem) = ip_or_cidr_problem(address) {
                issues.error(&at_address, problem);
            } else if address.contains('/') && !matches!(resolution, Resolution::None | Resolution::Static) {
                issues.error(
                    &at_address,
                    format!("CIDR address {address:?} is allowed only with resolution NONE or STATIC"),
                );
            }
        }
    }

    /// Checks the ports and returns the names of the entry's ports.
    fn validate_ports<'a>(
        &'a self,
        path: &FieldPath,
        resolution: Resolution,
        issues: &mut Issues,
    ) -> BTreeSet<&'a str> {
        let mut names = BTreeSet::new();
        let Some(ports) = &self.ports else { return names };
        let at = path.key("ports");
        if ports.len() > 256 {
            issues.error(&at, format!("at most 256 ports can be set, not {}", ports.len()));
        }
        let mut numbers = BTreeMap::new();
        for (i, port) in ports.iter().enumerate() {
            let at_port = at.index(i);
            if !(1..=65535).contains(&port.number) {
                issues.error(&at_port.key("number"), format!("port {} is out of range 1-65535", port.number));
            }
            if let Some(first) = numbers.insert(port.number, i) {
                issues.error(
                    &at_port.key("number"),
                    format!("port number {} is already used by ports[{first}]", port.number),
                );
            }
            if port.name.is_empty() {
                issues.error(&at_port.key("name"), "port name is required");
            } else if !is_dns1123_label(&port.name) {
                issues.error(&at_port.key("name"), format!("invalid port name {:?}", port.name));
            }
            max_chars(issues, &at_port.key("name"), Some(&port.name), 256);
            if !names.insert(port.name.as_str()) {
                issues.error(&at_port.key("name"), format!("port name {:?} is already defined", port.name));
            }
            if let Some(target) = port.target_port
                && !(1..=65535).contains(&target)
            {
                issues.error(&at_port.key("targetPort"), format!("port {target} is out of range 1-65535"));
            }
            max_chars(issues, &at_port.key("protocol"), port.protocol.as_deref(), 256);
            if let Some(protocol) = port.protocol.as_deref()
                && !protocol.is_empty()
                && Protocol::parse(protocol).is_none()
            {
                issues.warn(&at_port.key("protocol"), format!("unknown protocol {protocol:?}, treated as TCP"));
            }
        }

        // Several hosts behind one TCP port cannot be told apart, except when the destination address is kept.
        if resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = ports.iter().position(|port| {
                let protocol = port.protocol.as_deref().and_then(Protocol::parse);
                !protocol.is_some_and(|p| p.is_http() || p.is_tls())
            });
            if let Some(i) = opaque {
                issues.error(
                    &at.index(i).key("protocol"),
                    "several hosts need HTTP or TLS ports to tell them apart (or resolution NONE)",
                );
            }
        }
        if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            && self.addresses.as_ref().is_some_and(|a| !a.is_empty())
            && self.hosts.len() > 1
            && ports.iter().any(|p| p.protocol.as_deref().and_then(Protocol::parse).is_some_and(Protocol::is_tcp))
        {
            issues.warn(&path.key("hosts"), "several hosts with addresses and a TCP port cannot be told apart");
        }
        names
    }
}

/// Checks `exportTo` of a ServiceEntry: `.`, `*`, `~` or namespace names, no duplicates, and `*` or
/// `~` alone.
fn validate_export_to(path: &FieldPath, export_to: Option<&[String]>, issues: &mut Issues) {
    let Some(entries) = export_to else { return };
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        if !seen.insert(entry.as_str()) {
            issues.error(&at, format!("duplicate exportTo entry {entry:?}"));
            continue;
        }
        if !matches!(entry.as_str(), "." | "*" | "~") && !is_dns1123_label(entry) {
            issues.error(&at, format!("exportTo entry {entry:?} must be ., *, ~ or a namespace name"));
        }
    }
    if entries.len() > 1 {
        if seen.contains("*") {
            issues.error(path, "exportTo cannot mix public (*) with other entries");
        }
        if seen.contains("~") {
            issues.error(path, "exportTo cannot export to no one (~) and to someone");
        }
    }
}

#[cfg(test)]
mod tests;
