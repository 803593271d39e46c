//! The explain function on the tutorial (examples/tutorial with its local-mode workloads) and on a small
//! shop with every kind of route, translated and routed as the proxy would.

use std::path::{Path, PathBuf};

use trellis_api::proxy_config::ProxyMode;

use super::model::{MatchedBy, Origin, Outcome};
use super::trace::origin;
use super::*;

const SHIPPING: &str = "shipping-service.default.svc.cluster.local";
const REVIEWS: &str = "reviews.shop.svc.cluster.local";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tutorial() -> Index {
    load_index(&[fixture("tutorial")]).expect("the tutorial loads")
}

fn shop() -> Index {
    load_index(&[fixture("shop")]).expect("the shop loads")
}

fn sidecar(from: &str) -> Source {
    Source::parse(from, ProxyMode::Sidecar).expect("source")
}

fn get(url: &str) -> Request {
    Request::parse("GET", url, &[]).expect("request")
}

fn explain(index: &Index, from: &str, request: &Request) -> Explanation {
    offline(index, &sidecar(from), request).expect("explains")
}

/// `(cluster, percent)` of the chosen route's destinations.
fn split(e: &Explanation) -> Vec<(String, f64)> {
    let route = e.route.as_ref().expect("a route matched");
    route.destinations.iter().map(|d| (d.cluster.clone(), d.percent)).collect()
}

/// The text form with runs of spaces as one, so checks do not depend on column widths.
fn text_of(e: &Explanation) -> String {
    let text = render::text(e);
    text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

fn route_name(e: &Explanation) -> &str {
    &e.route.as_ref().expect("a route matched").name
}

#[test]
fn the_shipping_split_shows_both_subsets_with_ninety_and_ten_percent() {
    let e = explain(&tutorial(), "default/booking-v1", &get("http://shipping-service/api/v1/shipping"));
    assert_eq!(e.outcome, Outcome::Routed);
    assert_eq!(split(&e), [(format!("outbound|80|v1|{SHIPPING}"), 90.0), (format!("outbound|80|v2|{SHIPPING}"), 10.0)]);
    let route = e.route.as_ref().expect("route");
    assert_eq!(
        route.origin,
        Origin::VirtualService {
            namespace: "default".into(),
            name: "shipping-service".into(),
            rule: Some(0),
            rule_name: None
        }
    );
    let vhost = e.virtual_host.as_ref().expect("virtual host");
    assert_eq!((vhost.name.as_str(), vhost.port), (SHIPPING, 80));
    assert_eq!(vhost.matched_by, MatchedBy::Domain("shipping-service".into()));
    let endpoints: Vec<(String, String)> = e
        .clusters
        .iter()
        .flat_map(|c| c.endpoints.iter().map(|ep| (c.subset.clone(), ep.address.to_string())))
        .collect();
    assert_eq!(endpoints, [("v1".into(), "127.0.1.3:8080".into()), ("v2".into(), "127.0.1.4:8080".into())]);
    assert_eq!(e.clusters[1].endpoints[0].labels.get("version").map(String::as_str), Some("v2"));
    assert!(e.skipped.is_empty(), "{:?}", e.skipped);
}

#[test]
fn a_service_without_virtual_service_takes_the_default_route_with_its_destination_rule() {
    let e = explain(&tutorial(), "default/booking-v1", &get("http://inventory-service.default/items"));
    let route = e.route.as_ref().expect("route");
    let host = "inventory-service.default.svc.cluster.local";
    assert_eq!(route.origin, Origin::Default { host: host.into() });
    assert!(route.retries.is_some(), "Istio's default retries");
    assert_eq!(split(&e), [(format!("outbound|80||{host}"), 100.0)]);
    let pool = e.clusters[0].connection_pool.as_ref().expect("the circuit breaker's limits");
    assert_eq!(pool.max_connections, Some(1));
    assert!(e.clusters[0].outlier_detection.is_some());
    let text = text_of(&e);
    assert!(text.contains("Istio's default route"), "{text}");
    assert!(text.contains("max connections 1"), "{text}");
}

#[test]
fn a_header_match_picks_the_route_that_names_it() {
    let index = shop();
    let with = Request::parse("GET", "http://reviews:9080/", &["end-user: jason".into()]).expect("request");
    let e = explain(&index, "shop/productpage-v1", &with);
    assert_eq!(route_name(&e), "shop/reviews#jason");
    assert_eq!(split(&e), [(format!("outbound|9080|v2|{REVIEWS}"), 100.0)]);
    let route = e.route.as_ref().expect("route");
    assert_eq!(
        route.origin,
        Origin::VirtualService {
            namespace: "shop".into(),
            name: "reviews".into(),
            rule: Some(0),
            rule_name: Some("jason".into())
        }
    );
    assert_eq!(route.matched_block, Some(0));
    assert!(text_of(&e).contains(r#"header end-user = "jason""#));

    let other = Request::parse("GET", "http://reviews:9080/v3/list", &["end-user: alice".into()]).expect("request");
    let e = explain(&index, "shop/productpage-v1", &other);
    assert_eq!(route_name(&e), "shop/reviews#1");
    assert_eq!(split(&e), [(format!("outbound|9080|v3|{REVIEWS}"), 100.0)]);
}

#[test]
fn the_match_block_that_fired_is_named_and_the_rewrite_applied() {
    let e = explain(&shop(), "shop/productpage-v1", &get("http://reviews:9080/three/stars?x=1"));
    let route = e.route.as_ref().expect("route");
    assert_eq!(route.matched_block, Some(1), "the second block (/three/) matched");
    assert_eq!(route.blocks, 2);
    assert_eq!(route.rewritten_path.as_deref(), Some("/stars"));
    assert_eq!(route.timeout.as_deref(), Some("2s"));
    let retries = route.retries.as_ref().expect("retries");
    assert_eq!(retries.attempts, 3);
    let text = text_of(&e);
    assert!(text.contains("block 2 of 2: uri starts with \"/three/\""), "{text}");
    assert!(text.contains("rewrite path: /stars"), "{text}");
}

#[test]
fn a_request_no_route_matches_gets_404_and_lists_the_routes_tried() {
    let e = explain(&shop(), "shop/productpage-v1", &get("http://reviews:9080/elsewhere"));
    assert_eq!(e.outcome, Outcome::NoRoute);
    assert_eq!(e.local_response.as_ref().map(|l| l.status), Some(404));
    assert_eq!(
        e.routes_tried,
        ["shop/reviews#jason", "shop/reviews#1", "shop/reviews#moved", "shop/reviews#teapot", "shop/reviews#mirrored"]
    );
    assert!(!e.outcome.is_routed());
}

#[test]
fn redirects_and_direct_responses_are_answered_by_the_proxy() {
    let index = shop();
    let e = explain(&index, "shop/productpage-v1", &get("http://reviews:9080/old?page=2"));
    let route = e.route.as_ref().expect("route");
    assert_eq!(route.redirect.as_deref(), Some("http://reviews:9080/new?page=2"));
    assert_eq!(e.local_response.as_ref().map(|l| l.status), Some(302));
    assert!(e.clusters.is_empty());

    let get_teapot = explain(&index, "shop/productpage-v1", &get("http://reviews:9080/teapot"));
    assert_eq!(get_teapot.outcome, Outcome::NoRoute, "the teapot answers POST only");
    let post = Request::parse("post", "http://reviews:9080/teapot", &[]).expect("request");
    let e = explain(&index, "shop/productpage-v1", &post);
    assert_eq!(e.local_response.as_ref().map(|l| l.status), Some(418));
    assert_eq!(e.route.as_ref().and_then(|r| r.direct_body.as_deref()), Some("short and stout"));
}

#[test]
fn weights_mirrors_faults_and_header_edits_are_shown_with_every_cluster_they_reach() {
    let e = explain(&shop(), "shop/productpage-v1", &get("http://reviews.shop:9080/mirror"));
    let percents: Vec<String> = split(&e).iter().map(|(_, p)| format!("{p:.1}")).collect();
    assert_eq!(percents, ["66.7", "33.3"]);
    let route = e.route.as_ref().expect("route");
    assert_eq!(route.mirrors.len(), 1);
    assert_eq!(route.mirrors[0].percentage, 25.0);
    assert_eq!(route.fault.as_ref().and_then(|f| f.abort.as_ref()).and_then(|a| a.http_status), Some(503));
    assert_eq!(route.request_headers.set.get("x-shop").map(String::as_str), Some("mirrored"));
    let subsets: Vec<&str> = e.clusters.iter().map(|c| c.subset.as_str()).collect();
    assert_eq!(subsets, ["v1", "v2", "v3"], "destinations, then the mirror");
    let text = text_of(&e);
    for needle in ["66.7%", "33.3%", "mirror:", "fault abort: HTTP 503 for 5% of requests", "set x-shop: mirrored"] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
}

#[test]
fn an_unknown_host_has_no_virtual_host_and_passes_through_or_is_refused() {
    let e = explain(&tutorial(), "default/booking-v1", &get("http://payments/api"));
    assert_eq!(e.outcome, Outcome::Passthrough);
    assert!(e.virtual_host.is_none());
    assert!(text_of(&e).contains("no virtual host for payments:80 -> passthrough"));

    let strict = load_index(&[fixture("tutorial"), fixture("registry-only.yaml")]).expect("loads");
    let e = explain(&strict, "default/booking-v1", &get("http://payments/api"));
    assert_eq!(e.outcome, Outcome::Refused);
    assert_eq!(e.local_response.as_ref().map(|l| l.status), Some(502));
}

#[test]
fn a_known_host_on_another_port_has_no_virtual_host() {
    let e = explain(&tutorial(), "default/booking-v1", &get("http://shipping-service:8080/"));
    assert_eq!(e.outcome, Outcome::Passthrough);
}

#[test]
fn a_service_address_finds_its_virtual_host() {
    let e = explain(&shop(), "shop/productpage-v1", &get("http://10.96.0.20:9080/v3/x"));
    let vhost = e.virtual_host.as_ref().expect("virtual host");
    assert_eq!(vhost.name, REVIEWS);
    assert_eq!(vhost.matched_by, MatchedBy::Address("10.96.0.20".into()));
}

#[test]
fn an_opaque_port_forwards_the_connection_without_http_routes() {
    let e = explain(&shop(), "shop/productpage-v1", &get("http://db:5432/"));
    assert_eq!(e.outcome, Outcome::Tcp);
    assert!(e.route.is_none());
    assert_eq!(e.tcp.len(), 1);
    assert_eq!(e.tcp[0].percent, 100.0);
    assert_eq!(e.clusters[0].endpoints[0].address.to_string(), "127.0.2.6:5432");
}

#[test]
fn the_ingress_gateway_routes_the_booking_prefix_to_booking_service() {
    let index = tutorial();
    let gateway = Source::parse("istio-system/ingressgateway", ProxyMode::Gateway).expect("source");
    let e = offline(&index, &gateway, &get("http://shop.example.com/api/v1/booking")).expect("explains");
    assert_eq!(e.listener, Some(80));
    assert_eq!(route_name(&e), "default/booking#0");
    assert_eq!(split(&e), [("outbound|8080||booking-service.default.svc.cluster.local".into(), 100.0)]);
    assert_eq!(e.virtual_host.as_ref().map(|v| v.matched_by.clone()), Some(MatchedBy::Wildcard("*".into())));

    let e = offline(&index, &gateway, &get("http://shop.example.com/other")).expect("explains");
    assert_eq!(e.outcome, Outcome::NoRoute);
    let e = offline(&index, &gateway, &get("http://shop.example.com:8443/api/v1/booking")).expect("explains");
    assert_eq!(e.outcome, Outcome::NoListener);
    assert_eq!(e.listeners, [80]);
}

#[test]
fn an_unknown_workload_is_an_error_naming_the_workloads_there_are() {
    let err = offline(&tutorial(), &sidecar("default/payments-v1"), &get("http://shipping-service/"))
        .expect_err("no such workload");
    let message = err.to_string();
    assert!(message.contains("no Pod or WorkloadEntry default/payments-v1"), "{message}");
    assert!(message.contains("default/booking-v1 (WorkloadEntry)"), "{message}");
    assert!(message.contains("istio-system/ingressgateway"), "{message}");
}

#[test]
fn naming_the_gateway_object_instead_of_its_workload_says_which_workload_it_selects() {
    let gateway = Source::parse("default/booking-gateway", ProxyMode::Gateway).expect("source");
    let err = offline(&tutorial(), &gateway, &get("http://shop/")).expect_err("not a workload");
    let message = err.to_string();
    assert!(message.contains("not the Gateway object default/booking-gateway"), "{message}");
    assert!(message.contains("it selects: istio-system/ingressgateway"), "{message}");
}

#[test]
fn invalid_policy_is_named_in_the_notes_and_the_rest_still_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: default}\n\
               spec:\n  hosts: [inventory-service]\n  http:\n    - route: [{destination: {host: inventory-service}, weight: 0}]\n      \
               match: [{uri: {regex: \"([\"}}]\n";
    std::fs::write(dir.path().join("broken.yaml"), bad).expect("write");
    let index = load_index(&[fixture("tutorial"), dir.path().to_owned()]).expect("loads");
    let e = explain(&index, "default/booking-v1", &get("http://shipping-service/"));
    assert_eq!(e.outcome, Outcome::Routed);
    assert!(e.skipped.iter().any(|s| s.starts_with("VirtualService default/broken")), "{:?}", e.skipped);
}

#[test]
fn unreadable_input_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.yaml"), "kind: [unclosed\n").expect("write");
    let err = load_index(&[dir.path().to_owned()]).expect_err("bad YAML");
    assert!(format!("{err:#}").contains("bad.yaml"), "{err:#}");
    let err = load_index(&[dir.path().join("missing.yaml")]).expect_err("no file");
    assert!(format!("{err:#}").contains("missing.yaml"), "{err:#}");
}

#[test]
fn route_names_trace_back_to_their_rule_without_the_policy_at_hand() {
    assert_eq!(
        origin("shop/reviews#2", None),
        Origin::VirtualService { namespace: "shop".into(), name: "reviews".into(), rule: Some(2), rule_name: None }
    );
    assert_eq!(
        origin("shop/reviews#jason", None),
        Origin::VirtualService {
            namespace: "shop".into(),
            name: "reviews".into(),
            rule: None,
            rule_name: Some("jason".into())
        }
    );
    assert_eq!(
        origin("default/reviews.shop.svc.cluster.local", None),
        Origin::Default { host: "reviews.shop.svc.cluster.local".into() }
    );
    assert_eq!(
        origin("istio-system/gw#servers[1].tls.httpsRedirect", None),
        Origin::HttpsRedirect { namespace: "istio-system".into(), name: "gw".into(), server: 1 }
    );
    assert_eq!(origin("something", None), Origin::Unknown);
}

#[test]
fn a_request_takes_its_host_port_path_and_query_from_the_url() {
    let r = Request::parse("get", "http://Reviews:9080/api/v1?x=1", &["End-User: jason".into()]).expect("parses");
    assert_eq!((r.method.as_str(), r.host.as_str(), r.port), ("GET", "Reviews", 9080));
    assert_eq!((r.path.as_str(), r.query.as_deref()), ("/api/v1", Some("x=1")));
    assert_eq!(r.headers.get("host").and_then(|v| v.to_str().ok()), Some("Reviews:9080"));
    assert_eq!(r.headers.get("end-user").and_then(|v| v.to_str().ok()), Some("jason"));
    let r = Request::parse("GET", "booking-service", &[]).expect("a bare host means http");
    assert_eq!((r.port, r.path.as_str()), (80, "/"));
    assert_eq!(Request::parse("GET", "https://db/", &[]).expect("https").port, 443);
    let r = Request::parse("GET", "http://[fd00::1]:8080/", &[]).expect("IPv6");
    assert_eq!((r.host.as_str(), r.port), ("fd00::1", 8080));
}

#[test]
fn bad_request_arguments_are_errors_naming_the_argument() {
    let err = Request::parse("GET", "http://a/", &["no-colon".into()]).expect_err("bad header");
    assert!(err.contains("--header \"no-colon\" is not NAME:VALUE"), "{err}");
    let err = Request::parse("GET", "http://a/", &["host: b".into()]).expect_err("host header");
    assert!(err.contains("the host comes from the URL"), "{err}");
    let err = Request::parse("G E T", "http://a/", &[]).expect_err("bad method");
    assert!(err.contains("--method"), "{err}");
    let err = Request::parse("GET", "ftp://a/", &[]).expect_err("bad scheme");
    assert!(err.contains("scheme \"ftp\""), "{err}");
    assert!(Source::parse("a/b/c", ProxyMode::Sidecar).is_err());
    assert_eq!(sidecar("booking-v1").namespace, DEFAULT_NAMESPACE);
}

#[test]
fn the_json_form_carries_the_outcome_route_origin_and_percentages() {
    let e = explain(&tutorial(), "default/booking-v1", &get("http://shipping-service/"));
    let json = serde_json::to_value(&e).expect("serializes");
    assert_eq!(json["outcome"], "routed");
    assert_eq!(json["route"]["origin"]["kind"], "virtualService");
    assert_eq!(json["route"]["origin"]["rule"], 0);
    assert_eq!(json["route"]["destinations"][0]["percent"], 90.0);
    assert_eq!(json["virtualHost"]["matchedBy"]["kind"], "domain");
    assert_eq!(json["clusters"][0]["endpoints"][0]["address"], "127.0.1.3:8080");
}

#[test]
fn explain_names_the_authorization_policy_that_denies_a_booking_without_a_jwt() {
    let booking = "booking-service.default.svc.cluster.local";
    let e = explain(&tutorial(), "default/shipping-v1", &get(&format!("http://{booking}:8080/api/v1/booking")));
    assert_eq!(e.outcome, Outcome::Routed);
    let authz = e.authorization.as_ref().expect("the destination's verdict");
    assert!(!authz.allowed, "require-jwt allows only a JWT principal: {authz:?}");
    assert!(authz.workload.starts_with("default/booking"), "{authz:?}");
    assert_eq!(authz.policy, None, "no ALLOW policy matched, so none decided: {authz:?}");
    assert!(text_of(&e).contains("authorization: at default/booking"), "{}", text_of(&e));
    assert!(text_of(&e).contains("denied (403 RBAC: access denied)"), "{}", text_of(&e));
}

#[test]
fn explain_names_the_deny_policy_and_rule_that_decide() {
    let extra = tempfile::tempdir().expect("tempdir");
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                metadata: {name: no-shipping-calls, namespace: default}\n\
                spec:\n  action: DENY\n  rules:\n    - to: [{operation: {methods: [POST]}}]\n\
                \x20   - from: [{source: {principals: [cluster.local/ns/default/sa/shipping]}}]\n";
    std::fs::write(extra.path().join("deny.yaml"), deny).expect("write the policy");
    let index = load_index(&[fixture("tutorial"), extra.path().to_owned()]).expect("loads");
    let e = explain(&index, "default/shipping-v1", &get("http://booking-service:8080/api/v1/booking"));
    let authz = e.authorization.as_ref().expect("the destination's verdict");
    assert!(!authz.allowed);
    assert_eq!((authz.policy.as_deref(), authz.rule), (Some("default/no-shipping-calls"), Some(1)), "{authz:?}");
    assert!(authz.reason.contains("DENY"), "{authz:?}");
}

#[test]
fn explain_names_the_rate_limit_rule_a_request_counts_against_at_the_destination() {
    let extra = tempfile::tempdir().expect("tempdir");
    let limit = "apiVersion: trellis.dev/v1alpha1\nkind: RateLimitPolicy\n\
                 metadata: {name: booking-writes, namespace: default}\n\
                 spec:\n  selector: {matchLabels: {app: booking-service}}\n  rules:\n\
                 \x20   - match: {methods: [POST]}\n      tokenBucket: {maxTokens: 5, tokensPerFill: 5, fillInterval: 1s}\n\
                 \x20   - tokenBucket: {maxTokens: 100, tokensPerFill: 10, fillInterval: 100ms}\n      perSource: true\n";
    std::fs::write(extra.path().join("limit.yaml"), limit).expect("write the policy");
    let index = load_index(&[fixture("tutorial"), extra.path().to_owned()]).expect("loads");
    let e = explain(&index, "default/shipping-v1", &get("http://booking-service:8080/api/v1/booking"));
    let authz = e.authorization.as_ref().expect("the destination's verdict");
    let limit = authz.rate_limit.as_ref().expect("a GET falls under the second rule");
    assert_eq!((limit.policy.as_str(), limit.rule), ("default/booking-writes", 1), "{limit:?}");
    assert_eq!(limit.bucket, "100 tokens, +10 every 100ms, per source");
    assert!(
        text_of(&e).contains("rate limit: RateLimitPolicy default/booking-writes rules[1]: 100 tokens"),
        "{}",
        text_of(&e)
    );

    let post = Request::parse("POST", "http://booking-service:8080/api/v1/booking", &[]).expect("request");
    let e = explain(&index, "default/shipping-v1", &post);
    let limit = e.authorization.as_ref().and_then(|a| a.rate_limit.as_ref()).expect("a POST falls under the first");
    assert_eq!((limit.rule, limit.bucket.as_str(), limit.status_code), (0, "5 tokens, +5 every 1s", 429));
}
