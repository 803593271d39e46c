//! The tutorial's YAML (examples/tutorial, copied into the fixtures) with its services described for
//! local mode (ServiceEntries and WorkloadEntries), translated for every sidecar and the ingress gateway.

mod support;

use std::time::Duration;

use support::*;
use trellis_api::analyze::{self, Source};
use trellis_api::proxy_config::{
    AuthorizationAction, ConnectionPool, InboundMtls, OutlierDetection, ProxyMode, UnknownDestinations,
};
use trellis_controlplane::index::load;
use trellis_controlplane::translate::cluster_name;
use trellis_controlplane::{Index, translate};

const SHIPPING: &str = "shipping-service.default.svc.cluster.local";
const INVENTORY: &str = "inventory-service.default.svc.cluster.local";
const BOOKING: &str = "booking-service.default.svc.cluster.local";

fn tutorial() -> Index {
    index(&["tutorial"])
}

fn ingress() -> trellis_controlplane::ProxyIdentity {
    proxy("istio-system", &[("istio", "ingressgateway")], ProxyMode::Gateway)
}

#[test]
fn every_tutorial_proxy_gets_a_config_that_passes_its_check_and_compiles_in_the_proxy() {
    let index = tutorial();
    for workload in ["booking-v1", "inventory-v1", "shipping-v1", "shipping-v2", "order-v1"] {
        let t = run(&index, &sidecar(&index, "default", workload));
        assert!(t.skipped.is_empty(), "{workload}: {:?}", t.skipped);
        assert_eq!(t.config.outbound.virtual_hosts.len(), 4, "{workload} sees the four services");
    }
    let gateway = run(&index, &ingress());
    assert!(gateway.skipped.is_empty(), "{:?}", gateway.skipped);
}

#[test]
fn the_shipping_split_sends_ninety_percent_to_v1_and_ten_to_v2() {
    let index = tutorial();
    let t = run(&index, &sidecar(&index, "default", "booking-v1"));
    let routes = &vhost(&t.config, SHIPPING, 80).routes;
    assert_eq!(routes.len(), 1);
    let (v1, v2) = (cluster_name(80, "v1", SHIPPING), cluster_name(80, "v2", SHIPPING));
    assert_eq!(targets(&routes[0]), [(v1.as_str(), 90), (v2.as_str(), 10)]);
    assert_eq!(addresses(cluster(&t.config, &v1)), ["127.0.1.3:8080"]);
    assert_eq!(addresses(cluster(&t.config, &v2)), ["127.0.1.4:8080"]);
    let v2_endpoint = &cluster(&t.config, &v2).endpoints[0];
    assert!(v2_endpoint.meshed);
    assert_eq!(v2_endpoint.identity, "spiffe://cluster.local/ns/default/sa/shipping");
}

#[test]
fn the_inventory_circuit_breaker_allows_one_connection_and_ejects_after_one_error() {
    let index = tutorial();
    let t = run(&index, &sidecar(&index, "default", "booking-v1"));
    let inventory = cluster(&t.config, &cluster_name(80, "", INVENTORY));
    assert_eq!(
        inventory.connection_pool,
        Some(ConnectionPool {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            max_requests_per_connection: Some(1),
            ..Default::default()
        })
    );
    assert_eq!(
        inventory.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(180),
            max_ejection_percent: 100,
            min_health_percent: 0,
        })
    );
}

#[test]
fn strict_mtls_in_istio_system_applies_to_every_sidecar_port() {
    let index = tutorial();
    for workload in ["booking-v1", "order-v1", "shipping-v2"] {
        let t = run(&index, &sidecar(&index, "default", workload));
        assert!(!t.config.inbound.is_empty(), "{workload} serves a port");
        assert!(t.config.inbound.iter().all(|l| l.mtls == InboundMtls::Strict), "{workload}");
    }
    let order = run(&index, &sidecar(&index, "default", "order-v1"));
    let ports: Vec<u16> = order.config.inbound.iter().map(|l| l.port).collect();
    assert_eq!(ports, [0, 80], "the catch-all for undeclared ports, then the Kubernetes Service's targetPort");
    let shipping = run(&index, &sidecar(&index, "default", "shipping-v1"));
    assert_eq!(shipping.config.inbound[1].port, 8080, "the ServiceEntry's targetPort");
}

#[test]
fn booking_accepts_only_requests_with_a_jwt_of_the_tutorials_issuer() {
    let index = tutorial();
    let booking = run(&index, &sidecar(&index, "default", "booking-v1"));
    assert_eq!(booking.config.inbound[0].port, 0, "the catch-all carries the workload's policies too");
    assert_eq!(booking.config.inbound[0].authorization, booking.config.inbound[1].authorization);
    let inbound = &booking.config.inbound[1];
    assert_eq!(inbound.port, 8080);
    assert_eq!(inbound.authorization.len(), 1);
    assert_eq!(inbound.authorization[0].policy, "default/require-jwt");
    assert_eq!(inbound.authorization[0].action, AuthorizationAction::Allow);
    assert_eq!(inbound.jwt.len(), 1);
    assert_eq!(inbound.jwt[0].issuer, "testing@secure.istio.io");
    assert_eq!(inbound.jwt[0].from_headers[0].name, "authorization", "Istio's default token location");
    let shipping = run(&index, &sidecar(&index, "default", "shipping-v1"));
    assert!(shipping.config.inbound.iter().all(|l| l.authorization.is_empty() && l.jwt.is_empty()));
}

#[test]
fn the_ingress_gateway_routes_the_booking_api_to_booking_service_on_8080() {
    let index = tutorial();
    let t = run(&index, &ingress());
    let any = gateway_vhost(listener(&t.config, 80), "*");
    assert_eq!(any.routes.len(), 1);
    let booking = cluster_name(8080, "", BOOKING);
    assert_eq!(targets(&any.routes[0]), [(booking.as_str(), 100)]);
    assert_eq!(addresses(cluster(&t.config, &booking)), ["127.0.1.1:8080"]);
    assert_eq!(t.config.clusters.len(), 1, "a gateway gets the clusters its routes use");
}

#[test]
fn sidecars_know_each_tutorial_service_by_the_names_clients_use() {
    let index = tutorial();
    let t = run(&index, &sidecar(&index, "default", "booking-v1"));
    let shipping = vhost(&t.config, SHIPPING, 80);
    assert_eq!(shipping.domains[0], "shipping-service");
    assert_eq!(t.config.outbound.unknown_destinations, UnknownDestinations::Passthrough);
    assert_eq!(t.config.node.identity, "spiffe://cluster.local/ns/default/sa/booking");
}

#[test]
fn the_same_objects_read_in_another_order_give_byte_identical_json() {
    let forward = tutorial();
    let mut backward = Index::new();
    let mut files: Vec<_> =
        std::fs::read_dir(fixtures().join("tutorial")).expect("folder").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files.reverse();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let mut changes = load::yaml(&file.display().to_string(), &text).changes;
        changes.reverse();
        backward.apply_all(changes);
    }
    for proxy in [sidecar(&forward, "default", "booking-v1"), ingress()] {
        let a = serde_json::to_string(&translate(&forward, &proxy).config).expect("serialize");
        let b = serde_json::to_string(&translate(&backward, &proxy).config).expect("serialize");
        assert_eq!(a, b);
    }
}

#[test]
fn an_index_built_from_the_analyze_report_routes_the_istio_objects_alike() {
    let sources: Vec<Source> = std::fs::read_dir(fixtures().join("tutorial"))
        .expect("folder")
        .map(|e| {
            let path = e.expect("entry").path();
            Source { name: path.display().to_string(), bytes: std::fs::read(&path).expect("readable") }
        })
        .collect();
    let report = analyze::analyze(&sources);
    assert!(!report.has_errors());
    let from_report = Index::from_report(&report);
    let t = run(&from_report, &sidecar(&from_report, "default", "booking-v1"));
    let (v1, v2) = (cluster_name(80, "v1", SHIPPING), cluster_name(80, "v2", SHIPPING));
    assert_eq!(targets(&vhost(&t.config, SHIPPING, 80).routes[0]), [(v1.as_str(), 90), (v2.as_str(), 10)]);
    assert!(!has_vhost(&t.config, "order-service.default.svc.cluster.local"), "the report holds no Kubernetes kinds");
}
