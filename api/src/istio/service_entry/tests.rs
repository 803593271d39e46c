use serde_json::{Value, json};

use super::*;
use crate::Severity;

fn spec(value: Value) -> ServiceEntrySpec {
    serde_json::from_value(value).expect("valid ServiceEntry spec")
}

fn issues_of(spec: &ServiceEntrySpec, severity: Severity) -> Vec<(String, String)> {
    let mut issues = Issues::default();
    spec.validate(&FieldPath::of("spec"), &mut issues);
    issues.into_vec().into_iter().filter(|i| i.severity == severity).map(|i| (i.path.to_string(), i.message)).collect()
}

fn errors_of(spec: &ServiceEntrySpec) -> Vec<(String, String)> {
    issues_of(spec, Severity::Error)
}

fn assert_error(spec: &ServiceEntrySpec, path: &str, needle: &str) {
    let errors = errors_of(spec);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected an error at {path} containing {needle:?}, got {errors:?}"
    );
}

fn assert_warning(spec: &ServiceEntrySpec, path: &str, needle: &str) {
    let warnings = issues_of(spec, Severity::Warning);
    assert!(
        warnings.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected a warning at {path} containing {needle:?}, got {warnings:?}"
    );
}

fn assert_valid(spec: &ServiceEntrySpec) {
    let errors = errors_of(spec);
    assert!(errors.is_empty(), "unexpected errors: {errors:?}");
}

/// A valid external HTTPS API resolved by DNS, to which each test adds one mistake.
fn base() -> Value {
    json!({
        "hosts": ["api.example.com"],
        "location": "MESH_EXTERNAL",
        "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
        "resolution": "DNS"
    })
}

fn with(mut value: Value, key: &str, field: Value) -> ServiceEntrySpec {
    value[key] = field;
    spec(value)
}

#[test]
fn a_full_service_entry_round_trips_unchanged() {
    let value = json!({
        "hosts": ["vm.example.com", "*.vm.example.com"],
        "addresses": ["10.20.0.0/16", "10.30.0.1"],
        "ports": [
            {"number": 80, "protocol": "HTTP", "name": "http", "targetPort": 8080},
            {"number": 443, "protocol": "https", "name": "https"}
        ],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "endpoints": [
            {
                "address": "10.20.0.7",
                "labels": {"app": "vm"},
                "locality": "us-east1/us-east1-b",
                "network": "vm-net",
                "ports": {"http": 9080},
                "serviceAccount": "vm-sa",
                "weight": 3
            },
            {"address": "10.20.0.8"}
        ],
        "exportTo": [".", "frontend"],
        "subjectAltNames": ["spiffe://cluster.local/ns/vm/sa/vm-sa"]
    });
    let parsed = spec(value.clone());
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), value);
    assert_valid(&parsed);
    assert!(issues_of(&parsed, Severity::Warning).is_empty());
}

#[test]
fn a_workload_selector_entry_round_trips_unchanged() {
    let value = json!({
        "hosts": ["vm.internal"],
        "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
        "resolution": "STATIC",
        "workloadSelector": {"labels": {"app": "vm"}}
    });
    let parsed = spec(value.clone());
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), value);
    assert_valid(&parsed);
}

#[test]
fn every_resolution_and_location_has_istios_spelling() {
    for resolution in ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] {
        let parsed = spec(json!({"hosts": ["a.example.com"], "resolution": resolution}));
        assert_eq!(serde_json::to_value(&parsed).expect("serializes")["resolution"], resolution);
    }
    for location in ["MESH_EXTERNAL", "MESH_INTERNAL"] {
        let parsed = spec(json!({"hosts": ["a.example.com"], "location": location}));
        assert_eq!(serde_json::to_value(&parsed).expect("serializes")["location"], location);
    }
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    assert!(serde_json::from_value::<ServiceEntrySpec>(json!({"hosts": ["a.com"], "host": "a.com"})).is_err());
    let bad_port = json!({"hosts": ["a.com"], "ports": [{"number": 80, "name": "http", "port": 80}]});
    assert!(serde_json::from_value::<ServiceEntrySpec>(bad_port).is_err());
    let bad_endpoint = json!({"hosts": ["a.com"], "endpoints": [{"address": "1.2.3.4", "addr": "x"}]});
    assert!(serde_json::from_value::<ServiceEntrySpec>(bad_endpoint).is_err());
    let bad_selector = json!({"hosts": ["a.com"], "workloadSelector": {"matchLabels": {"a": "b"}}});
    assert!(serde_json::from_value::<ServiceEntrySpec>(bad_selector).is_err());
}

#[test]
fn hosts_are_required() {
    assert!(serde_json::from_value::<ServiceEntrySpec>(json!({"resolution": "NONE"})).is_err());
    assert_error(&with(base(), "hosts", json!([])), "spec.hosts", "at least one host");
}

#[test]
fn more_than_256_hosts_are_rejected() {
    let hosts: Vec<String> = (0..257).map(|i| format!("h{i}.example.com")).collect();
    let entry = with(json!({"resolution": "NONE"}), "hosts", json!(hosts));
    assert_error(&entry, "spec.hosts", "at most 256 hosts");
}

#[test]
fn the_plain_wildcard_host_is_rejected() {
    assert_error(&with(base(), "hosts", json!(["*"])), "spec.hosts[0]", "cannot be the wildcard");
}

#[test]
fn hosts_must_be_dns_names_with_at_most_a_leading_wildcard() {
    let entry = with(json!({"resolution": "NONE"}), "hosts", json!(["ok.example.com", "bad_host.com", "a.*.com"]));
    assert_error(&entry, "spec.hosts[1]", "label \"bad_host\" invalid");
    assert_error(&entry, "spec.hosts[2]", "label \"*\" invalid");
    assert_valid(&with(json!({"resolution": "NONE"}), "hosts", json!(["*.example.com", "svc"])));
}

#[test]
fn a_partial_wildcard_host_is_a_warning() {
    let entry = with(json!({"resolution": "NONE"}), "hosts", json!(["*foo.example.com"]));
    assert_valid(&entry);
    assert_warning(&entry, "spec.hosts[0]", "partial wildcard");
}

#[test]
fn dns_resolution_without_endpoints_needs_hosts_without_wildcards() {
    let entry = with(base(), "hosts", json!(["*.example.com"]));
    assert_error(&entry, "spec.hosts[0]", "without wildcards");
    let mut value = base();
    value["hosts"] = json!(["*.example.com"]);
    value["endpoints"] = json!([{"address": "proxy.example.com"}]);
    assert_valid(&spec(value));
}

#[test]
fn addresses_must_be_ips_or_cidr_blocks() {
    let entry = with(
        json!({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{"address": "1.1.1.1"}]}),
        "addresses",
        json!(["10.0.0.1", "10.0.0.0/40", "example.com"]),
    );
    assert_error(&entry, "spec.addresses[1]", "not a valid CIDR block");
    assert_error(&entry, "spec.addresses[2]", "not a valid IP address");
}

#[test]
fn cidr_addresses_need_resolution_none_or_static() {
    let entry = with(base(), "addresses", json!(["10.0.0.0/24"]));
    assert_error(&entry, "spec.addresses[0]", "only with resolution NONE or STATIC");
    let entry = with(json!({"hosts": ["a.com"]}), "addresses", json!(["10.0.0.0/24"]));
    assert_valid(&entry);
}

#[test]
fn addresses_longer_than_64_characters_are_rejected() {
    let entry = with(json!({"hosts": ["a.com"]}), "addresses", json!([format!("{}1", "0".repeat(64))]));
    assert_error(&entry, "spec.addresses[0]", "at most 64 characters");
}

#[test]
fn port_numbers_must_be_in_range_and_unique() {
    let entry = with(
        base(),
        "ports",
        json!([
            {"number": 0, "name": "a", "protocol": "TLS"},
            {"number": 443, "name": "b", "protocol": "TLS"},
            {"number": 443, "name": "c", "protocol": "TLS"}
        ]),
    );
    assert_error(&entry, "spec.ports[0].number", "out of range");
    assert_error(&entry, "spec.ports[2].number", "already used by ports[1]");
}

#[test]
fn port_names_are_required_valid_and_unique() {
    let entry = with(
        base(),
        "ports",
        json!([
            {"number": 1, "name": "", "protocol": "TLS"},
            {"number": 2, "name": "Bad_Name", "protocol": "TLS"},
            {"number": 3, "name": "tls", "protocol": "TLS"},
            {"number": 4, "name": "tls", "protocol": "TLS"}
        ]),
    );
    assert_error(&entry, "spec.ports[0].name", "port name is required");
    assert_error(&entry, "spec.ports[1].name", "invalid port name");
    assert_error(&entry, "spec.ports[3].name", "already defined");
}

#[test]
fn target_ports_must_be_in_range() {
    let entry = with(base(), "ports", json!([{"number": 443, "name": "tls", "protocol": "TLS", "targetPort": 70000}]));
    assert_error(&entry, "spec.ports[0].targetPort", "out of range");
    let entry = with(base(), "ports", json!([{"number": 443, "name": "tls", "protocol": "TLS", "targetPort": 0}]));
    assert_error(&entry, "spec.ports[0].targetPort", "out of range");
}

#[test]
fn protocols_are_case_insensitive_and_an_unknown_one_is_a_warning() {
    for protocol in
        ["http", "HTTPS", "grpc", "GRPC-WEB", "Http2", "mongo", "tcp", "TLS", "udp", "redis", "MySQL", "HTTP_PROXY"]
    {
        let entry =
            with(json!({"hosts": ["a.com"]}), "ports", json!([{"number": 80, "name": "p", "protocol": protocol}]));
        assert_valid(&entry);
        assert!(issues_of(&entry, Severity::Warning).is_empty(), "{protocol}");
    }
    let entry = with(json!({"hosts": ["a.com"]}), "ports", json!([{"number": 80, "name": "p", "protocol": "QUIC"}]));
    assert_valid(&entry);
    assert_warning(&entry, "spec.ports[0].protocol", "unknown protocol \"QUIC\"");
}

#[test]
fn several_hosts_need_http_or_tls_ports_unless_resolution_is_none() {
    let entry = with(base(), "hosts", json!(["a.example.com", "b.example.com"]));
    assert_valid(&entry);
    let mut value = base();
    value["hosts"] = json!(["a.example.com", "b.example.com"]);
    value["ports"] = json!([{"number": 5432, "name": "pg", "protocol": "TCP"}]);
    assert_error(&spec(value.clone()), "spec.ports[0].protocol", "several hosts");
    value["resolution"] = json!("NONE");
    assert_valid(&spec(value));
}

#[test]
fn workload_selector_and_endpoints_are_mutually_exclusive() {
    let mut value = base();
    value["resolution"] = json!("STATIC");
    value["endpoints"] = json!([{"address": "1.2.3.4"}]);
    value["workloadSelector"] = json!({"labels": {"app": "vm"}});
    assert_error(&spec(value), "spec", "only one of workloadSelector or endpoints");
}

#[test]
fn workload_selector_labels_cannot_hold_wildcards() {
    let entry =
        with(json!({"hosts": ["a.com"], "resolution": "STATIC"}), "workloadSelector", json!({"labels": {"app": "*"}}));
    assert_error(&entry, "spec.workloadSelector.labels.app", "wildcard is not supported");
    let entry =
        with(json!({"hosts": ["a.com"], "resolution": "STATIC"}), "workloadSelector", json!({"labels": {"": "x"}}));
    assert_error(&entry, "spec.workloadSelector.labels[\"\"]", "must not be empty");
}

#[test]
fn workload_selector_label_values_longer_than_63_characters_are_rejected() {
    let entry = with(
        json!({"hosts": ["a.com"], "resolution": "STATIC"}),
        "workloadSelector",
        json!({"labels": {"app": "v".repeat(64)}}),
    );
    assert_error(&entry, "spec.workloadSelector.labels.app", "at most 63 characters");
}

#[test]
fn a_workload_selector_without_labels_is_a_warning() {
    let entry = with(json!({"hosts": ["a.com"], "resolution": "STATIC"}), "workloadSelector", json!({}));
    assert_valid(&entry);
    assert_warning(&entry, "spec.workloadSelector.labels", "selects every workload");
}

#[test]
fn resolution_none_cannot_have_endpoints() {
    let entry = with(json!({"hosts": ["a.com"]}), "endpoints", json!([{"address": "1.2.3.4"}]));
    assert_error(&entry, "spec.endpoints", "resolution NONE cannot have endpoints");
    let entry = with(json!({"hosts": ["a.com"], "resolution": "NONE"}), "endpoints", json!([]));
    assert_error(&entry, "spec.endpoints", "resolution NONE cannot have endpoints");
}

#[test]
fn resolution_static_needs_endpoints_or_a_workload_selector() {
    let entry = spec(json!({"hosts": ["a.com"], "resolution": "STATIC"}));
    assert_error(&entry, "spec.endpoints", "requires endpoints or a workloadSelector");
}

#[test]
fn static_endpoints_must_be_ip_addresses_or_unix_sockets() {
    let entry = with(
        json!({"hosts": ["a.com"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
        "endpoints",
        json!([{"address": "1.2.3.4"}, {"address": "backend.example.com"}, {"address": "unix:///run/app.sock"}]),
    );
    assert_error(&entry, "spec.endpoints[1].address", "not a valid IP address");
    assert_eq!(errors_of(&entry).len(), 1, "{:?}", errors_of(&entry));
}

#[test]
fn a_unix_endpoint_needs_exactly_one_service_port() {
    let entry = with(
        json!({"hosts": ["a.com"], "resolution": "STATIC", "ports": [{"number": 80, "name": "a"}, {"number": 81, "name": "b"}]}),
        "endpoints",
        json!([{"address": "unix:///run/app.sock"}]),
    );
    assert_error(&entry, "spec.endpoints[0].address", "exactly 1 port");
}

#[test]
fn dns_endpoints_must_be_ip_addresses_or_dns_names() {
    let entry = with(
        base(),
        "endpoints",
        json!([{"address": "backend.example.com"}, {"address": "bad host"}, {"address": "unix:///a.sock"}]),
    );
    assert_error(&entry, "spec.endpoints[1].address", "not a valid FQDN or an IP address");
    assert_error(&entry, "spec.endpoints[2].address", "not a valid FQDN or an IP address");
}

#[test]
fn dns_round_robin_allows_at_most_one_endpoint() {
    let mut value = base();
    value["resolution"] = json!("DNS_ROUND_ROBIN");
    value["endpoints"] = json!([{"address": "a.example.com"}, {"address": "b.example.com"}]);
    assert_error(&spec(value.clone()), "spec.endpoints", "at most 1 endpoint");
    value["endpoints"] = json!([{"address": "a.example.com"}]);
    assert_valid(&spec(value));
}

#[test]
fn endpoints_are_checked_like_workload_entries() {
    let entry = with(
        base(),
        "endpoints",
        json!([
            {"labels": {"app": "x"}},
            {"address": "1.2.3.4", "ports": {"https": 0}, "labels": {"bad key": "v"}, "serviceAccount": "s".repeat(254)}
        ]),
    );
    assert_error(&entry, "spec.endpoints[0].address", "address is required");
    assert_error(&entry, "spec.endpoints[1].ports.https", "out of range");
    assert_error(&entry, "spec.endpoints[1].labels[\"bad key\"]", "invalid label key");
    assert_error(&entry, "spec.endpoints[1].serviceAccount", "at most 253 characters");
}

#[test]
fn endpoint_port_names_must_be_ports_of_the_entry() {
    let entry = with(base(), "endpoints", json!([{"address": "1.2.3.4", "ports": {"https": 8443, "admin": 9000}}]));
    assert_error(&entry, "spec.endpoints[0].ports.admin", "not a port of the service entry");
    assert_eq!(errors_of(&entry).len(), 1, "{:?}", errors_of(&entry));
}

#[test]
fn export_to_accepts_dot_star_tilde_and_namespaces_without_mixing() {
    assert_valid(&with(base(), "exportTo", json!(["."])));
    assert_valid(&with(base(), "exportTo", json!(["*"])));
    assert_valid(&with(base(), "exportTo", json!(["~"])));
    assert_valid(&with(base(), "exportTo", json!([".", "team-a"])));
    assert_error(&with(base(), "exportTo", json!(["*", "team-a"])), "spec.exportTo", "public (*)");
    assert_error(&with(base(), "exportTo", json!(["~", "."])), "spec.exportTo", "no one (~)");
    assert_error(&with(base(), "exportTo", json!(["team_a"])), "spec.exportTo[0]", "namespace name");
    assert_error(&with(base(), "exportTo", json!(["a", "a"])), "spec.exportTo[1]", "duplicate");
}

#[test]
fn istios_example_entries_are_valid() {
    for value in [
        json!({
            "hosts": ["*.bar.com"],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "NONE"
        }),
        json!({
            "hosts": ["mymongodb.somedomain"],
            "addresses": ["192.192.192.192/24"],
            "ports": [{"number": 27018, "name": "mongodb", "protocol": "MONGO"}],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "endpoints": [{"address": "2.2.2.2"}, {"address": "3.3.3.3"}]
        }),
        json!({
            "hosts": ["foo.bar.com"],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}, {"number": 9080, "name": "http2", "protocol": "HTTP2"}],
            "resolution": "DNS",
            "endpoints": [{"address": "us.foo.bar.com", "ports": {"http": 8080}}, {"address": "uk.foo.bar.com", "ports": {"http": 9080}}]
        }),
        json!({
            "hosts": ["unix.example.com"],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "unix:///var/run/example/socket"}]
        }),
    ] {
        assert_valid(&spec(value));
    }
}

/// Every CEL error of the CRD on `value`, as `(path, message)`.
fn cel_errors(value: &Value) -> Vec<(String, String)> {
    let object = json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x"}, "spec": value});
    let mut issues = Issues::default();
    crate::cel::check("ServiceEntry", &object, &mut issues);
    issues.into_vec().into_iter().map(|i| (i.path.to_string(), i.message)).collect()
}

/// The CEL errors on `value` that the Rust validation does not already report at or around the same field.
fn cel_errors_not_in_rust(value: &Value) -> Vec<(String, String)> {
    let object = json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x"}, "spec": value});
    let mut issues = Issues::default();
    spec(value.clone()).validate(&FieldPath::of("spec"), &mut issues);
    let before = issues.iter().count();
    crate::cel::check("ServiceEntry", &object, &mut issues);
    issues.into_vec().into_iter().skip(before).map(|i| (i.path.to_string(), i.message)).collect()
}

#[test]
fn the_crd_cel_rules_accept_valid_entries() {
    let mut value = base();
    value["endpoints"] = json!([{"address": "a.example.com", "ports": {"https": 8443}}, {"address": "unix:///a.sock"}]);
    value["addresses"] = json!(["10.0.0.1"]);
    assert_eq!(cel_errors(&value), vec![]);
    assert_eq!(
        cel_errors(&json!({"hosts": ["a.com"], "resolution": "STATIC", "workloadSelector": {"labels": {"app": "x"}}})),
        vec![]
    );
}

#[test]
fn every_cel_rule_of_the_crd_is_mirrored_in_rust() {
    let cases = [
        json!({"hosts": ["a.com"], "resolution": "STATIC", "workloadSelector": {"labels": {"a": "b"}}, "endpoints": [{"address": "1.2.3.4"}]}),
        json!({"hosts": ["a.com"], "resolution": "DNS", "addresses": ["10.0.0.0/8"]}),
        json!({"hosts": ["a.com"], "endpoints": [{"address": "1.2.3.4"}]}),
        json!({"hosts": ["a.com"], "resolution": "DNS_ROUND_ROBIN", "endpoints": [{"address": "a.com"}, {"address": "b.com"}]}),
        json!({"hosts": ["*"]}),
        json!({"hosts": ["a.com"], "ports": [{"number": 80, "name": "a"}, {"number": 80, "name": "b"}]}),
        json!({"hosts": ["a.com"], "ports": [{"number": 0, "name": "a", "targetPort": 0}]}),
        json!({"hosts": ["a.com"], "resolution": "STATIC", "workloadSelector": {"labels": {"a": "*"}}}),
        json!({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{"labels": {"a": "b"}}]}),
        json!({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{"address": "unix://rel", "ports": {"a": 1}}]}),
        json!({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{"address": "unix:///dir/"}]}),
        json!({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{"address": "1.2.3.4", "ports": {"bad_name": 0}}]}),
    ];
    for case in cases {
        assert!(!cel_errors(&case).is_empty(), "the CRD should reject {case}");
        assert_eq!(cel_errors_not_in_rust(&case), vec![], "for {case}");
    }
}

#[test]
fn ports_are_a_list_map_keyed_by_name_as_in_istios_crd() {
    let crd = serde_json::to_value(<ServiceEntry as kube::CustomResourceExt>::crd()).expect("crd");
    let ports = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-list-type"], "map");
    assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["name"]));
    let required = ports["items"]["required"].as_array().expect("required fields");
    assert!(required.contains(&json!("name")), "a list-map key must be required: {required:?}");
}
