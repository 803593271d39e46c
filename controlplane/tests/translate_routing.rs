//! Routing features: every kind of HTTP match, weights and subsets, rewrites, redirects, direct
//! responses, header edits, mirrors, timeouts, retries, faults; Kubernetes Services with EndpointSlices.

mod support;

use std::time::Duration;

use support::*;
use trellis_api::proxy_config::{
    Fault, FaultAbort, FaultDelay, Mirror, Protocol, RetryPolicy, Rewrite, Route, RouteAction, StringMatcher,
};
use trellis_controlplane::index::Kind;
use trellis_controlplane::translate::{DEFAULT_RETRY_ATTEMPTS, cluster_name, default_retries};

const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";

fn reviews(subset: &str) -> String {
    cluster_name(9080, subset, REVIEWS)
}

fn route<'r>(routes: &'r [Route], name: &str) -> &'r Route {
    routes.iter().find(|r| r.name.ends_with(&format!("#{name}"))).unwrap_or_else(|| {
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        panic!("no route {name}; have {names:?}")
    })
}

fn matches_routes() -> Vec<Route> {
    let index = index(&["kubernetes-shop.yaml", "routing-matches.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
    vhost(&t.config, REVIEWS, 9080).routes.clone()
}

#[test]
fn a_kubernetes_service_gets_a_cluster_of_its_ready_endpoint_slice_addresses() {
    let index = index(&["kubernetes-shop.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let all = cluster(&t.config, &reviews(""));
    assert_eq!(addresses(all), ["10.1.0.1:9080", "10.1.0.2:9080"], "the not-ready endpoint is left out");
    assert!(all.endpoints.iter().all(|e| e.meshed && e.identity == "spiffe://cluster.local/ns/shop/sa/reviews"));
    assert_eq!(addresses(cluster(&t.config, &reviews("v2"))), ["10.1.0.2:9080"], "subsets filter by label");
    let ratings = cluster(&t.config, &cluster_name(9080, "", RATINGS));
    assert_eq!(addresses(ratings), ["10.1.1.1:9081"], "the slice's port is the target port");
    assert!(!ratings.endpoints[0].meshed && ratings.endpoints[0].identity.is_empty(), "no proxy label: plain text");
}

#[test]
fn a_service_is_known_by_its_cluster_ip_and_every_name_a_client_in_its_namespace_uses() {
    let index = index(&["kubernetes-shop.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let host = vhost(&t.config, REVIEWS, 9080);
    assert_eq!(host.addresses, ["10.96.0.20"]);
    assert_eq!(host.domains, ["reviews", "reviews.shop", "reviews.shop.svc", "reviews.shop.svc.cluster"]);
    assert_eq!(host.protocol, Protocol::Http, "port name http");
}

#[test]
fn a_service_without_virtual_service_gets_istios_default_route() {
    let index = index(&["kubernetes-shop.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let routes = &vhost(&t.config, REVIEWS, 9080).routes;
    assert_eq!(routes.len(), 1);
    assert!(routes[0].matches.is_empty());
    assert_eq!(targets(&routes[0]), [(reviews("").as_str(), 100)]);
    assert_eq!(routes[0].retries, Some(default_retries()));
    assert_eq!(default_retries().attempts, DEFAULT_RETRY_ATTEMPTS);
}

#[test]
fn uri_exact_prefix_and_regex_matches_keep_their_kind() {
    let routes = matches_routes();
    assert_eq!(route(&routes, "health").matches[0].uri, Some(StringMatcher::Exact("/health".into())));
    assert_eq!(route(&routes, "jason").matches[0].uri, Some(StringMatcher::Prefix("/reviews".into())));
    let regex = &route(&routes, "regex-get").matches[0];
    assert_eq!(regex.uri, Some(StringMatcher::Regex("^/r/[0-9]+$".into())));
    assert_eq!(regex.method, Some(StringMatcher::Exact("GET".into())));
}

#[test]
fn header_matches_are_lower_cased_and_an_empty_match_means_present() {
    let routes = matches_routes();
    let jason = &route(&routes, "jason").matches[0];
    assert_eq!(jason.headers.get("end-user"), Some(&StringMatcher::Exact("jason".into())));
    assert_eq!(jason.headers.get("x-trace"), Some(&StringMatcher::Present));
    assert_eq!(targets(route(&routes, "jason")), [(reviews("v2").as_str(), 100)]);
}

#[test]
fn query_parameters_and_headers_that_must_be_absent_are_matched() {
    let routes = matches_routes();
    let query = &route(&routes, "query").matches[0];
    assert_eq!(query.query_params.get("debug"), Some(&StringMatcher::Exact("1".into())));
    assert_eq!(query.query_params.get("trace"), Some(&StringMatcher::Present));
    assert_eq!(query.without_headers.get("x-canary"), Some(&StringMatcher::Present));
}

#[test]
fn authority_scheme_and_case_insensitive_uri_matches_are_kept() {
    let routes = matches_routes();
    let m = &route(&routes, "authority").matches[0];
    assert_eq!(m.authority, Some(StringMatcher::Prefix("reviews".into())));
    assert_eq!(m.scheme, Some(StringMatcher::Exact("http".into())));
    assert!(m.ignore_uri_case);
}

#[test]
fn match_blocks_for_another_port_are_dropped_and_a_rule_left_without_blocks_is_left_out() {
    let routes = matches_routes();
    let ports = route(&routes, "ports");
    assert_eq!(ports.matches.len(), 1, "the block for port 9999 is dropped");
    assert_eq!(ports.matches[0].uri, Some(StringMatcher::Prefix("/port".into())));
    assert!(routes.iter().all(|r| !r.name.ends_with("#other-port-only")));
}

#[test]
fn source_labels_and_namespace_are_resolved_for_the_calling_workload() {
    let routes = matches_routes();
    let mine = route(&routes, "from-productpage");
    assert!(mine.matches[0].source_labels.is_empty(), "resolved by the control plane");
    assert_eq!(mine.matches[0].uri, Some(StringMatcher::Prefix("/from-pp".into())));
    assert!(routes.iter().all(|r| !r.name.ends_with("#from-others") && !r.name.ends_with("#from-other-namespace")));
}

#[test]
fn routes_keep_the_virtual_service_order_and_a_weighted_split_keeps_its_weights() {
    let routes = matches_routes();
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "shop/reviews#health",
            "shop/reviews#jason",
            "shop/reviews#regex-get",
            "shop/reviews#query",
            "shop/reviews#authority",
            "shop/reviews#ports",
            "shop/reviews#from-productpage",
            "shop/reviews#split"
        ]
    );
    assert_eq!(targets(route(&routes, "split")), [(reviews("v1").as_str(), 75), (reviews("v2").as_str(), 25)]);
    assert_eq!(route(&routes, "health").action, RouteAction::DirectResponse { status: 200, body: "ok".into() });
}

fn actions() -> (Vec<Route>, trellis_controlplane::Translation) {
    let index = index(&["kubernetes-shop.yaml", "routing-actions.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    (vhost(&t.config, RATINGS, 9080).routes.clone(), t)
}

fn ratings() -> String {
    cluster_name(9080, "", RATINGS)
}

#[test]
fn uri_and_authority_rewrites_are_forwarded_with_the_route() {
    let (routes, _) = actions();
    let RouteAction::Forward { rewrite, .. } = &route(&routes, "rewrite").action else { panic!("forward") };
    assert_eq!(
        rewrite,
        &Some(Rewrite { uri: Some("/v2/".into()), uri_regex: None, authority: Some("ratings.internal".into()) })
    );
}

#[test]
fn a_regex_rewrite_uses_the_proxys_group_syntax() {
    let (routes, _) = actions();
    let RouteAction::Forward { rewrite, .. } = &route(&routes, "regex-rewrite").action else { panic!("forward") };
    let expected = Some(("^/old/(.*)$".to_owned(), "/new/${1}".to_owned()));
    assert_eq!(rewrite.as_ref().and_then(|r| r.uri_regex.clone()), expected);
}

#[test]
fn a_redirect_keeps_its_parts_and_derives_the_port_from_the_scheme() {
    let (routes, _) = actions();
    assert_eq!(
        route(&routes, "redirect").action,
        RouteAction::Redirect {
            uri: Some("/here".into()),
            authority: Some("example.com".into()),
            scheme: Some("https".into()),
            port: Some(443),
            status: 302,
        }
    );
}

#[test]
fn a_prefix_redirect_is_left_out_with_its_reason() {
    let (routes, t) = actions();
    assert!(routes.iter().all(|r| !r.name.ends_with("#prefix-redirect")));
    let about = skipped_about(&t, Kind::VirtualService, "shop", "ratings");
    assert_eq!(about.len(), 1, "{about:?}");
    assert!(about[0].starts_with("spec.http[3].redirect.prefixRewrite: "), "{about:?}");
}

#[test]
fn a_direct_response_body_given_as_bytes_is_decoded() {
    let (routes, _) = actions();
    assert_eq!(route(&routes, "teapot").action, RouteAction::DirectResponse { status: 418, body: "hello".into() });
}

#[test]
fn header_edits_apply_to_the_route_and_to_each_destination() {
    let (routes, _) = actions();
    let headers = route(&routes, "headers");
    assert_eq!(headers.request_headers.set.get("x-env").map(String::as_str), Some("prod"));
    assert_eq!(headers.request_headers.add.get("x-added").map(String::as_str), Some("1"));
    assert_eq!(headers.request_headers.remove, ["x-internal"]);
    assert_eq!(headers.response_headers.set.get("x-served-by").map(String::as_str), Some("trellis"));
    let RouteAction::Forward { clusters, .. } = &headers.action else { panic!("forward") };
    assert_eq!(clusters[0].request_headers.set.get("x-target").map(String::as_str), Some("primary"));
    assert_eq!(targets(headers), [(ratings().as_str(), 60), (reviews("v1").as_str(), 40)], "across services");
}

#[test]
fn mirrors_copy_the_given_share_or_everything() {
    let (routes, _) = actions();
    assert_eq!(route(&routes, "mirror").mirrors, [Mirror { cluster: reviews(""), percentage: 50.0 }]);
    assert_eq!(
        route(&routes, "mirrors").mirrors,
        [Mirror { cluster: reviews("v1"), percentage: 100.0 }, Mirror { cluster: reviews("v2"), percentage: 5.0 }]
    );
}

#[test]
fn timeouts_and_retries_are_translated_and_zero_attempts_turn_retries_off() {
    let (routes, _) = actions();
    let resilient = route(&routes, "resilient");
    assert_eq!(resilient.timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        resilient.retries,
        Some(RetryPolicy {
            attempts: 3,
            per_try_timeout: Some(Duration::from_secs(1)),
            retry_on: vec!["5xx".into(), "reset".into()],
            backoff: None,
            allow_previous_hosts: false,
            remote_localities: false,
        })
    );
    assert_eq!(route(&routes, "no-retries").retries, None);
    assert_eq!(route(&routes, "rewrite").retries, Some(default_retries()), "Istio's default when unset");
}

#[test]
fn faults_delay_and_abort_the_given_shares() {
    let (routes, _) = actions();
    assert_eq!(
        route(&routes, "faults").fault,
        Some(Fault {
            delay: Some(FaultDelay { fixed_delay: Duration::from_secs(5), percentage: 10.0 }),
            abort: Some(FaultAbort { http_status: Some(503), grpc_status: None, percentage: 50.0 }),
        })
    );
}

#[test]
fn the_inbound_listener_resolves_a_named_target_port_through_the_proxys_own_pod() {
    let index = index(&["kubernetes-shop.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let ports: Vec<(u16, Protocol)> = t.config.inbound.iter().map(|l| (l.port, l.protocol)).collect();
    assert_eq!(ports, [(9081, Protocol::Http)], "targetPort web is the pod's container port 9081");
    let mut anonymous = sidecar(&index, "shop", "productpage-v1");
    anonymous.addresses.clear();
    let t = run(&index, &anonymous);
    assert!(t.config.inbound.is_empty());
    let about = skipped_about(&t, Kind::Service, "shop", "productpage");
    assert_eq!(
        about,
        ["spec.ports[0]: the proxy's workload has no port named \"web\"; port 9080 gets no inbound listener"]
    );
}

#[test]
fn the_version_changes_exactly_when_the_config_does() {
    let mut index = index(&["kubernetes-shop.yaml"]);
    let proxy = sidecar(&index, "shop", "productpage-v1");
    let before = run(&index, &proxy).config.version;
    assert_eq!(run(&index, &proxy).config.version, before);
    let extra = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: shop}\nspec: {address: 10.9.9.9, labels: {app: reviews, version: v1}}\n";
    index.apply_all(trellis_controlplane::index::load::yaml("extra.yaml", extra).changes);
    let after = run(&index, &proxy);
    assert_ne!(after.config.version, before);
    assert_eq!(
        addresses(cluster(&after.config, &reviews("v1"))),
        ["10.1.0.1:9080", "10.9.9.9:9080"],
        "Services select WorkloadEntries too"
    );
}

#[test]
fn a_sidecars_shared_side_hands_each_cluster_to_a_sink_once_and_they_are_the_clusters_translate_collects() {
    let index = index(&["kubernetes-shop.yaml", "dangling.yaml"]);
    let proxy = sidecar(&index, "shop", "productpage-v1");
    let whole = run(&index, &proxy);
    let mut handed = Vec::new();
    let sections =
        trellis_controlplane::translate::sidecar_shared_into(&index, &proxy, &mut |cluster| handed.push(cluster));
    let mut names: Vec<&str> = handed.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "a cluster went to the sink twice: {names:?}");
    handed.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(handed.iter().any(|c| c.endpoints.is_empty()), "the dangling destination's empty cluster is handed on too");
    assert_eq!(handed, whole.config.clusters);
    assert_eq!(sections.outbound, whole.config.outbound);
}
