use serde_json::{Value, json};

use super::*;
use crate::Severity;

fn spec(value: Value) -> RequestAuthenticationSpec {
    serde_json::from_value(value).expect("the spec deserializes")
}

fn errors_of(value: Value) -> Vec<(String, String)> {
    let mut issues = Issues::default();
    spec(value).validate(&FieldPath::of("spec"), &mut issues);
    issues
        .into_vec()
        .into_iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| (i.path.to_string(), i.message))
        .collect()
}

/// Asserts that `value` has an error at `path` whose message contains `fragment`.
#[track_caller]
fn assert_error(value: Value, path: &str, fragment: &str) {
    let errors = errors_of(value);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(fragment)),
        "expected an error at {path} containing {fragment:?}, got {errors:#?}"
    );
}

#[track_caller]
fn assert_no_errors(value: Value) {
    let errors = errors_of(value);
    assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
}

/// A policy with one JWT rule: issuer `issuer-foo` plus `extra`.
fn with_rule(extra: Value) -> Value {
    let mut rule = json!({"issuer": "issuer-foo"});
    if let (Some(rule), Some(extra)) = (rule.as_object_mut(), extra.as_object()) {
        rule.extend(extra.clone());
    }
    json!({"jwtRules": [rule]})
}

const JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"abc","kid":"1"}]}"#;

#[test]
fn a_full_policy_with_every_field_round_trips_unchanged() {
    let full = json!({
        "selector": {"matchLabels": {"app": "httpbin"}},
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "targetRefs": [{"group": "", "kind": "Service", "name": "httpbin", "namespace": ""}],
        "jwtRules": [{
            "issuer": "https://issuer.example.com",
            "audiences": ["bookstore", "frontend"],
            "jwksUri": "https://issuer.example.com/.well-known/jwks.json",
            "jwks_uri": "https://issuer.example.com/keys",
            "jwks": JWKS,
            "fromHeaders": [{"name": "x-jwt-assertion", "prefix": "Bearer "}],
            "fromParams": ["access_token"],
            "fromCookies": ["session"],
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "x-user", "claim": "sub"}],
            "forwardOriginalToken": true,
            "spaceDelimitedClaims": ["roles"],
            "timeout": "5s",
            "presence": "REQUIRED"
        }]
    });
    let parsed = spec(full.clone());
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), full);
}

#[test]
fn the_snake_case_jwks_uri_keeps_its_spelling() {
    let parsed = spec(with_rule(json!({"jwks_uri": "https://example.com/keys"})));
    let rule = &parsed.jwt_rules.as_ref().expect("rules")[0];
    assert_eq!(rule.jwks_uri, None);
    assert_eq!(rule.jwks_uri_snake_case.as_deref(), Some("https://example.com/keys"));
    let back = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(back["jwtRules"][0]["jwks_uri"], "https://example.com/keys");
}

#[test]
fn unknown_fields_fail_to_deserialize() {
    assert!(serde_json::from_value::<RequestAuthenticationSpec>(json!({"jwtRule": []})).is_err());
    assert!(serde_json::from_value::<RequestAuthenticationSpec>(with_rule(json!({"jwksUrl": "https://x"}))).is_err());
    assert!(serde_json::from_value::<RequestAuthenticationSpec>(with_rule(json!({"presence": "MAYBE"}))).is_err());
}

#[test]
fn a_realistic_policy_has_no_errors() {
    assert_no_errors(json!({
        "selector": {"matchLabels": {"app": "httpbin"}},
        "jwtRules": [
            {"issuer": "issuer-foo", "jwksUri": "https://example.com/.well-known/jwks.json"},
            {"issuer": "issuer-bar", "jwks": JWKS, "fromHeaders": [{"name": "x-token"}], "timeout": "1ms"}
        ]
    }));
}

#[test]
fn selector_and_target_ref_together_are_rejected() {
    let both = json!({"selector": {"matchLabels": {"app": "a"}}, "targetRef": {"kind": "Gateway", "name": "edge"}});
    assert_error(both, "spec", "only one of targetRefs or selector");
}

#[test]
fn an_empty_issuer_is_rejected() {
    assert_error(with_rule(json!({"issuer": ""})), "spec.jwtRules[0].issuer", "must not be empty");
}

#[test]
fn an_issuer_is_required_unless_a_jwks_uri_is_given() {
    assert_error(json!({"jwtRules": [{"jwks": JWKS}]}), "spec.jwtRules[0].issuer", "must be set");
    assert_no_errors(json!({"jwtRules": [{"jwksUri": "https://example.com/keys"}]}));
}

#[test]
fn duplicate_issuers_are_rejected() {
    let policy = json!({"jwtRules": [
        {"issuer": "issuer-foo"},
        {"issuer": "issuer-bar"},
        {"issuer": "issuer-foo", "audiences": ["x"]}
    ]});
    assert_error(policy, "spec.jwtRules[2].issuer", "\"issuer-foo\" is already used by jwtRules[0]");
}

#[test]
fn more_than_4096_rules_are_rejected() {
    let rules: Vec<Value> = (0..4097).map(|i| json!({"issuer": format!("issuer-{i}")})).collect();
    assert_error(json!({"jwtRules": rules}), "spec.jwtRules", "at most 4096");
}

#[test]
fn only_one_source_of_keys_can_be_set() {
    let at = "spec.jwtRules[0]";
    assert_error(with_rule(json!({"jwksUri": "https://a/k", "jwks": JWKS})), at, "only one of jwks or jwksUri");
    assert_error(
        with_rule(json!({"jwksUri": "https://a/k", "jwks_uri": "https://a/k"})),
        at,
        "only one of jwks or jwksUri",
    );
}

#[test]
fn a_jwks_uri_must_be_an_http_or_https_url_with_a_host() {
    let at = "spec.jwtRules[0].jwksUri";
    assert_error(with_rule(json!({"jwksUri": "ftp://example.com/keys"})), at, "scheme http:// or https://");
    assert_error(with_rule(json!({"jwksUri": "example.com/keys"})), at, "scheme http:// or https://");
    assert_error(with_rule(json!({"jwksUri": "https:///keys"})), at, "must name a host");
    assert_error(with_rule(json!({"jwksUri": "https://example.com:http/keys"})), at, "invalid port");
    assert_error(with_rule(json!({"jwksUri": ""})), at, "must not be empty");
    let long = format!("https://example.com/{}", "k".repeat(2048));
    assert_error(with_rule(json!({"jwksUri": long})), at, "longer than 2048");
    assert_error(with_rule(json!({"jwks_uri": "file:///etc/keys"})), "spec.jwtRules[0].jwks_uri", "scheme");
    for good in [
        "http://example.com",
        "https://example.com:8443/keys?x=1",
        "https://[2001:db8::1]:443/k",
        "HTTPS://user@host/k",
    ] {
        assert_no_errors(with_rule(json!({"jwksUri": good})));
    }
}

#[test]
fn inline_jwks_must_be_a_json_web_key_set() {
    let at = "spec.jwtRules[0].jwks";
    assert_error(with_rule(json!({"jwks": "{not json"})), at, "not valid JSON");
    assert_error(with_rule(json!({"jwks": r#"{"kty":"RSA"}"#})), at, "keys array");
    assert_error(with_rule(json!({"jwks": r#"{"keys":{}}"#})), at, "keys array");
    assert_no_errors(with_rule(json!({"jwks": JWKS})));
}

#[test]
fn token_locations_must_not_be_empty() {
    let at = "spec.jwtRules[0]";
    assert_error(
        with_rule(json!({"fromHeaders": [{"name": ""}]})),
        &format!("{at}.fromHeaders[0].name"),
        "must not be empty",
    );
    assert_error(with_rule(json!({"fromParams": ["token", ""]})), &format!("{at}.fromParams[1]"), "must not be empty");
    assert_error(with_rule(json!({"fromCookies": [""]})), &format!("{at}.fromCookies[0]"), "must not be empty");
    assert_error(with_rule(json!({"audiences": [""]})), &format!("{at}.audiences[0]"), "must not be empty");
    assert!(
        serde_json::from_value::<RequestAuthenticationSpec>(with_rule(json!({"fromHeaders": [{"prefix": "x"}]})))
            .is_err()
    );
}

#[test]
fn claim_to_header_needs_a_valid_header_and_a_claim() {
    let at = "spec.jwtRules[0].outputClaimToHeaders[0]";
    assert_error(
        with_rule(json!({"outputClaimToHeaders": [{"header": "x user", "claim": "sub"}]})),
        &format!("{at}.header"),
        "\"x user\" must hold only letters, digits",
    );
    assert_error(
        with_rule(json!({"outputClaimToHeaders": [{"header": "", "claim": "sub"}]})),
        &format!("{at}.header"),
        "must not be empty",
    );
    assert_error(
        with_rule(json!({"outputClaimToHeaders": [{"header": "x-user", "claim": ""}]})),
        &format!("{at}.claim"),
        "must not be empty",
    );
    assert_no_errors(with_rule(json!({"outputClaimToHeaders": [{"header": "X-User_Id", "claim": "nested.sub"}]})));
}

#[test]
fn space_delimited_claims_are_bounded_and_non_empty() {
    let at = "spec.jwtRules[0].spaceDelimitedClaims";
    let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    assert_error(with_rule(json!({"spaceDelimitedClaims": many})), at, "at most 64");
    assert_error(with_rule(json!({"spaceDelimitedClaims": ["roles", ""]})), &format!("{at}[1]"), "must not be empty");
}

#[test]
fn a_timeout_must_be_a_duration_of_at_least_1ms() {
    let at = "spec.jwtRules[0].timeout";
    assert_error(with_rule(json!({"timeout": "500us"})), at, "at least 1ms");
    assert_error(with_rule(json!({"timeout": "soon"})), at, "");
    assert_no_errors(with_rule(json!({"timeout": "1.5s"})));
}

#[test]
fn a_target_group_or_kind_outside_istios_patterns_is_an_error() {
    let bad_group = json!({"targetRef": {"group": "Gateway.Networking", "kind": "Gateway", "name": "edge"}});
    assert_error(bad_group, "spec.targetRef.group", "DNS subdomain");
    let bad_kind = json!({"targetRefs": [{"group": "", "kind": "9-lives", "name": "edge"}]});
    assert_error(bad_kind, "spec.targetRefs[0].kind", "must start with a letter");
    let trailing_dash = json!({"targetRef": {"group": "gateway-.k8s.io", "kind": "Gateway-", "name": "edge"}});
    assert_error(trailing_dash.clone(), "spec.targetRef.group", "DNS subdomain");
    assert_error(trailing_dash, "spec.targetRef.kind", "must start with a letter");
    assert_no_errors(json!({"targetRef": {"group": "", "kind": "Service", "name": "httpbin"}}));
    assert_no_errors(json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}}));
}

#[test]
fn the_crd_carries_istios_target_patterns() {
    let crd = serde_json::to_value(<RequestAuthentication as kube::CustomResourceExt>::crd()).expect("crd");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for target in [&spec["targetRef"], &spec["targetRefs"]["items"]] {
        assert_eq!(target["properties"]["group"]["pattern"], crate::istio::common::TARGET_GROUP_PATTERN);
        assert_eq!(target["properties"]["kind"]["pattern"], crate::istio::common::TARGET_KIND_PATTERN);
    }
}
