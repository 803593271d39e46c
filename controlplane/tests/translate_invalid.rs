//! Invalid objects are skipped with a reason naming the object and the field, and leave everything else
//! exactly as it would be without them; destinations that do not resolve fail alone (503), as in Istio.

mod support;

use support::*;
use trellis_api::proxy_config::ProxyMode;
use trellis_controlplane::index::Kind;
use trellis_controlplane::translate::cluster_name;

const REVIEWS: &str = "reviews.shop.svc.cluster.local";

#[test]
fn each_invalid_object_is_reported_with_its_kind_name_field_and_reason() {
    let index = index(&["kubernetes-shop.yaml", "invalid.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let regex = skipped_about(&t, Kind::VirtualService, "shop", "broken-regex");
    assert_eq!(regex.len(), 1, "{regex:?}");
    assert!(
        regex[0].starts_with(
            "spec.http[0].match[0].uri.regex: invalid, the whole object is ignored: invalid regular expression"
        ),
        "{regex:?}"
    );
    let typo = skipped_about(&t, Kind::VirtualService, "shop", "typo");
    assert_eq!(typo.len(), 1, "{typo:?}");
    assert!(typo[0].starts_with("spec.htttp: invalid, the whole object is ignored: unknown field `htttp`"), "{typo:?}");
    let duration = skipped_about(&t, Kind::DestinationRule, "shop", "bad-duration");
    assert!(duration.iter().any(|s| s.starts_with("spec.trafficPolicy.outlierDetection.interval: ")), "{duration:?}");
    let version = skipped_about(&t, Kind::Gateway, "shop", "future");
    assert!(
        version.iter().any(|s| s.starts_with("apiVersion: invalid, the whole object is ignored: version v1alpha9"))
    );
    let shown: Vec<String> = t.skipped.iter().map(ToString::to_string).collect();
    assert!(shown.iter().any(|s| s.starts_with("VirtualService shop/typo: spec.htttp: ")), "{shown:?}");
}

#[test]
fn invalid_objects_change_nothing_else_in_any_proxys_config() {
    let with = index(&["kubernetes-shop.yaml", "routing-matches.yaml", "invalid.yaml"]);
    let without = index(&["kubernetes-shop.yaml", "routing-matches.yaml"]);
    let proxies = [
        sidecar(&with, "shop", "productpage-v1"),
        sidecar(&with, "shop", "reviews-v1"),
        proxy("istio-system", &[("istio", "ingressgateway")], ProxyMode::Gateway),
    ];
    for proxy in &proxies {
        assert_eq!(run(&with, proxy).config, run(&without, proxy).config, "for {}", proxy.id);
    }
}

#[test]
fn a_route_to_an_undefined_subset_fails_alone_and_is_reported() {
    let index = index(&["kubernetes-shop.yaml", "dangling.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let routes = &vhost(&t.config, REVIEWS, 9080).routes;
    assert_eq!(routes.len(), 4, "Istio keeps the route; its requests fail with 503");
    let v9 = cluster_name(9080, "v9", REVIEWS);
    assert_eq!(targets(&routes[0]), [(v9.as_str(), 100)]);
    assert!(cluster(&t.config, &v9).endpoints.is_empty(), "an empty cluster: 503");
    assert_eq!(targets(&routes[3]), [(cluster_name(9080, "v1", REVIEWS).as_str(), 90), (v9.as_str(), 10)]);
    assert_eq!(addresses(cluster(&t.config, &cluster_name(9080, "v1", REVIEWS))), ["10.1.0.1:9080"]);
    let about = skipped_about(&t, Kind::VirtualService, "shop", "reviews");
    let expected = "subset \"v9\" of host reviews.shop.svc.cluster.local is not defined by DestinationRule \
                    shop/reviews (it defines: v1, v2); requests routed to it fail with 503";
    assert!(about.contains(&format!("spec.http[0].route[0].destination.subset: {expected}")), "{about:?}");
    assert!(about.contains(&format!("spec.http[3].route[1].destination.subset: {expected}")), "{about:?}");
}

#[test]
fn a_route_to_an_unknown_host_or_port_fails_alone_and_is_reported() {
    let index = index(&["kubernetes-shop.yaml", "dangling.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    let routes = &vhost(&t.config, REVIEWS, 9080).routes;
    let nowhere = cluster_name(9080, "", "nowhere.shop.svc.cluster.local");
    assert_eq!(targets(&routes[1]), [(nowhere.as_str(), 100)]);
    assert!(cluster(&t.config, &nowhere).endpoints.is_empty());
    assert_eq!(targets(&routes[2]), [(cluster_name(1234, "", REVIEWS).as_str(), 100)]);
    let about = skipped_about(&t, Kind::VirtualService, "shop", "reviews");
    assert!(about.contains(&"spec.http[1].route[0].destination.host: host nowhere.shop.svc.cluster.local is not a service visible in namespace shop; requests routed to it fail with 503".to_owned()), "{about:?}");
    assert!(about.contains(&"spec.http[2].route[0].destination.port: service reviews.shop.svc.cluster.local has no port 1234 (its ports: 9080); requests routed to it fail with 503".to_owned()), "{about:?}");
    assert_eq!(about.len(), 4, "{about:?}");
    let ratings = vhost(&t.config, "ratings.shop.svc.cluster.local", 9080);
    assert_eq!(ratings.routes[0].name, "default/ratings.shop.svc.cluster.local", "other hosts are untouched");
}

#[test]
fn a_service_resolved_by_dns_is_reported_and_left_to_unknown_destination_handling() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: google, namespace: shop}
spec:
  hosts: [www.google.com]
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-google, namespace: shop}
spec:
  hosts: [search.example.com]
  http:
    - route: [{destination: {host: www.google.com, port: {number: 443}}}]
"#;
    let shop = std::fs::read_to_string(fixtures().join("kubernetes-shop.yaml")).expect("fixture");
    let index = trellis_controlplane::Index::from_yaml_documents(&format!("{shop}---{text}")).expect("valid");
    let t = run(&index, &sidecar(&index, "shop", "productpage-v1"));
    assert!(!has_vhost(&t.config, "www.google.com"));
    let entry = skipped_about(&t, Kind::ServiceEntry, "shop", "google");
    assert_eq!(
        entry,
        [
            "spec.resolution: host www.google.com is resolved by DNS, which clusters cannot express yet; its traffic is handled as an unknown destination"
        ]
    );
    let route = skipped_about(&t, Kind::VirtualService, "shop", "to-google");
    assert_eq!(route.len(), 1, "{route:?}");
    assert!(route[0].starts_with("spec.http[0].route[0].destination.host: host www.google.com is resolved by DNS"));
    let search = vhost(&t.config, "search.example.com", 80);
    assert_eq!(targets(&search.routes[0]), [(cluster_name(443, "", "www.google.com").as_str(), 100)]);
    assert!(cluster(&t.config, &cluster_name(443, "", "www.google.com")).endpoints.is_empty());
}
