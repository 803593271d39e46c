//! Scope and precedence: which VirtualService routes a host for which client, the DestinationRule lookup
//! path (client namespace, service namespace, root namespace with istio-system as alias), merging of rules
//! for one host, and exportTo on services, VirtualServices and DestinationRules.

mod support;

use support::*;
use trellis_api::proxy_config::{LoadBalancer, ProxyMode};
use trellis_controlplane::index::Kind;
use trellis_controlplane::translate::cluster_name;
use trellis_controlplane::{Index, translate};

const CATALOG: &str = "catalog.catalog.svc.cluster.local";
const SEARCH: &str = "search.catalog.svc.cluster.local";

fn catalog(subset: &str) -> String {
    cluster_name(80, subset, CATALOG)
}

#[test]
fn a_virtual_service_in_the_clients_namespace_wins_over_older_ones_elsewhere() {
    let index = index(&["precedence.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "web"));
    let routes = &vhost(&t.config, CATALOG, 80).routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, "shop/catalog-for-shop#0");
    assert_eq!(targets(&routes[0]), [(catalog("v2").as_str(), 100)]);
    let ignored = skipped_about(&t, Kind::VirtualService, "catalog", "catalog-owner");
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(ignored[0].starts_with(
        "spec.hosts[0]: host catalog.catalog.svc.cluster.local is routed by VirtualService shop/catalog-for-shop"
    ));
    assert!(ignored[0].contains("it is in the proxy's namespace"), "{}", ignored[0]);
}

#[test]
fn among_virtual_services_outside_the_clients_namespace_the_oldest_wins() {
    let index = index(&["precedence.yaml"]);
    let t = run(&index, &sidecar(&index, "ops", "tool"));
    let routes = &vhost(&t.config, CATALOG, 80).routes;
    assert_eq!(routes[0].name, "catalog/catalog-owner#0");
    assert_eq!(targets(&routes[0]), [(catalog("v1").as_str(), 100)]);
    let late = skipped_about(&t, Kind::VirtualService, "catalog", "catalog-late");
    assert!(late.iter().any(|s| s.contains("it is older")), "{late:?}");
}

#[test]
fn the_oldest_is_the_first_applied_not_the_first_by_name() {
    // The same objects applied newest first: now shop's catalog-for-shop is the oldest of the three, none
    // of which is in ops.
    let mut reversed = Index::new();
    let text = std::fs::read_to_string(fixtures().join("precedence.yaml")).expect("fixture");
    let mut changes = trellis_controlplane::index::load::yaml("precedence.yaml", &text).changes;
    changes.reverse();
    reversed.apply_all(changes);
    let t = run(&reversed, &sidecar(&reversed, "ops", "tool"));
    assert_eq!(vhost(&t.config, CATALOG, 80).routes[0].name, "shop/catalog-for-shop#0");
}

#[test]
fn a_destination_rule_in_the_clients_namespace_comes_first_on_the_lookup_path() {
    let index = index(&["precedence.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "web"));
    assert_eq!(cluster(&t.config, &catalog("")).load_balancer, LoadBalancer::LeastRequest);
    assert_eq!(addresses(cluster(&t.config, &catalog("v2"))), ["10.2.0.2:80"]);
    assert!(t.config.clusters.iter().all(|c| c.name != catalog("v1")), "only the shop rule's subsets");
}

#[test]
fn without_one_in_the_clients_namespace_the_services_namespace_rule_applies() {
    let index = index(&["precedence.yaml"]);
    let t = run(&index, &sidecar(&index, "ops", "tool"));
    assert_eq!(cluster(&t.config, &catalog("")).load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(addresses(cluster(&t.config, &catalog("v1"))), ["10.2.0.1:80"]);
    assert!(t.config.clusters.iter().all(|c| c.name != catalog("v2")), "the root rule's v2 is not merged in");
}

#[test]
fn a_rule_in_istio_system_applies_mesh_wide_as_the_root_namespace() {
    let index = index(&["precedence.yaml"]);
    let t = run(&index, &sidecar(&index, "ops", "tool"));
    let search = cluster(&t.config, &cluster_name(80, "", SEARCH));
    assert_eq!(search.load_balancer, LoadBalancer::LeastRequest, "the exact host beats *.catalog.svc.cluster.local");
}

#[test]
fn rules_for_one_host_in_one_namespace_merge_with_the_oldest_policy_and_first_subset_definitions() {
    let index = index(&["precedence.yaml"]);
    let t = run(&index, &sidecar(&index, "ops", "tool"));
    let v1 = cluster(&t.config, &cluster_name(80, "v1", SEARCH));
    assert_eq!(addresses(v1), ["10.2.1.1:80"], "v1 from search-mesh-exact, not search-mesh-extra's");
    assert_eq!(v1.load_balancer, LoadBalancer::LeastRequest, "the older rule's policy");
    assert!(cluster(&t.config, &cluster_name(80, "canary", SEARCH)).endpoints.is_empty(), "canary merged in");
}

#[test]
fn a_mesh_with_its_own_root_namespace_keeps_istio_system_as_its_alias() {
    let mesh =
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {rootNamespace: mesh-admin}\n";
    let rule = |ns: &str, host: &str, lb: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: {ns}}}\n\
             spec: {{host: {host}, trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}}}\n"
        )
    };
    let services = std::fs::read_to_string(fixtures().join("precedence.yaml")).expect("fixture");
    let services: String = services.split("---").take(8).collect::<Vec<_>>().join("---");
    let rules = [
        rule("mesh-admin", CATALOG, "RANDOM"),
        rule("trellis-system", SEARCH, "LEAST_REQUEST"),
        rule("istio-system", SEARCH, "ROUND_ROBIN"),
    ];
    let text = format!("{services}---\n{mesh}{}", rules.concat());
    let index = Index::from_yaml_documents(&text).expect("valid YAML");
    let t = run(&index, &sidecar(&index, "ops", "tool"));
    assert_eq!(cluster(&t.config, &catalog("")).load_balancer, LoadBalancer::Random, "the Mesh's root namespace");
    let search = cluster(&t.config, &cluster_name(80, "", SEARCH));
    assert_eq!(search.load_balancer, LoadBalancer::RoundRobin, "istio-system, not the default trellis-system");
}

#[test]
fn a_service_exported_to_its_own_namespace_is_invisible_elsewhere() {
    let index = index(&["scope.yaml"]);
    let a = run(&index, &sidecar(&index, "team-a", "a-client"));
    let b = run(&index, &sidecar(&index, "team-b", "b-client"));
    assert!(has_vhost(&a.config, "private-svc.team-a.svc.cluster.local"));
    assert!(!has_vhost(&b.config, "private-svc.team-a.svc.cluster.local"));
    assert!(b.config.clusters.iter().all(|c| !c.service.starts_with("private-svc")));
}

#[test]
fn a_service_entry_exported_to_a_namespace_list_is_visible_only_there() {
    let index = index(&["scope.yaml"]);
    let a = run(&index, &sidecar(&index, "team-a", "a-client"));
    let b = run(&index, &sidecar(&index, "team-b", "b-client"));
    assert!(!has_vhost(&a.config, "partner.example.com"), "not even in its own namespace");
    assert_eq!(addresses(cluster(&b.config, &cluster_name(80, "", "partner.example.com"))), ["198.51.100.7:80"]);
}

#[test]
fn virtual_services_and_destination_rules_exported_to_their_namespace_apply_only_there() {
    let index = index(&["scope.yaml"]);
    let public = "public-svc.team-a.svc.cluster.local";
    let a = run(&index, &sidecar(&index, "team-a", "a-client"));
    assert_eq!(targets(&vhost(&a.config, public, 80).routes[0]), [(cluster_name(80, "v2", public).as_str(), 100)]);
    assert_eq!(cluster(&a.config, &cluster_name(80, "", public)).load_balancer, LoadBalancer::Random);
    let b = run(&index, &sidecar(&index, "team-b", "b-client"));
    let routes = &vhost(&b.config, public, 80).routes;
    assert_eq!(routes[0].name, format!("default/{public}"), "team-b gets the default route");
    assert_eq!(cluster(&b.config, &cluster_name(80, "", public)).load_balancer, LoadBalancer::PeakEwma);
    assert_eq!(
        vhost(&b.config, public, 80).domains,
        ["public-svc.team-a", "public-svc.team-a.svc", "public-svc.team-a.svc.cluster"]
    );
}

#[test]
fn translating_twice_gives_byte_identical_json() {
    let index = index(&["precedence.yaml", "scope.yaml"]);
    let proxy = sidecar(&index, "shop", "web");
    let first = serde_json::to_string(&translate(&index, &proxy).config).expect("serialize");
    let second = serde_json::to_string(&translate(&index, &proxy).config).expect("serialize");
    assert_eq!(first, second);
    let gateway = proxy_config_gateway(&index);
    assert!(gateway.gateway_listeners.is_empty(), "no Gateway selects it");
}

fn proxy_config_gateway(index: &Index) -> trellis_api::proxy_config::ProxyConfig {
    run(index, &proxy("istio-system", &[("istio", "ingressgateway")], ProxyMode::Gateway)).config
}

#[test]
fn a_destination_rule_selecting_the_client_beats_the_others_of_its_namespace() {
    let selected = |ns: &str, name: &str, lb: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{host: {CATALOG}, workloadSelector: {{matchLabels: {{app: web}}}}, \
             trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}}}\n"
        )
    };
    let base = std::fs::read_to_string(fixtures().join("precedence.yaml")).expect("fixture");
    let other_client = "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: admin, namespace: shop}\nspec: {address: 10.3.0.2, labels: {app: admin}}\n";
    let text = format!(
        "{base}{}{}{other_client}",
        selected("shop", "catalog-for-web", "RANDOM"),
        selected("catalog", "catalog-for-web-elsewhere", "ROUND_ROBIN")
    );
    let index = Index::from_yaml_documents(&text).expect("valid YAML");
    let web = run(&index, &sidecar(&index, "shop", "web"));
    assert_eq!(cluster(&web.config, &catalog("")).load_balancer, LoadBalancer::Random, "younger, but it selects web");
    let admin = run(&index, &sidecar(&index, "shop", "admin"));
    assert_eq!(cluster(&admin.config, &catalog("")).load_balancer, LoadBalancer::LeastRequest);
}
