//! VirtualService TLS and TCP routes: SNI matches, subnets, destinations, weights and ports.

use serde_json::{Value, json};

use super::{HOST, assert_error, assert_valid, errors_of};

fn tls(rule: Value) -> Value {
    json!({ "hosts": ["*.example.com"], "tls": [rule] })
}

#[test]
fn tcp_routes_need_a_route_destination() {
    assert_error(
        json!({ "hosts": [HOST], "tcp": [{ "match": [{ "port": 27017 }] }] }),
        "spec.tcp[0].route",
        "at least one route destination",
    );
    assert_error(
        json!({ "hosts": [HOST], "tcp": [{ "route": [] }] }),
        "spec.tcp[0].route",
        "at least one route destination",
    );
}

#[test]
fn tls_routes_need_a_route_destination() {
    let value = tls(json!({ "match": [{ "sniHosts": ["a.example.com"] }] }));
    assert_error(value, "spec.tls[0].route", "at least one route destination");
}

#[test]
fn tls_matches_need_at_least_one_sni_host() {
    let value = tls(json!({ "match": [{ "sniHosts": [] }], "route": [{ "destination": { "host": HOST } }] }));
    assert_error(value, "spec.tls[0].match[0].sniHosts", "at least one sniHost");
    let value = tls(json!({ "match": [], "route": [{ "destination": { "host": HOST } }] }));
    assert_error(value, "spec.tls[0].match", "at least one match");
}

#[test]
fn sni_hosts_must_fall_under_the_virtual_service_hosts() {
    let route = json!([{ "destination": { "host": HOST } }]);
    let value = tls(json!({ "match": [{ "sniHosts": ["a.example.org"] }], "route": route }));
    assert_error(value, "spec.tls[0].match[0].sniHosts[0]", "not covered");
    let value = tls(json!({ "match": [{ "sniHosts": ["*.a.example.com", "b.example.com"] }], "route": route }));
    assert_valid(value);
}

#[test]
fn tls_and_tcp_destination_weights_and_ports_are_checked() {
    let value = json!({ "hosts": [HOST], "tcp": [{ "route": [
        { "destination": { "host": "a", "port": { "number": 0 } }, "weight": 0 },
        { "destination": { "host": "b" }, "weight": 0 }
    ] }] });
    assert_error(value.clone(), "spec.tcp[0].route", "all route weights are zero");
    assert_error(value, "spec.tcp[0].route[0].destination.port.number", "1-65535");
}

#[test]
fn subnets_must_be_ip_addresses_or_cidr_blocks() {
    let value = json!({ "hosts": [HOST], "tcp": [{
        "match": [{ "destinationSubnets": ["10.0.0.0/33", "not-an-ip", "10.0.0.0/8"] }],
        "route": [{ "destination": { "host": HOST } }]
    }] });
    assert_error(value.clone(), "spec.tcp[0].match[0].destinationSubnets[0]", "not a valid IP address or CIDR");
    assert_error(value.clone(), "spec.tcp[0].match[0].destinationSubnets[1]", "not a valid IP address or CIDR");
    let errors = errors_of(value);
    assert!(!errors.iter().any(|(p, _)| p == "spec.tcp[0].match[0].destinationSubnets[2]"), "{errors:#?}");
}

#[test]
fn tls_match_ports_are_checked() {
    let value = tls(
        json!({ "match": [{ "sniHosts": ["a.example.com"], "port": 65536 }], "route": [{ "destination": { "host": HOST } }] }),
    );
    assert_error(value, "spec.tls[0].match[0].port", "1-65535");
}
