//! Opaque TCP and TLS routing: TCP rules with weights and matches, TLS rules by SNI, sniffed ports,
//! and external services with static endpoints.

mod support;

use support::*;
use trellis_api::proxy_config::Protocol;
use trellis_controlplane::translate::cluster_name;

const MYSQL: &str = "mysql.shop.svc.cluster.local";

fn translated() -> trellis_controlplane::Translation {
    let index = index(&["kubernetes-shop.yaml", "tcp.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
    t
}

fn weights(vhost: &trellis_api::proxy_config::VirtualHost) -> Vec<(&str, u32)> {
    vhost.tcp.iter().map(|w| (w.cluster.as_str(), w.weight)).collect()
}

#[test]
fn a_tcp_rule_splits_connections_by_weight_and_rules_for_other_callers_are_skipped() {
    let t = translated();
    let host = vhost(&t.config, MYSQL, 3306);
    assert_eq!(host.protocol, Protocol::Tcp, "port name tcp-mysql");
    assert!(host.routes.is_empty(), "no HTTP routes on an opaque port");
    let v1 = cluster_name(3306, "v1", MYSQL);
    let v2 = cluster_name(3306, "v2", MYSQL);
    assert_eq!(weights(host), [(v1.as_str(), 80), (v2.as_str(), 20)]);
    assert_eq!(addresses(cluster(&t.config, &v2)), ["10.1.3.2:3306"]);
    assert_eq!(host.addresses, ["10.96.0.30"]);
}

#[test]
fn a_tls_rule_routes_by_sni_to_a_subset_of_an_external_service() {
    let t = translated();
    let host = vhost(&t.config, "api.payments.example", 443);
    assert_eq!(host.protocol, Protocol::Tls);
    assert_eq!(host.addresses, ["192.0.2.100"]);
    assert!(host.domains.is_empty(), "an external name has no shorter forms");
    let eu = cluster_name(443, "eu", "api.payments.example");
    assert_eq!(weights(host), [(eu.as_str(), 100)]);
    let endpoints = &cluster(&t.config, &eu).endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].address.to_string(), "192.0.2.10:443");
    assert!(!endpoints[0].meshed, "MESH_EXTERNAL endpoints have no proxy");
}

#[test]
fn a_port_without_declared_protocol_is_sniffed_and_gets_both_http_routes_and_a_tcp_fallback() {
    let t = translated();
    let host = vhost(&t.config, "legacy.shop.svc.cluster.local", 8000);
    assert_eq!(host.protocol, Protocol::Detect);
    let all = cluster_name(8000, "", "legacy.shop.svc.cluster.local");
    assert_eq!(host.routes.len(), 1);
    assert_eq!(targets(&host.routes[0]), [(all.as_str(), 100)]);
    assert_eq!(weights(host), [(all.as_str(), 100)]);
    assert!(cluster(&t.config, &all).endpoints.is_empty(), "no EndpointSlice yet: no endpoints");
}
