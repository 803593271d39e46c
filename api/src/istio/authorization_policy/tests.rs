use serde_json::{Value, json};

use super::*;
use crate::{FieldPath, Issues, Severity, Validate};

fn spec(value: Value) -> AuthorizationPolicySpec {
    serde_json::from_value(value).expect("the spec deserializes")
}

/// Every issue of `value` as `(severity, path, message)`.
fn issues_of(value: Value) -> Vec<(Severity, String, String)> {
    let mut issues = Issues::default();
    spec(value).validate(&FieldPath::of("spec"), &mut issues);
    issues.into_vec().into_iter().map(|i| (i.severity, i.path.to_string(), i.message)).collect()
}

fn errors_of(value: Value) -> Vec<(String, String)> {
    issues_of(value).into_iter().filter(|(s, _, _)| *s == Severity::Error).map(|(_, p, m)| (p, m)).collect()
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

/// A policy with one rule whose first `from` holds `source`.
fn with_source(source: Value) -> Value {
    json!({"rules": [{"from": [{"source": source}]}]})
}

/// A policy with one rule whose first `to` holds `operation`.
fn with_operation(operation: Value) -> Value {
    json!({"rules": [{"to": [{"operation": operation}]}]})
}

/// A policy with one rule with one condition.
fn with_condition(condition: Value) -> Value {
    json!({"rules": [{"when": [condition]}]})
}

#[test]
fn a_full_policy_with_every_field_round_trips_unchanged() {
    let full = json!({
        "selector": {"matchLabels": {"app": "httpbin"}},
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "targetRefs": [{"group": "", "kind": "Service", "name": "httpbin", "namespace": ""}],
        "action": "CUSTOM",
        "provider": {"name": "ext-authz"},
        "rules": [{
            "from": [{"source": {
                "principals": ["cluster.local/ns/default/sa/sleep"],
                "notPrincipals": ["cluster.local/ns/default/sa/bad"],
                "requestPrincipals": ["issuer.example.com/alice"],
                "notRequestPrincipals": ["issuer.example.com/mallory"],
                "namespaces": ["default"],
                "notNamespaces": ["untrusted"],
                "serviceAccounts": ["default/sleep"],
                "notServiceAccounts": ["default/bad"],
                "ipBlocks": ["10.0.0.0/8"],
                "notIpBlocks": ["10.1.2.3"],
                "remoteIpBlocks": ["203.0.113.0/24"],
                "notRemoteIpBlocks": ["2001:db8::/32"],
                "trustDomains": ["cluster.local"],
                "notTrustDomains": ["other.local"]
            }}],
            "to": [{"operation": {
                "hosts": ["example.com"],
                "notHosts": ["*.internal"],
                "ports": ["8080"],
                "notPorts": ["9090"],
                "methods": ["GET"],
                "notMethods": ["DELETE"],
                "paths": ["/api/{*}/items"],
                "notPaths": ["/admin*"]
            }}],
            "when": [{"key": "request.headers[User-Agent]", "values": ["Mozilla/*"], "notValues": ["curl/*"]}]
        }]
    });
    let parsed = spec(full.clone());
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), full);
}

#[test]
fn an_absent_action_means_allow_and_is_not_written_back() {
    let parsed = spec(json!({}));
    assert_eq!(parsed.action, None);
    assert_eq!(parsed.effective_action(), Action::Allow);
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), json!({}));
}

#[test]
fn unknown_fields_fail_to_deserialize() {
    assert!(serde_json::from_value::<AuthorizationPolicySpec>(json!({"actions": "DENY"})).is_err());
    let nested = json!({"rules": [{"from": [{"source": {"principal": ["x"]}}]}]});
    assert!(serde_json::from_value::<AuthorizationPolicySpec>(nested).is_err());
}

#[test]
fn an_action_outside_istios_enum_fails_to_deserialize() {
    assert!(serde_json::from_value::<AuthorizationPolicySpec>(json!({"action": "REJECT"})).is_err());
    assert!(serde_json::from_value::<AuthorizationPolicySpec>(json!({"action": "allow"})).is_err());
}

#[test]
fn an_allow_policy_with_present_but_empty_rules_is_valid() {
    assert!(issues_of(json!({"rules": []})).is_empty());
    assert!(issues_of(json!({"action": "ALLOW", "rules": []})).is_empty());
}

#[test]
fn a_realistic_policy_has_no_issues() {
    let policy = json!({
        "selector": {"matchLabels": {"app": "httpbin", "version": "v1"}},
        "action": "ALLOW",
        "rules": [{
            "from": [
                {"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}},
                {"source": {"namespaces": ["test"]}}
            ],
            "to": [
                {"operation": {"methods": ["GET"], "paths": ["/info*"]}},
                {"operation": {"methods": ["POST"], "paths": ["/data"]}}
            ],
            "when": [{"key": "request.auth.claims[iss]", "values": ["https://accounts.google.com"]}]
        }]
    });
    assert!(issues_of(policy).is_empty());
}

#[test]
fn selector_and_target_refs_together_are_rejected() {
    let both = json!({
        "selector": {"matchLabels": {"app": "a"}},
        "targetRefs": [{"kind": "Gateway", "name": "edge"}]
    });
    assert_error(both, "spec", "only one of targetRefs or selector");
}

#[test]
fn the_custom_action_requires_a_provider_name() {
    assert_error(json!({"action": "CUSTOM", "rules": [{}]}), "spec.provider", "requires provider.name");
    assert_error(
        json!({"action": "CUSTOM", "provider": {"name": ""}, "rules": [{}]}),
        "spec.provider.name",
        "requires provider.name",
    );
    assert_no_errors(json!({"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{}]}));
}

#[test]
fn the_custom_action_without_rules_is_rejected() {
    assert_error(json!({"action": "CUSTOM", "provider": {"name": "ext-authz"}}), "spec.rules", "never triggers");
}

#[test]
fn a_provider_with_a_non_custom_action_is_rejected() {
    assert_error(json!({"provider": {"name": "ext-authz"}, "rules": [{}]}), "spec.provider", "not ALLOW");
    assert_error(
        json!({"action": "DENY", "provider": {"name": "ext-authz"}, "rules": [{}]}),
        "spec.provider",
        "only be set with the CUSTOM action",
    );
}

#[test]
fn the_custom_action_rejects_identity_sources_and_conditions() {
    let policy = json!({
        "action": "CUSTOM",
        "provider": {"name": "ext-authz"},
        "rules": [{
            "from": [{"source": {"requestPrincipals": ["iss/sub"]}}],
            "when": [{"key": "request.auth.claims[group]", "values": ["admin"]}]
        }]
    });
    assert_error(policy.clone(), "spec.rules[0].from[0].source.requestPrincipals", "CUSTOM");
    assert_error(policy, "spec.rules[0].when[0].key", "CUSTOM");
    let ip_only = json!({
        "action": "CUSTOM",
        "provider": {"name": "ext-authz"},
        "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]
    });
    assert_no_errors(ip_only);
}

#[test]
fn the_deny_action_without_rules_is_rejected() {
    assert_error(json!({"action": "DENY"}), "spec.rules", "never triggers");
    assert_no_errors(json!({"action": "DENY", "rules": [{}]}));
}

#[test]
fn a_deny_rule_with_only_http_attributes_gets_a_warning() {
    let issues = issues_of(json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}));
    assert!(
        issues.iter().any(|(s, p, m)| *s == Severity::Warning && p == "spec.rules[0]" && m.contains("TCP")),
        "{issues:#?}"
    );
    let with_port =
        issues_of(json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"], "ports": ["80"]}}]}]}));
    assert!(with_port.is_empty(), "{with_port:#?}");
}

#[test]
fn more_than_512_rules_are_rejected() {
    let rules: Vec<Value> = (0..513).map(|_| json!({})).collect();
    assert_error(json!({"rules": rules}), "spec.rules", "at most 512 rules");
    let from: Vec<Value> = (0..513).map(|_| json!({"source": {"namespaces": ["a"]}})).collect();
    assert_error(json!({"rules": [{"from": from}]}), "spec.rules[0].from", "at most 512 from");
}

#[test]
fn empty_from_and_to_lists_are_rejected() {
    assert_error(json!({"rules": [{"from": []}]}), "spec.rules[0].from", "must not be empty");
    assert_error(json!({"rules": [{"to": []}]}), "spec.rules[0].to", "must not be empty");
}

#[test]
fn a_from_without_a_source_or_with_an_empty_source_is_rejected() {
    assert_error(json!({"rules": [{"from": [{}]}]}), "spec.rules[0].from[0].source", "must be set");
    assert_error(with_source(json!({})), "spec.rules[0].from[0].source", "at least one field");
    assert_error(with_source(json!({"principals": []})), "spec.rules[0].from[0].source", "at least one field");
}

#[test]
fn empty_strings_in_source_lists_are_rejected() {
    for field in [
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
        "namespaces",
        "notNamespaces",
        "serviceAccounts",
        "notServiceAccounts",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "trustDomains",
        "notTrustDomains",
    ] {
        let good = if field.ends_with("IpBlocks") || field == "ipBlocks" { "10.0.0.1" } else { "ok/value" };
        let source = json!({ field: [good, ""] });
        assert_error(with_source(source), &format!("spec.rules[0].from[0].source.{field}[1]"), "must not be empty");
    }
}

#[test]
fn request_principals_without_a_slash_are_rejected() {
    assert_error(
        with_source(json!({"requestPrincipals": ["foo"]})),
        "spec.rules[0].from[0].source.requestPrincipals[0]",
        "requestPrincipals must be of the form <issuer>/<subject>",
    );
    assert_error(
        with_source(json!({"notRequestPrincipals": ["issuer.example.com"]})),
        "spec.rules[0].from[0].source.notRequestPrincipals[0]",
        "notRequestPrincipals must be of the form <issuer>/<subject>",
    );
}

#[test]
fn request_principals_with_a_slash_or_a_wildcard_are_accepted() {
    let good =
        ["*", "issuer.example.com/alice", "https://accounts.google.com/*", "*/alice", "*@example.com", "issuer*"];
    assert_no_errors(with_source(json!({"requestPrincipals": good})));
}

#[test]
fn ip_blocks_must_be_ips_or_cidr_ranges() {
    let source = json!({
        "ipBlocks": ["10.0.0.1", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32", "0.0.0.0/0"],
        "notIpBlocks": ["10.0.0.256"],
        "remoteIpBlocks": ["10.0.0.0/33"],
        "notRemoteIpBlocks": ["example.com/8", "10.0.0.0/", "10.0.0.0/08"]
    });
    let errors = errors_of(with_source(source));
    let at = "spec.rules[0].from[0].source";
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{at}.notIpBlocks[0]"),
            format!("{at}.remoteIpBlocks[0]"),
            format!("{at}.notRemoteIpBlocks[0]"),
            format!("{at}.notRemoteIpBlocks[1]"),
            format!("{at}.notRemoteIpBlocks[2]"),
        ]
    );
    assert!(errors[0].1.contains("\"10.0.0.256\" is not a valid IP address"), "{errors:#?}");
    assert!(errors[1].1.contains("prefix length must be 0-32"), "{errors:#?}");
}

#[test]
fn service_accounts_cannot_be_combined_with_principals_or_namespaces() {
    let at = "spec.rules[0].from[0].source";
    assert_error(
        with_source(json!({"serviceAccounts": ["default/sleep"], "principals": ["x"]})),
        at,
        "cannot set serviceAccounts",
    );
    assert_error(
        with_source(json!({"notServiceAccounts": ["sleep"], "notNamespaces": ["x"]})),
        at,
        "cannot set serviceAccounts",
    );
    assert_no_errors(with_source(json!({"serviceAccounts": ["default/sleep", "sleep"], "ipBlocks": ["10.0.0.1"]})));
}

#[test]
fn service_accounts_must_be_well_formed_and_at_most_16() {
    let at = "spec.rules[0].from[0].source.serviceAccounts";
    assert_error(with_source(json!({"serviceAccounts": ["a/b/c"]})), &format!("{at}[0]"), "namespace/serviceAccount");
    assert_error(with_source(json!({"serviceAccounts": ["/sleep"]})), &format!("{at}[0]"), "namespace/serviceAccount");
    assert_error(
        with_source(json!({"serviceAccounts": ["default/"]})),
        &format!("{at}[0]"),
        "namespace/serviceAccount",
    );
    assert_error(with_source(json!({"serviceAccounts": ["default/*"]})), &format!("{at}[0]"), "wildcard");
    let long = format!("default/{}", "a".repeat(320));
    assert_error(with_source(json!({"serviceAccounts": [long]})), &format!("{at}[0]"), "longer than 320");
    let many: Vec<String> = (0..17).map(|i| format!("default/sa{i}")).collect();
    assert_error(with_source(json!({"serviceAccounts": many})), at, "at most 16 serviceAccounts");
}

#[test]
fn an_operation_must_set_something() {
    assert_error(json!({"rules": [{"to": [{}]}]}), "spec.rules[0].to[0].operation", "must be set");
    assert_error(with_operation(json!({})), "spec.rules[0].to[0].operation", "at least one field");
}

#[test]
fn methods_must_be_upper_case_http_tokens_or_wildcards() {
    let at = "spec.rules[0].to[0].operation";
    assert_error(with_operation(json!({"methods": ["get"]})), &format!("{at}.methods[0]"), "upper case");
    assert_error(with_operation(json!({"notMethods": ["G*T"]})), &format!("{at}.notMethods[0]"), "prefix or suffix");
    assert_error(
        with_operation(json!({"methods": ["GET POST"]})),
        &format!("{at}.methods[0]"),
        "not a valid HTTP method",
    );
    assert_error(with_operation(json!({"methods": [""]})), &format!("{at}.methods[0]"), "must not be empty");
    assert_no_errors(with_operation(json!({"methods": ["GET", "*", "P*", "*ST", "M-SEARCH"]})));
}

#[test]
fn ports_must_be_numbers_between_1_and_65535() {
    let at = "spec.rules[0].to[0].operation";
    for bad in ["0", "65536", "http", "-1", "+80"] {
        assert_error(with_operation(json!({"ports": [bad]})), &format!("{at}.ports[0]"), "between 1-65535");
    }
    assert_error(with_operation(json!({"notPorts": ["99999"]})), &format!("{at}.notPorts[0]"), "\"99999\"");
    assert_no_errors(with_operation(json!({"ports": ["1", "8080", "65535"]})));
}

#[test]
fn paths_must_start_with_a_slash_or_a_wildcard() {
    let at = "spec.rules[0].to[0].operation";
    assert_error(with_operation(json!({"paths": ["api/v1"]})), &format!("{at}.paths[0]"), "must start with / or *");
    assert_no_errors(with_operation(json!({"paths": ["/", "/api/v1", "/api*", "*.html", "*"]})));
}

#[test]
fn path_templates_follow_istios_rules() {
    let at = "spec.rules[0].to[0].operation";
    assert_no_errors(with_operation(
        json!({"paths": ["/api/{*}/items", "/files/{**}", "/{*}/{*}/x", "/a/{**}/b.txt"]}),
    ));
    assert_error(with_operation(json!({"paths": ["/{**}/{*}"]})), &format!("{at}.paths[0]"), "last operator");
    assert_error(
        with_operation(json!({"notPaths": ["/users/{id}"]})),
        &format!("{at}.notPaths[0]"),
        "outside a supported path template",
    );
    assert_error(with_operation(json!({"paths": ["/a/{*}/b*"]})), &format!("{at}.paths[0]"), "not a valid literal");
    assert_error(with_operation(json!({"paths": ["/a//{*}"]})), &format!("{at}.paths[0]"), "not a valid literal");
}

#[test]
fn hosts_must_not_be_empty() {
    let at = "spec.rules[0].to[0].operation";
    assert_error(with_operation(json!({"hosts": [""]})), &format!("{at}.hosts[0]"), "must not be empty");
    assert_error(with_operation(json!({"notHosts": ["a", ""]})), &format!("{at}.notHosts[1]"), "must not be empty");
    assert_no_errors(with_operation(json!({"hosts": ["example.com", "*.example.com"]})));
}

#[test]
fn a_condition_needs_a_key() {
    assert_error(with_condition(json!({"key": "", "values": ["a"]})), "spec.rules[0].when[0].key", "must not be empty");
    assert!(serde_json::from_value::<AuthorizationPolicySpec>(with_condition(json!({"values": ["a"]}))).is_err());
}

#[test]
fn a_condition_needs_values_or_not_values() {
    assert_error(
        with_condition(json!({"key": "source.namespace"})),
        "spec.rules[0].when[0]",
        "at least one of values or notValues",
    );
    assert_error(
        with_condition(json!({"key": "source.namespace", "values": [], "notValues": []})),
        "spec.rules[0].when[0]",
        "at least one of values or notValues",
    );
    assert_no_errors(with_condition(json!({"key": "source.namespace", "notValues": ["default"]})));
}

#[test]
fn every_istio_condition_key_is_accepted() {
    let keys = [
        ("request.headers[User-Agent]", "Mozilla/*"),
        ("source.ip", "10.0.0.0/8"),
        ("remote.ip", "203.0.113.7"),
        ("source.namespace", "default"),
        ("source.principal", "cluster.local/ns/default/sa/sleep"),
        ("source.serviceAccount", "default/sleep"),
        ("request.auth.principal", "issuer/subject"),
        ("request.auth.audiences", "my-svc"),
        ("request.auth.presenter", "client.example.com"),
        ("request.auth.claims[groups]", "admin"),
        ("request.auth.claims[nested][key]", "v"),
        ("destination.ip", "10.1.2.3"),
        ("destination.port", "443"),
        ("connection.sni", "www.example.com"),
        ("experimental.envoy.filters.network.mysql_proxy[db.table]", "[update]"),
    ];
    for (key, value) in keys {
        let errors = errors_of(with_condition(json!({"key": key, "values": [value]})));
        assert!(errors.is_empty(), "{key}: {errors:#?}");
    }
}

#[test]
fn unknown_or_retired_condition_keys_are_rejected() {
    let at = "spec.rules[0].when[0].key";
    assert_error(with_condition(json!({"key": "request.method", "values": ["GET"]})), at, "unknown condition key");
    assert_error(with_condition(json!({"key": "destination.namespace", "values": ["a"]})), at, "not supported");
    assert_error(with_condition(json!({"key": "destination.labels[app]", "values": ["a"]})), at, "workload selector");
    assert_error(with_condition(json!({"key": "destination.user", "values": ["a"]})), at, "no longer supported");
}

#[test]
fn map_condition_keys_need_a_bracketed_entry() {
    let at = "spec.rules[0].when[0].key";
    for key in ["request.headers", "request.headers[]", "request.auth.claims[x", "experimental.envoy.filters.a"] {
        assert_error(with_condition(json!({"key": key, "values": ["a"]})), at, "name[entry]");
    }
}

#[test]
fn condition_values_are_checked_for_the_key() {
    let at = "spec.rules[0].when[0]";
    assert_error(
        with_condition(json!({"key": "source.ip", "values": ["10.0.0.300"]})),
        &format!("{at}.values[0]"),
        "not a valid IP",
    );
    assert_error(
        with_condition(json!({"key": "destination.port", "notValues": ["80", "http"]})),
        &format!("{at}.notValues[1]"),
        "between 1-65535",
    );
    assert_error(
        with_condition(json!({"key": "source.serviceAccount", "values": ["a/b/c"]})),
        &format!("{at}.values[0]"),
        "namespace/serviceAccount",
    );
    assert_error(
        with_condition(json!({"key": "connection.sni", "values": [""]})),
        &format!("{at}.values[0]"),
        "must not be empty",
    );
}
