use serde_json::{Value, json};

use super::*;
use crate::object::{self, Object};
use crate::{Issue, Severity, document};

const POLICY: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata:
  name: inventory-100rps
  namespace: shop
spec:
  selector:
    matchLabels:
      app: inventory
  rules:
    - match:
        paths: [\"/items*\", \"*.json\", \"/health\"]
        methods: [GET, POST]
        ports: [8080]
      tokenBucket:
        maxTokens: 100
        tokensPerFill: 10
        fillInterval: 100ms
      perSource: true
      statusCode: 503
      quotaHeaders: true
    - tokenBucket:
        maxTokens: 5
        fillInterval: 1s
";

fn decoded(text: &str) -> object::Decoded {
    let documents = document::parse(text).expect("valid YAML");
    object::decode(&documents[0].value)
}

fn errors_of(spec: Value) -> Vec<(String, String)> {
    let spec: RateLimitPolicySpec = serde_json::from_value(spec).expect("the spec deserializes");
    let mut issues = Issues::default();
    spec.validate(&FieldPath::of("spec"), &mut issues);
    issues
        .into_vec()
        .into_iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| (i.path.to_string(), i.message))
        .collect()
}

/// Asserts that `rule` (one rule of a policy) has an error at `path` whose message contains `fragment`.
#[track_caller]
fn assert_rule_error(rule: Value, path: &str, fragment: &str) {
    let errors = errors_of(json!({"rules": [rule]}));
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(fragment)),
        "expected an error at {path} containing {fragment:?}, got {errors:#?}"
    );
}

fn bucket() -> Value {
    json!({"maxTokens": 10, "fillInterval": "1s"})
}

#[test]
fn a_policy_decodes_and_survives_a_round_trip_unchanged() {
    let decoded = decoded(POLICY);
    assert!(decoded.issues.iter().next().is_none(), "{:?}", decoded.issues);
    let Some(Object::RateLimitPolicy(policy)) = &decoded.object else { panic!("decoded {:?}", decoded.object) };
    assert_eq!(decoded.id.namespace, "shop");
    let rule = &policy.spec.rules[0];
    assert_eq!(rule.token_bucket.max_tokens, 100);
    assert_eq!(rule.token_bucket.tokens_per_fill, Some(10));
    assert_eq!(rule.match_.as_ref().and_then(|m| m.ports.clone()), Some(vec![8080]));
    assert_eq!(policy.spec.rules[1].match_, None);
    assert_eq!((rule.quota_headers, policy.spec.rules[1].quota_headers), (Some(true), None), "off unless asked");
    let value = serde_json::to_value(&**policy).expect("serializes");
    assert_eq!(value["spec"]["rules"][0]["match"]["paths"][0], "/items*", "`match` keeps its YAML name");
    assert_eq!(value["spec"]["rules"][0]["quotaHeaders"], true);
    assert!(value["spec"]["rules"][1].get("quotaHeaders").is_none(), "an absent flag stays absent");
    let again: RateLimitPolicy = serde_json::from_value(value).expect("deserializes again");
    assert_eq!(&again, &**policy);
}

#[test]
fn an_unknown_field_is_an_error_at_that_field() {
    let text = POLICY.replace("perSource: true", "perSourceIp: true");
    let issues: Vec<Issue> = decoded(&text).issues.into_vec();
    assert!(
        issues.iter().any(|i| i.path.to_string() == "spec.rules[0].perSourceIp" && i.message.contains("unknown field")),
        "{issues:#?}"
    );
}

#[test]
fn a_fill_interval_that_is_not_a_duration_or_too_short_is_an_error_naming_the_field() {
    let path = "spec.rules[0].tokenBucket.fillInterval";
    assert_rule_error(json!({"tokenBucket": {"maxTokens": 1, "fillInterval": "soon"}}), path, "invalid duration");
    assert_rule_error(json!({"tokenBucket": {"maxTokens": 1, "fillInterval": "10ms"}}), path, "at least 50ms");
}

#[test]
fn empty_buckets_and_zero_fills_are_errors() {
    let rule = json!({"tokenBucket": {"maxTokens": 0, "tokensPerFill": 0, "fillInterval": "1s"}});
    assert_rule_error(rule.clone(), "spec.rules[0].tokenBucket.maxTokens", "at least 1");
    assert_rule_error(rule, "spec.rules[0].tokenBucket.tokensPerFill", "at least 1");
}

#[test]
fn a_status_code_outside_400_to_599_is_an_error() {
    assert_rule_error(json!({"tokenBucket": bucket(), "statusCode": 200}), "spec.rules[0].statusCode", "400 and 599");
    assert!(errors_of(json!({"rules": [{"tokenBucket": bucket(), "statusCode": 503}]})).is_empty());
}

#[test]
fn paths_must_have_one_of_istios_forms() {
    for bad in ["", "/a*b", "**", "items", "/a?b=1", "*a*"] {
        assert_rule_error(
            json!({"tokenBucket": bucket(), "match": {"paths": [bad]}}),
            "spec.rules[0].match.paths[0]",
            "path",
        );
    }
    let good = json!({"rules": [{"tokenBucket": bucket(), "match": {"paths": ["/a", "/a/*", "*.png", "*"]}}]});
    assert!(errors_of(good).is_empty());
}

#[test]
fn methods_and_ports_are_checked_one_by_one() {
    let rule = json!({"tokenBucket": bucket(), "match": {"methods": ["GET", "GE T"], "ports": [80, 70000]}});
    assert_rule_error(rule.clone(), "spec.rules[0].match.methods[1]", "not an HTTP method");
    assert_rule_error(rule, "spec.rules[0].match.ports[1]", "out of range");
    assert_rule_error(json!({"tokenBucket": bucket(), "match": {"ports": []}}), "spec.rules[0].match.ports", "empty");
}

#[test]
fn a_policy_without_rules_is_an_error() {
    let errors = errors_of(json!({"rules": []}));
    assert!(errors.iter().any(|(p, _)| p == "spec.rules"), "{errors:#?}");
    let issues = decoded(&POLICY.replace("  rules:", "  rulez:")).issues.into_vec();
    assert!(issues.iter().any(|i| i.severity == Severity::Error), "{issues:#?}");
}

#[test]
fn a_wildcard_in_the_selector_is_an_error() {
    let errors = errors_of(json!({"selector": {"matchLabels": {"app": "inv*"}}, "rules": [{"tokenBucket": bucket()}]}));
    assert!(errors.iter().any(|(p, _)| p == "spec.selector.matchLabels.app"), "{errors:#?}");
}

#[test]
fn the_crd_is_namespaced_in_trellis_dev_with_its_short_name() {
    let crd = serde_json::to_value(<RateLimitPolicy as kube::CustomResourceExt>::crd()).expect("crd");
    assert_eq!(crd["metadata"]["name"], "ratelimitpolicies.trellis.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["rlp"]));
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
}

#[test]
fn the_crds_cel_rule_catches_a_short_fill_interval_too() {
    // Only the CRD's own rule, as the API server would apply it (no Rust validation).
    let value = json!({
        "apiVersion": "trellis.dev/v1alpha1", "kind": "RateLimitPolicy", "metadata": {"name": "a"},
        "spec": {"rules": [{"tokenBucket": {"maxTokens": 1, "fillInterval": "10ms"}}]}
    });
    let mut issues = Issues::default();
    crate::cel::check("RateLimitPolicy", &value, &mut issues);
    assert!(issues.iter().any(|i| i.message.contains("50ms")), "{:?}", issues.into_vec());
}

#[test]
fn analyze_reports_a_bad_field_with_its_file_line_object_and_path() {
    let text = POLICY.replace("fillInterval: 100ms", "fillInterval: 10ms");
    let report = crate::analyze::analyze(&[crate::analyze::Source { name: "limits.yaml".into(), bytes: text.into() }]);
    let errors: Vec<String> =
        report.findings.iter().filter(|f| f.issue.severity == Severity::Error).map(ToString::to_string).collect();
    assert_eq!(
        errors,
        ["limits.yaml:18: RateLimitPolicy shop/inventory-100rps: spec.rules[0].tokenBucket.fillInterval: error: \
          fillInterval \"10ms\" must be at least 50ms"]
    );
}

#[test]
fn the_example_policy_is_valid() {
    let text = include_str!("../../../examples/ratelimit/inventory-100rps.yaml");
    let report = crate::analyze::analyze(&[crate::analyze::Source { name: "example".into(), bytes: text.into() }]);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.objects.len(), 1);
}
