//! `WorkloadEntry` (networking.istio.io): a workload that is not a pod (a VM, a bare-metal host), with
//! its address, labels and ports, so services can select it like a pod. A `ServiceEntry`'s inline
//! `endpoints` have exactly this shape and reuse [`WorkloadEntrySpec`].
//!
//! This module also holds the name and address checks Istio applies across the networking kinds
//! (DNS labels and names, wildcard hosts, IP addresses, unix socket paths, Kubernetes labels).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::Labels;
use crate::{FieldPath, Issues, Validate, status::Status};

/// Prefix of an address that names a unix domain socket.
pub const UNIX_ADDRESS_PREFIX: &str = "unix://";

/// An endpoint of a service: an address (or only a network), labels, and port overrides.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    namespaced,
    status = "Status",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("has(self.address) || has(self.network)").message("Address is required"))]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.address) ? self.address : \"\").startsWith(\"unix://\") ? !has(self.ports) : true").message("UDS may not include ports"))]
pub struct WorkloadEntrySpec {
    /// IP address, DNS name, or `unix://` socket path of the workload; may be empty when `network` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = kube::core::cel::Rule::new("self.startsWith(\"unix://\") ? (self.substring(7, 8) == \"/\" || self.substring(7, 8) == \"@\") : true").message("UDS must be an absolute path or abstract socket"))]
    #[x_kube(validation = kube::core::cel::Rule::new("self.startsWith(\"unix://\") ? !self.endsWith(\"/\") : true").message("UDS may not be a dir"))]
    pub address: Option<String>,
    /// Labels of the workload, matched by service and policy selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 256))]
    pub labels: Option<Labels>,
    /// Locality as `region/zone/subzone`, used for locality-aware load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub locality: Option<String>,
    /// Network the workload is on, for cross-network routing through gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub network: Option<String>,
    /// Port overrides keyed by service port name: the workload's port for that service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new("self.all(key, size(key) < 63 && key.matches(\"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$\"))").message("port name must be valid"))]
    #[schemars(extend(
        "maxProperties" = 128,
        "additionalProperties" = {
            "type": "integer",
            "format": "uint32",
            "minimum": 0,
            "maximum": 4294967295u64,
            "x-kubernetes-validations": [{"rule": "0 < self && self <= 65535", "message": "port must be between 1-65535"}]
        }
    ))]
    pub ports: Option<BTreeMap<String, u32>>,
    /// Service account of the workload, for its mTLS identity; in the entry's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account: Option<String>,
    /// Relative load-balancing weight among the endpoints of a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub weight: Option<u32>,
}

/// Where a [`WorkloadEntrySpec`] sits, which decides the addresses and ports it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointContext<'a> {
    /// A `WorkloadEntry` object: an IP, a DNS name or a unix socket.
    WorkloadEntry,
    /// An endpoint of a `ServiceEntry` with `STATIC` resolution: an IP or a unix socket; its port names
    /// must be ports of the entry, and a unix socket needs the entry to have exactly one port.
    Static { service_ports: &'a BTreeSet<&'a str> },
    /// An endpoint of a `ServiceEntry` resolved by DNS: an IP or a DNS name; its port names must be
    /// ports of the entry.
    Dns { service_ports: &'a BTreeSet<&'a str> },
    /// An endpoint of a `ServiceEntry` of another resolution: any address; port names must be ports
    /// of the entry.
    Other { service_ports: &'a BTreeSet<&'a str> },
}

impl EndpointContext<'_> {
    fn service_ports(&self) -> Option<&BTreeSet<&str>> {
        match self {
            EndpointContext::WorkloadEntry => None,
            EndpointContext::Static { service_ports }
            | EndpointContext::Dns { service_ports }
            | EndpointContext::Other { service_ports } => Some(service_ports),
        }
    }
}

impl WorkloadEntrySpec {
    /// Istio's checks of a workload entry, or of a `ServiceEntry` endpoint, at `path`.
    pub fn validate_in(&self, context: EndpointContext<'_>, path: &FieldPath, issues: &mut Issues) {
        let address = self.address.as_deref().unwrap_or("");
        let network = self.network.as_deref().unwrap_or("");
        let at_address = path.key("address");
        if address.is_empty() {
            if network.is_empty() {
                issues.error(&at_address, "address is required when network is not set");
            } else {
                issues.warn(&at_address, format!("address is unset with network {network:?}"));
            }
        }
        max_chars(issues, &at_address, self.address.as_deref(), 256);
        if let Some(socket) = address.strip_prefix(UNIX_ADDRESS_PREFIX) {
            if let Some(problem) = unix_address_problem(socket) {
                issues.error(&at_address, problem);
            }
            if self.ports.is_some() {
                issues.error(&path.key("ports"), format!("unix endpoint {address:?} must not include ports"));
            }
            match context {
                EndpointContext::Dns { .. } => issues
                    .error(&at_address, format!("endpoint address {address:?} is not a valid FQDN or an IP address")),
                EndpointContext::Static { service_ports } if service_ports.len() != 1 => issues.error(
                    &at_address,
                    format!("unix endpoint {address:?} needs the service entry to have exactly 1 port"),
                ),
                _ => {}
            }
        } else if !address.is_empty() && !is_ip(address) {
            match context {
                EndpointContext::Static { .. } => {
                    issues.error(&at_address, format!("endpoint address {address:?} is not a valid IP address"))
                }
                _ if fqdn_problem(address).is_some() => issues
                    .error(&at_address, format!("endpoint address {address:?} is not a valid FQDN or an IP address")),
                _ => {}
            }
        }

        validate_labels(&path.key("labels"), self.labels.as_ref(), issues);
        if self.labels.as_ref().is_some_and(|labels| labels.len() > 256) {
            issues.error(&path.key("labels"), "at most 256 labels can be set");
        }
        max_chars(issues, &path.key("locality"), self.locality.as_deref(), 2048);
        max_chars(issues, &path.key("network"), self.network.as_deref(), 2048);
        max_chars(issues, &path.key("serviceAccount"), self.service_account.as_deref(), 253);

        if let Some(ports) = &self.ports {
            let at = path.key("ports");
            if ports.len() > 128 {
                issues.error(&at, "at most 128 ports can be set");
            }
            for (name, port) in ports {
                let at_port = at.key(name);
                if name.chars().count() >= 63 || !is_dns1123_label_chars(name) {
                    issues.error(&at_port, format!("invalid port name {name:?}"));
                }
                if !(1..=65535).contains(port) {
                    issues.error(&at_port, format!("port {port} is out of range 1-65535"));
                }
                if let Some(service_ports) = context.service_ports()
                    && !service_ports.contains(name.as_str())
                {
                    issues.error(&at_port, format!("endpoint port {name:?} is not a port of the service entry"));
                }
            }
        }
    }
}

impl Validate for WorkloadEntrySpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        self.validate_in(EndpointContext::WorkloadEntry, path, issues);
    }
}

/// Records an error when `value` is longer than `max` characters, as the schema's `maxLength` does.
pub(crate) fn max_chars(issues: &mut Issues, path: &FieldPath, value: Option<&str>, max: usize) {
    if let Some(value) = value {
        let count = value.chars().count();
        if count > max {
            issues.error(path, format!("must be at most {max} characters, not {count}"));
        }
    }
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, with no length limit.
fn is_dns1123_label_chars(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// A DNS label (RFC 1123) as Istio checks it: at most 63 letters, digits or inner dashes.
pub(crate) fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && is_dns1123_label_chars(value)
}

/// A DNS label that may also be `*`, or start with `*` or `*-` (Istio's wildcard first label).
fn is_wildcard_dns1123_label(value: &str) -> bool {
    if value.len() > 63 {
        return false;
    }
    if value == "*" {
        return true;
    }
    let rest = value.strip_prefix("*-").or_else(|| value.strip_prefix('*')).unwrap_or(value);
    is_dns1123_label_chars(rest)
}

fn dns_preconditions(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("domain name must not be empty".to_owned())
    } else if name.len() > 255 {
        Some(format!("domain name {name:?} is too long (max 255)"))
    } else {
        None
    }
}

/// Checks dot-separated labels; a trailing dot is allowed and the top-level label cannot be all digits.
fn dns_labels_problem(full: &str, domain: &str) -> Option<String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts.last().copied().unwrap_or("");
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("domain name {full:?} is invalid (top level domain {top:?} cannot be all-numeric)"));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return None;
        }
        if !is_dns1123_label(label) {
            return Some(format!("domain name {full:?} is invalid (label {label:?} invalid)"));
        }
    }
    None
}

/// Why `name` is not a fully-qualified domain name (no wildcards), or `None` when it is one.
pub(crate) fn fqdn_problem(name: &str) -> Option<String> {
    dns_preconditions(name).or_else(|| dns_labels_problem(name, name))
}

/// Why `name` is not a domain name whose first label may be a wildcard (`*`, `*.example.com`,
/// `*foo.example.com`), or `None` when it is one.
pub(crate) fn wildcard_domain_problem(name: &str) -> Option<String> {
    if let Some(problem) = dns_preconditions(name) {
        return Some(problem);
    }
    let (first, rest) = match name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Some(format!("domain name {name:?} is invalid (label {first:?} invalid)"));
    }
    rest.and_then(|rest| dns_labels_problem(name, rest))
}

/// Whether `value` is an IPv4 or IPv6 address.
pub(crate) fn is_ip(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
}

/// Whether `value` is an IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn ip_or_cidr_problem(value: &str) -> Option<String> {
    match value.split_once('/') {
        None if is_ip(value) => None,
        None => Some(format!("{value:?} is not a valid IP address")),
        Some((ip, bits)) => {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return Some(format!("{value:?} is not a valid CIDR block")),
            };
            let bits_ok = !bits.is_empty()
                && bits.bytes().all(|b| b.is_ascii_digit())
                && (bits == "0" || !bits.starts_with('0'))
                && bits.parse::<u32>().is_ok_and(|n| n <= max);
            (!bits_ok).then(|| format!("{value:?} is not a valid CIDR block"))
        }
    }
}

/// Why a unix socket path (after `unix://`) is not usable: it must be an abstract socket (`@name`) or
/// an absolute path to a file.
pub(crate) fn unix_address_problem(socket: &str) -> Option<String> {
    if socket.is_empty() {
        Some("unix address must not be empty".to_owned())
    } else if socket.starts_with('@') {
        None
    } else if !socket.starts_with('/') {
        Some(format!("unix address {socket:?} must be an absolute path or an abstract socket (@name)"))
    } else if socket.ends_with('/') {
        Some(format!("unix address {socket:?} must be a file, not a directory"))
    } else {
        None
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: a Kubernetes qualified name, with no length limit.
fn is_qualified_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Checks labels as Istio does for workloads: keys are `[dns-prefix/]name` (prefix at most 253
/// characters, name at most 63), values are empty or qualified names.
pub(crate) fn validate_labels(path: &FieldPath, labels: Option<&Labels>, issues: &mut Issues) {
    for (key, value) in labels.into_iter().flatten() {
        let at = path.key(key);
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key.as_str()),
        };
        let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns1123_label_chars));
        if !prefix_ok || !is_qualified_name(name) || name.len() > 63 {
            issues.error(&at, format!("invalid label key {key:?}"));
        }
        if !value.is_empty() && !is_qualified_name(value) {
            issues.error(&at, format!("invalid label value {value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> WorkloadEntrySpec {
        serde_json::from_value(value).expect("valid WorkloadEntry spec")
    }

    fn issues_of(spec: &WorkloadEntrySpec) -> Vec<(String, String)> {
        let mut issues = Issues::default();
        spec.validate(&FieldPath::of("spec"), &mut issues);
        issues.into_vec().into_iter().map(|i| (i.path.to_string(), i.message)).collect()
    }

    fn errors_of(spec: &WorkloadEntrySpec) -> Vec<(String, String)> {
        let mut issues = Issues::default();
        spec.validate(&FieldPath::of("spec"), &mut issues);
        issues
            .into_vec()
            .into_iter()
            .filter(|i| i.severity == crate::Severity::Error)
            .map(|i| (i.path.to_string(), i.message))
            .collect()
    }

    fn assert_one_error(spec: &WorkloadEntrySpec, path: &str, needle: &str) {
        let errors = errors_of(spec);
        assert!(
            errors.iter().any(|(p, m)| p == path && m.contains(needle)),
            "expected an error at {path} containing {needle:?}, got {errors:?}"
        );
    }

    #[test]
    fn a_full_workload_entry_round_trips_unchanged() {
        let value = json!({
            "address": "10.0.0.7",
            "labels": {"app": "vm", "example.com/tier": "back-end"},
            "locality": "us-east1/us-east1-b/rack-3",
            "network": "vm-net",
            "ports": {"http": 8080, "grpc-api": 9090},
            "serviceAccount": "vm-sa",
            "weight": 20
        });
        let parsed = spec(value.clone());
        assert_eq!(serde_json::to_value(&parsed).expect("serializes"), value);
        assert!(issues_of(&parsed).is_empty(), "{:?}", issues_of(&parsed));
    }

    #[test]
    fn an_unknown_field_is_rejected() {
        let result = serde_json::from_value::<WorkloadEntrySpec>(json!({"address": "1.2.3.4", "adress": "x"}));
        assert!(result.is_err());
    }

    #[test]
    fn an_entry_with_neither_address_nor_network_is_rejected() {
        assert_one_error(&spec(json!({"labels": {"app": "a"}})), "spec.address", "address is required");
    }

    #[test]
    fn an_entry_with_only_a_network_is_accepted_with_a_warning() {
        let entry = spec(json!({"network": "remote"}));
        assert!(errors_of(&entry).is_empty());
        assert_eq!(issues_of(&entry), vec![("spec.address".into(), "address is unset with network \"remote\"".into())]);
    }

    #[test]
    fn dns_names_and_ip_addresses_are_accepted() {
        for address in [
            "vm1.example.com",
            "vm1",
            "2001:db8::7",
            "192.168.0.1",
            "foo.bar.",
            "unix:///var/run/a.sock",
            "unix://@abstract",
        ] {
            assert!(errors_of(&spec(json!({"address": address}))).is_empty(), "{address}");
        }
    }

    #[test]
    fn an_address_that_is_neither_ip_nor_dns_name_is_rejected() {
        for address in ["not_a_host", "-bad.example.com", "1.2.3.4.5", "foo..bar", "host.123"] {
            assert_one_error(&spec(json!({"address": address})), "spec.address", "not a valid FQDN or an IP address");
        }
    }

    #[test]
    fn a_unix_address_must_be_an_absolute_path_or_abstract_socket() {
        assert_one_error(&spec(json!({"address": "unix://relative.sock"})), "spec.address", "absolute path");
        assert_one_error(&spec(json!({"address": "unix://"})), "spec.address", "must not be empty");
    }

    #[test]
    fn a_unix_address_may_not_be_a_directory() {
        assert_one_error(&spec(json!({"address": "unix:///var/run/"})), "spec.address", "not a directory");
    }

    #[test]
    fn a_unix_address_may_not_have_ports() {
        let entry = spec(json!({"address": "unix:///var/run/a.sock", "ports": {"http": 80}}));
        assert_one_error(&entry, "spec.ports", "must not include ports");
    }

    #[test]
    fn port_numbers_must_be_between_1_and_65535() {
        assert_one_error(&spec(json!({"address": "1.2.3.4", "ports": {"http": 0}})), "spec.ports.http", "out of range");
        assert_one_error(&spec(json!({"address": "1.2.3.4", "ports": {"http": 65536}})), "spec.ports.http", "65536");
    }

    #[test]
    fn port_names_must_be_dns_labels_shorter_than_63_characters() {
        assert_one_error(
            &spec(json!({"address": "1.2.3.4", "ports": {"http_x": 80}})),
            "spec.ports.http_x",
            "invalid port name",
        );
        let long = "a".repeat(63);
        let entry = spec(json!({"address": "1.2.3.4", "ports": {long.clone(): 80}}));
        assert_one_error(&entry, &format!("spec.ports.{long}"), "invalid port name");
        let fine = "a".repeat(62);
        assert!(errors_of(&spec(json!({"address": "1.2.3.4", "ports": {fine: 80}}))).is_empty());
    }

    #[test]
    fn labels_must_be_valid_kubernetes_labels() {
        let entry = spec(json!({"address": "1.2.3.4", "labels": {"bad key": "v"}}));
        assert_one_error(&entry, "spec.labels[\"bad key\"]", "invalid label key");
        let entry = spec(json!({"address": "1.2.3.4", "labels": {"app": "-v-"}}));
        assert_one_error(&entry, "spec.labels.app", "invalid label value");
        let entry = spec(json!({"address": "1.2.3.4", "labels": {"a/b/c": "v"}}));
        assert_one_error(&entry, "spec.labels[\"a/b/c\"]", "invalid label key");
        let entry = spec(json!({"address": "1.2.3.4", "labels": {"app.kubernetes.io/name": "", "x": "A.b_c"}}));
        assert!(errors_of(&entry).is_empty());
    }

    #[test]
    fn a_service_account_longer_than_253_characters_is_rejected() {
        let entry = spec(json!({"address": "1.2.3.4", "serviceAccount": "s".repeat(254)}));
        assert_one_error(&entry, "spec.serviceAccount", "at most 253 characters");
    }

    #[test]
    fn long_addresses_localities_and_networks_are_rejected() {
        let entry = spec(
            json!({"address": format!("unix:///{}", "a".repeat(256)), "locality": "l".repeat(2049), "network": "n".repeat(2049)}),
        );
        assert_one_error(&entry, "spec.address", "at most 256 characters");
        assert_one_error(&entry, "spec.locality", "at most 2048 characters");
        assert_one_error(&entry, "spec.network", "at most 2048 characters");
    }

    #[test]
    fn wildcard_domains_allow_a_wildcard_only_in_the_first_label() {
        for good in ["*", "*.example.com", "*foo.example.com", "*-foo.example.com", "example.com", "example.com."] {
            assert_eq!(wildcard_domain_problem(good), None, "{good}");
        }
        for bad in ["", "foo.*.com", "*.*.com", "ex ample.com", "example.123", "**.com"] {
            assert!(wildcard_domain_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn cidr_blocks_need_a_valid_prefix_length() {
        for good in ["10.0.0.0/8", "10.1.2.3", "2001:db8::/32", "0.0.0.0/0"] {
            assert_eq!(ip_or_cidr_problem(good), None, "{good}");
        }
        for bad in ["10.0.0.0/33", "10.0.0.0/", "2001:db8::/129", "10.0.0/8", "host", "10.0.0.0/08"] {
            assert!(ip_or_cidr_problem(bad).is_some(), "{bad}");
        }
    }
    /// Every CEL error of the CRD on `value`, as `(path, message)`.
    fn cel_errors(value: &serde_json::Value) -> Vec<(String, String)> {
        let object = json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": "x"}, "spec": value});
        let mut issues = Issues::default();
        crate::cel::check("WorkloadEntry", &object, &mut issues);
        issues.into_vec().into_iter().map(|i| (i.path.to_string(), i.message)).collect()
    }

    #[test]
    fn every_cel_rule_of_the_crd_is_mirrored_in_rust() {
        assert_eq!(cel_errors(&json!({"address": "unix:///a.sock"})), vec![]);
        assert_eq!(cel_errors(&json!({"address": "1.2.3.4", "ports": {"http": 80}})), vec![]);
        for case in [
            json!({"labels": {"a": "b"}}),
            json!({"address": "unix:///a.sock", "ports": {"http": 80}}),
            json!({"address": "unix://relative"}),
            json!({"address": "unix:///dir/"}),
            json!({"address": "1.2.3.4", "ports": {"bad_name": 80}}),
            json!({"address": "1.2.3.4", "ports": {"http": 0}}),
        ] {
            assert!(!cel_errors(&case).is_empty(), "the CRD should reject {case}");
            let object = json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": "x"}, "spec": case});
            let mut issues = Issues::default();
            spec(case.clone()).validate(&FieldPath::of("spec"), &mut issues);
            let before = issues.iter().count();
            crate::cel::check("WorkloadEntry", &object, &mut issues);
            let added: Vec<_> =
                issues.into_vec().into_iter().skip(before).map(|i| (i.path.to_string(), i.message)).collect();
            assert_eq!(added, vec![], "for {case}");
        }
    }
}
