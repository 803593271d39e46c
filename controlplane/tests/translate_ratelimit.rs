//! RateLimitPolicy on a sidecar's inbound ports: which policies apply (selector, namespace, root
//! namespace), in which order the proxy tries their rules, and what an invalid policy becomes.

mod support;

use std::time::Duration;

use support::*;
use trellis_api::proxy_config::{INBOUND_CATCH_ALL_PORT, RateLimit};
use trellis_controlplane::Index;
use trellis_controlplane::index::Kind;

const LIMITS: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  rules: [{tokenBucket: {maxTokens: 1000, fillInterval: 1s}}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: root-pricing, namespace: istio-system}
spec:
  selector: {matchLabels: {app: pricing}}
  rules: [{match: {paths: ["/admin*"]}, tokenBucket: {maxTokens: 1, fillInterval: 1m}}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: shop-default, namespace: shop}
spec:
  rules: [{match: {ports: [9080]}, tokenBucket: {maxTokens: 200, tokensPerFill: 20, fillInterval: 100ms}}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: shop-second, namespace: shop}
spec:
  rules: [{tokenBucket: {maxTokens: 300, fillInterval: 1s}}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: pricing-checkout, namespace: shop}
spec:
  selector: {matchLabels: {app: pricing}}
  rules:
    - match: {paths: ["/checkout"], methods: [POST]}
      tokenBucket: {maxTokens: 10, tokensPerFill: 10, fillInterval: 1s}
      perSource: true
      statusCode: 503
      quotaHeaders: true
    - match: {paths: ["*.json"]}
      tokenBucket: {maxTokens: 5, fillInterval: 200ms}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: client-only, namespace: shop}
spec:
  selector: {matchLabels: {app: client}}
  rules: [{tokenBucket: {maxTokens: 7, fillInterval: 1s}}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: elsewhere, namespace: other}
spec:
  rules: [{tokenBucket: {maxTokens: 1, fillInterval: 1s}}]
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: too-fast, namespace: shop}
spec:
  rules: [{tokenBucket: {maxTokens: 1, fillInterval: 10ms}}]
"#;

fn index() -> Index {
    let policy = std::fs::read_to_string(fixtures().join("policy.yaml")).expect("fixture");
    Index::from_yaml_documents(&format!("{policy}---{LIMITS}")).expect("valid YAML")
}

fn translated(workload: &str) -> trellis_controlplane::Translation {
    let index = index();
    run(&index, &sidecar(&index, "shop", workload))
}

/// `(policy, rule)` of the limits of inbound port `port`.
fn limits(t: &trellis_controlplane::Translation, port: u16) -> Vec<(String, u32)> {
    let listener = t.config.inbound.iter().find(|l| l.port == port).unwrap_or_else(|| panic!("no listener {port}"));
    listener.rate_limits.iter().map(|l| (l.policy.clone(), l.rule)).collect()
}

fn named(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect()
}

#[test]
fn the_most_specific_policy_comes_first_then_the_namespace_then_the_root_namespace() {
    let t = translated("pricing-1");
    assert_eq!(
        limits(&t, 9080),
        named(&[
            ("shop/pricing-checkout", 0),
            ("shop/pricing-checkout", 1),
            ("shop/shop-default", 0),
            ("shop/shop-second", 0),
            ("istio-system/root-pricing", 0),
            ("istio-system/mesh-wide", 0),
        ]),
        "selected in the namespace, namespace-wide (oldest first), selected from the root, mesh-wide"
    );
}

#[test]
fn a_rule_naming_ports_reaches_only_their_listeners_and_the_catch_all() {
    let t = translated("pricing-1");
    assert!(!limits(&t, 19090).contains(&("shop/shop-default".into(), 0)), "port 9080 only");
    assert!(limits(&t, INBOUND_CATCH_ALL_PORT).contains(&("shop/shop-default".into(), 0)));
    let catch_all = &t.config.inbound[0];
    let default = catch_all.rate_limits.iter().find(|l| l.policy == "shop/shop-default").expect("listed");
    assert_eq!(default.ports, [9080], "the proxy checks the ports of catch-all rules");
}

#[test]
fn a_rule_reaches_the_proxy_with_its_bucket_match_and_defaults() {
    let t = translated("pricing-1");
    let listener = t.config.inbound.iter().find(|l| l.port == 9080).expect("listener");
    assert_eq!(
        listener.rate_limits[0],
        RateLimit {
            policy: "shop/pricing-checkout".into(),
            rule: 0,
            paths: vec!["/checkout".into()],
            methods: vec!["POST".into()],
            ports: Vec::new(),
            max_tokens: 10,
            tokens_per_fill: 10,
            fill_interval: Duration::from_secs(1),
            per_source: true,
            status_code: 503,
            quota_headers: true,
        }
    );
    let mesh = listener.rate_limits.iter().find(|l| l.policy == "istio-system/mesh-wide").expect("listed");
    assert_eq!(
        (mesh.tokens_per_fill, mesh.status_code, mesh.per_source, mesh.quota_headers),
        (1, 429, false, false),
        "Envoy's defaults"
    );
}

#[test]
fn selectors_and_namespaces_keep_policies_to_their_workloads() {
    let t = translated("client");
    assert_eq!(
        limits(&t, INBOUND_CATCH_ALL_PORT),
        named(&[
            ("shop/client-only", 0),
            ("shop/shop-default", 0),
            ("shop/shop-second", 0),
            ("istio-system/mesh-wide", 0)
        ]),
        "a client without service ports still gets a catch-all listener with its limits"
    );
    let index = index();
    let other = run(&index, &proxy("other", &[("app", "pricing")], trellis_api::proxy_config::ProxyMode::Sidecar));
    assert_eq!(
        limits(&other, INBOUND_CATCH_ALL_PORT),
        named(&[("other/elsewhere", 0), ("istio-system/root-pricing", 0), ("istio-system/mesh-wide", 0)]),
        "shop's policies stay in shop; the root namespace's reach every namespace"
    );
}

#[test]
fn an_invalid_policy_is_left_out_and_reported_with_its_field() {
    let t = translated("pricing-1");
    assert!(t.config.inbound.iter().all(|l| l.rate_limits.iter().all(|r| r.policy != "shop/too-fast")));
    let about = skipped_about(&t, Kind::RateLimitPolicy, "shop", "too-fast");
    assert_eq!(about.len(), 1, "{about:?}");
    assert!(about[0].starts_with("spec.rules[0].tokenBucket.fillInterval: invalid"), "{about:?}");
}

#[test]
fn without_rate_limit_policies_nothing_changes() {
    let policy = std::fs::read_to_string(fixtures().join("policy.yaml")).expect("fixture");
    let index = Index::from_yaml_documents(&policy).expect("valid YAML");
    let t = run(&index, &sidecar(&index, "shop", "pricing-1"));
    assert!(t.config.inbound.iter().all(|l| l.rate_limits.is_empty()));
    let json = serde_json::to_string(&t.config).expect("serializes");
    assert!(!json.contains("rateLimits"), "the field is left out of configs that have none");
}
