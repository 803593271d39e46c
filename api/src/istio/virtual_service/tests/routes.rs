//! VirtualService HTTP rule actions (route, redirect, directResponse, delegate), destinations and weights.

use serde_json::{Value, json};

use super::{HOST, assert_error, assert_valid, assert_warning, rule, with_http};

// -------------------------------------------------------------------------------------------------------------
// HTTP rule actions
// -------------------------------------------------------------------------------------------------------------

#[test]
fn an_http_rule_needs_a_route_redirect_direct_response_or_delegate() {
    assert_error(
        with_http(json!({ "name": "nothing" })),
        "spec.http[0]",
        "one of route, redirect, directResponse or delegate",
    );
    assert_error(with_http(json!({ "route": [] })), "spec.http[0]", "one of route, redirect");
    assert_valid(with_http(json!({ "redirect": { "uri": "/" } })));
    assert_valid(with_http(json!({ "directResponse": { "status": 204 } })));
    assert_valid(with_http(json!({ "delegate": { "name": "other" } })));
}

#[test]
fn redirect_and_route_cannot_be_combined() {
    assert_error(
        with_http(rule(json!({ "redirect": { "uri": "/" } }))),
        "spec.http[0].redirect",
        "cannot be combined with route",
    );
}

#[test]
fn direct_response_cannot_be_combined_with_route_or_redirect() {
    assert_error(
        with_http(rule(json!({ "directResponse": { "status": 200 } }))),
        "spec.http[0].directResponse",
        "cannot be combined with route",
    );
    assert_error(
        with_http(json!({ "redirect": { "uri": "/" }, "directResponse": { "status": 200 } })),
        "spec.http[0].directResponse",
        "cannot be combined with redirect",
    );
}

#[test]
fn delegate_cannot_be_combined_with_route_or_redirect() {
    assert_error(
        with_http(rule(json!({ "delegate": { "name": "x" } }))),
        "spec.http[0].delegate",
        "cannot be combined with route",
    );
    assert_error(
        with_http(json!({ "delegate": { "name": "x" }, "redirect": { "uri": "/" } })),
        "spec.http[0].delegate",
        "cannot be combined with redirect",
    );
}

#[test]
fn a_delegate_without_a_name_draws_a_warning() {
    assert_warning(with_http(json!({ "delegate": {} })), "spec.http[0].delegate.name", "has no name");
}

#[test]
fn fault_and_rewrite_cannot_accompany_a_redirect_or_direct_response() {
    let fault = json!({ "abort": { "httpStatus": 500 } });
    assert_error(
        with_http(json!({ "redirect": { "uri": "/" }, "fault": fault })),
        "spec.http[0].fault",
        "combined with redirect",
    );
    assert_error(
        with_http(json!({ "redirect": { "uri": "/" }, "rewrite": { "uri": "/" } })),
        "spec.http[0].rewrite",
        "combined with redirect",
    );
    assert_error(
        with_http(json!({ "directResponse": { "status": 200 }, "fault": fault })),
        "spec.http[0].fault",
        "combined with directResponse",
    );
}

#[test]
fn mirror_and_mirrors_cannot_both_be_set() {
    let value = with_http(rule(json!({ "mirror": { "host": "a" }, "mirrors": [{ "destination": { "host": "b" } }] })));
    assert_error(value, "spec.http[0].mirrors", "cannot both be set");
}

// -------------------------------------------------------------------------------------------------------------
// Destinations and weights
// -------------------------------------------------------------------------------------------------------------

#[test]
fn a_destination_host_must_be_present_and_specific() {
    let route = |host: &str| with_http(json!({ "route": [{ "destination": { "host": host } }] }));
    assert_error(route(""), "spec.http[0].route[0].destination.host", "is required");
    assert_error(route("*"), "spec.http[0].route[0].destination.host", "cannot be \"*\"");
    assert_error(route("bad host"), "spec.http[0].route[0].destination.host", "not a DNS-1123 label");
}

#[test]
fn destination_ports_must_be_between_1_and_65535() {
    let route = |port: Value| with_http(json!({ "route": [{ "destination": { "host": HOST, "port": port } }] }));
    assert_error(route(json!({ "number": 0 })), "spec.http[0].route[0].destination.port.number", "1-65535");
    assert_error(route(json!({ "number": 70000 })), "spec.http[0].route[0].destination.port.number", "1-65535");
    assert_error(route(json!({})), "spec.http[0].route[0].destination.port.number", "is required");
    assert_valid(route(json!({ "number": 65535 })));
}

#[test]
fn subset_names_must_be_dns_labels() {
    let value = with_http(json!({ "route": [{ "destination": { "host": HOST, "subset": "v1.beta" } }] }));
    assert_error(value, "spec.http[0].route[0].destination.subset", "DNS-1123 label");
}

#[test]
fn mirror_destinations_are_validated() {
    assert_error(with_http(rule(json!({ "mirror": { "host": "" } }))), "spec.http[0].mirror.host", "is required");
    assert_error(
        with_http(rule(json!({ "mirrors": [{ "destination": { "host": HOST, "port": { "number": 0 } } }] }))),
        "spec.http[0].mirrors[0].destination.port.number",
        "1-65535",
    );
}

#[test]
fn negative_weights_are_rejected() {
    let value = with_http(json!({ "route": [
        { "destination": { "host": "a" }, "weight": -1 },
        { "destination": { "host": "b" }, "weight": 101 }
    ] }));
    assert_error(value, "spec.http[0].route[0].weight", "must not be negative");
}

#[test]
fn all_zero_route_weights_are_rejected() {
    let value = with_http(json!({ "route": [
        { "destination": { "host": "a" }, "weight": 0 },
        { "destination": { "host": "b" }, "weight": 0 }
    ] }));
    assert_error(value, "spec.http[0].route", "all route weights are zero");
}

#[test]
fn omitted_weights_count_as_zero_when_there_are_several_destinations() {
    let value = with_http(json!({ "route": [{ "destination": { "host": "a" } }, { "destination": { "host": "b" } }] }));
    assert_error(value, "spec.http[0].route", "an omitted weight counts as 0");
}

#[test]
fn a_single_destination_with_weight_zero_is_accepted_as_istio_does() {
    // Istio refuses a zero total only with several destinations; one destination takes all traffic.
    assert_valid(with_http(json!({ "route": [{ "destination": { "host": "a" }, "weight": 0 }] })));
    assert_valid(with_http(json!({ "route": [{ "destination": { "host": "a" } }] })));
}

#[test]
fn weights_are_relative_and_need_not_sum_to_100() {
    assert_valid(with_http(json!({ "route": [
        { "destination": { "host": "a" }, "weight": 1 },
        { "destination": { "host": "b" }, "weight": 2 },
        { "destination": { "host": "c" }, "weight": 0 }
    ] })));
}
