//! Gateway proxies: Gateways selected by the proxy's labels, VirtualServices bound with `gateways:`,
//! the intersection of server hosts (`namespace/host`) and VirtualService hosts, merging on gateways,
//! httpsRedirect, and the `mesh` keyword.

mod support;

use support::*;
use trellis_api::proxy_config::{Protocol, ProxyMode, RouteAction};
use trellis_controlplane::index::Kind;
use trellis_controlplane::translate::{HTTPS_REDIRECT_STATUS, cluster_name};

fn ingress() -> trellis_controlplane::Translation {
    let index = index(&["gateway.yaml"]);
    run(&index, &proxy("istio-system", &[("istio", "ingressgateway"), ("app", "gw")], ProxyMode::Gateway))
}

fn route_names(vhost: &trellis_api::proxy_config::VirtualHost) -> Vec<&str> {
    vhost.routes.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn a_gateway_proxy_serves_the_gateways_its_labels_select_from_any_namespace() {
    let t = ingress();
    let ports: Vec<u16> = t.config.gateway_listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [80, 8080, 8081], "shop-gateway's servers, but not the HTTPS one nor edge-gateway's");
    assert_eq!(listener(&t.config, 8080).protocol, Protocol::Http2);
    assert!(t.config.outbound.virtual_hosts.is_empty() && t.config.inbound.is_empty());
}

#[test]
fn a_short_gateway_name_binds_in_the_virtual_services_namespace() {
    let t = ingress();
    let shop = gateway_vhost(listener(&t.config, 80), "shop.example.com");
    assert_eq!(route_names(shop), ["shop/shop-web#0"], "sneaky in api-team is not bound: the server wants ./");
    assert_eq!(targets(&shop.routes[0]), [(cluster_name(80, "", "web.shop.svc.cluster.local").as_str(), 100)]);
    let web = cluster(&t.config, &cluster_name(80, "", "web.shop.svc.cluster.local"));
    assert_eq!(addresses(web), ["10.7.0.1:8000"]);
}

#[test]
fn virtual_services_for_one_host_on_a_gateway_merge_in_precedence_order() {
    let t = ingress();
    let api = gateway_vhost(listener(&t.config, 80), "api.example.com");
    assert_eq!(route_names(api), ["api-team/api#0", "api-team/api-extra#0"], "api-private is not exported here");
    assert_eq!(api.port, 80);
}

#[test]
fn a_wildcard_server_host_binds_the_virtual_service_hosts_it_covers() {
    let t = ingress();
    let internal = listener(&t.config, 8080);
    let names: Vec<&str> = internal.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["orders.internal.example.com"]);
    assert_eq!(route_names(&internal.virtual_hosts[0]), ["shop/orders#1"], "the /admin rule is for the mesh only");
}

#[test]
fn an_https_redirect_server_answers_every_request_with_a_redirect() {
    let t = ingress();
    let redirect = gateway_vhost(listener(&t.config, 8081), "redirect.example.com");
    assert_eq!(redirect.routes.len(), 1);
    assert_eq!(
        redirect.routes[0].action,
        RouteAction::Redirect {
            uri: None,
            authority: None,
            scheme: Some("https".into()),
            port: None,
            status: HTTPS_REDIRECT_STATUS
        }
    );
}

#[test]
fn a_server_the_gateway_cannot_serve_yet_is_reported_and_the_rest_still_work() {
    let t = ingress();
    let about = skipped_about(&t, Kind::Gateway, "shop", "shop-gateway");
    assert_eq!(about.len(), 1, "{about:?}");
    assert!(about[0].starts_with("spec.servers[2].port.protocol: HTTPS servers need TLS"), "{about:?}");
}

#[test]
fn another_gateway_proxy_gets_only_its_own_gateways() {
    let index = index(&["gateway.yaml"]);
    let t = run(&index, &proxy("edge", &[("istio", "edgegateway")], ProxyMode::Gateway));
    let edge = gateway_vhost(listener(&t.config, 80), "*");
    assert_eq!(route_names(edge), ["edge/edge#0"]);
    assert_eq!(t.config.gateway_listeners.len(), 1);
    let none = run(&index, &proxy("istio-system", &[("istio", "egressgateway")], ProxyMode::Gateway));
    assert!(none.config.gateway_listeners.is_empty() && none.config.clusters.is_empty());
}

#[test]
fn a_virtual_service_bound_to_mesh_and_a_gateway_also_routes_for_sidecars() {
    let index = index(&["gateway.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "shop-client"));
    let orders = vhost(&t.config, "orders.internal.example.com", 80);
    assert_eq!(route_names(orders), ["shop/orders#0", "shop/orders#1"], "both rules apply to the mesh");
    assert!(!has_vhost(&t.config, "shop.example.com"), "gateway-only VirtualServices stay off sidecars");
    assert!(!has_vhost(&t.config, "api.example.com"));
}
