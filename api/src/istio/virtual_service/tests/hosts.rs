//! VirtualService hosts, gateways and exportTo validation.

use serde_json::{Value, json};

use super::{HOST, assert_error, assert_valid, assert_warning, errors_of, rule};

#[test]
fn a_virtual_service_without_hosts_is_rejected() {
    for spec in [json!({ "http": [rule(json!({}))] }), json!({ "hosts": [], "http": [rule(json!({}))] })] {
        assert!(errors_of(spec.clone()).is_empty(), "a delegate target without hosts is valid Istio");
        assert_warning(spec, "spec.hosts", "delegate");
    }
}

#[test]
fn an_empty_host_is_rejected() {
    assert_error(json!({ "hosts": [""], "http": [rule(json!({}))] }), "spec.hosts[0]", "must not be empty");
}

#[test]
fn wildcards_are_only_allowed_as_a_leading_label_or_alone() {
    for host in ["foo.*.example.com", "a*.example.com", "example.*", "*foo.example.com"] {
        assert_error(
            json!({ "hosts": [host], "gateways": ["gw"], "http": [rule(json!({}))] }),
            "spec.hosts[0]",
            "\"*\" is only allowed",
        );
    }
    assert_valid(json!({ "hosts": ["*.example.com"], "http": [rule(json!({}))] }));
    assert_valid(json!({ "hosts": ["*"], "gateways": ["istio-system/public"], "http": [rule(json!({}))] }));
}

#[test]
fn malformed_host_names_are_rejected() {
    assert_error(
        json!({ "hosts": ["bad_name.example.com"], "http": [rule(json!({}))] }),
        "spec.hosts[0]",
        "not a DNS-1123 label",
    );
    assert_error(
        json!({ "hosts": ["example.123"], "http": [rule(json!({}))] }),
        "spec.hosts[0]",
        "cannot be all digits",
    );
    assert_valid(json!({ "hosts": ["reviews", "reviews.prod.svc.cluster.local."], "http": [rule(json!({}))] }));
}

#[test]
fn ip_addresses_are_valid_hosts() {
    assert_valid(json!({ "hosts": ["10.0.0.1", "2001:db8::1"], "http": [rule(json!({}))] }));
}

#[test]
fn the_catch_all_host_is_rejected_for_the_mesh() {
    let path = "spec.hosts[0]";
    assert_error(json!({ "hosts": ["*"], "http": [rule(json!({}))] }), path, "only allowed when");
    assert_error(
        json!({ "hosts": ["*"], "gateways": ["mesh", "gw"], "http": [rule(json!({}))] }),
        path,
        "only allowed when",
    );
}

#[test]
fn duplicate_or_overlapping_hosts_are_rejected() {
    assert_error(
        json!({ "hosts": [HOST, HOST], "http": [rule(json!({}))] }),
        "spec.hosts[1]",
        "duplicates or overlaps",
    );
    assert_error(
        json!({ "hosts": ["*.example.com", "api.example.com"], "http": [rule(json!({}))] }),
        "spec.hosts[1]",
        "duplicates or overlaps",
    );
    assert_valid(json!({ "hosts": ["*.example.com", "example.org"], "http": [rule(json!({}))] }));
}

#[test]
fn gateway_references_must_be_namespace_slash_name() {
    let bad = |gateway: &str| json!({ "hosts": [HOST], "gateways": [gateway], "http": [rule(json!({}))] });
    assert_error(bad("/public"), "spec.gateways[0]", "both parts set");
    assert_error(bad("Istio_System/public"), "spec.gateways[0]", "invalid namespace");
    assert_error(bad("istio-system/pub.lic"), "spec.gateways[0]", "invalid name");
    assert_valid(bad("istio-system/public"));
    assert_valid(bad("mesh"));
}

#[test]
fn dotted_gateway_names_draw_a_legacy_format_warning() {
    let value = json!({ "hosts": [HOST], "gateways": ["public.istio-system"], "http": [rule(json!({}))] });
    assert_warning(value.clone(), "spec.gateways[0]", "prefer istio-system/public");
    assert_valid(value);
}

#[test]
fn a_virtual_service_needs_some_routes() {
    assert_error(json!({ "hosts": [HOST] }), "spec", "at least one of http, tcp or tls");
}

#[test]
fn export_to_accepts_dot_star_and_namespaces_only() {
    let with = |export: Value| json!({ "hosts": [HOST], "http": [rule(json!({}))], "exportTo": export });
    assert_error(with(json!(["~"])), "spec.exportTo[0]", "only allowed on ServiceEntry");
    assert_error(with(json!(["Bad_NS"])), "spec.exportTo[0]", "must be \".\", \"*\" or a namespace");
    assert_error(with(json!([".", "."])), "spec.exportTo[1]", "duplicate exportTo entry");
    assert_error(with(json!(["*", "."])), "spec.exportTo", "cannot be combined");
    assert_valid(with(json!([".", "istio-system"])));
    assert_valid(with(json!(["*"])));
}
