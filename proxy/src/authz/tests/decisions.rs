//! Whole decisions: DENY over ALLOW, no or empty ALLOW policies, AUDIT, TCP semantics and compile errors.

use super::*;

const DENY_GET: &str = "
action: DENY
rules:
- to:
  - operation:
      methods: [GET]
";

const ALLOW_SHOP: &str = "
action: ALLOW
rules:
- from:
  - source:
      namespaces: [web]
- from:
  - source:
      namespaces: [shop]
";

#[test]
fn a_matching_deny_wins_over_a_matching_allow_and_names_the_policy_and_rule() {
    let policies = compile(&[policy("deny-get", DENY_GET), policy("allow-shop", ALLOW_SHOP)]);
    let req = Req::http();
    let decision = policies.evaluate(&req.facts());
    assert!(!decision.allowed);
    let by = PolicyMatch { policy: "shop/deny-get", action: AuthorizationAction::Deny, rule: 0 };
    assert_eq!(decision.decided_by, Some(by));
    assert_eq!(decision.to_string(), "denied by DENY policy shop/deny-get rules[0]");

    let post = Req::http().with_http(|h| h.method = "POST".into());
    let decision = policies.evaluate(&post.facts());
    assert!(decision.allowed);
    let by = PolicyMatch { policy: "shop/allow-shop", action: AuthorizationAction::Allow, rule: 1 };
    assert_eq!(decision.decided_by, Some(by));
    assert_eq!(decision.to_string(), "allowed by ALLOW policy shop/allow-shop rules[1]");
}

#[test]
fn without_an_allow_policy_what_no_deny_matches_is_allowed() {
    let policies = compile(&[policy("deny-get", DENY_GET)]);
    let post = Req::http().with_http(|h| h.method = "POST".into());
    let decision = policies.evaluate(&post.facts());
    assert_eq!(decision, Decision { allowed: true, decided_by: None, audits: Vec::new() });
    assert_eq!(decision.to_string(), "allowed: no ALLOW policy applies");

    let none = compile(&[]);
    assert!(none.is_empty());
    assert!(none.evaluate(&Req::tcp().facts()).allowed);
}

#[test]
fn with_allow_policies_what_none_matches_is_denied() {
    let policies = compile(&[policy("allow-shop", ALLOW_SHOP)]);
    let stranger = Req::http().peer(Some("cluster.local/ns/billing/sa/job"));
    let decision = policies.evaluate(&stranger.facts());
    assert_eq!(decision, Decision { allowed: false, decided_by: None, audits: Vec::new() });
    assert_eq!(decision.to_string(), "denied: no ALLOW policy matched");
}

#[test]
fn an_allow_policy_without_rules_denies_everything_until_another_allow_matches() {
    let nothing = policy("allow-nothing", "{}");
    assert!(!compile(std::slice::from_ref(&nothing)).evaluate(&Req::http().facts()).allowed);
    assert!(!compile(std::slice::from_ref(&nothing)).evaluate(&Req::tcp().facts()).allowed);
    let explicit = policy("allow-nothing", "action: ALLOW\nrules: []\n");
    assert!(!compile(&[explicit]).evaluate(&Req::http().facts()).allowed);

    let policies = compile(&[nothing, policy("allow-shop", ALLOW_SHOP)]);
    let decision = policies.evaluate(&Req::http().facts());
    assert!(decision.allowed);
    assert_eq!(decision.decided_by.map(|m| m.policy), Some("shop/allow-shop"));
}

#[test]
fn an_allow_policy_with_one_empty_rule_allows_everything_and_a_deny_without_rules_denies_nothing() {
    let policies = compile(&[policy("deny-none", "action: DENY\n"), policy("allow-all", "rules:\n- {}\n")]);
    assert!(policies.evaluate(&Req::http().peer(None).facts()).allowed);
    assert!(policies.evaluate(&Req::tcp().facts()).allowed);
}

#[test]
fn audit_policies_are_reported_and_never_change_the_decision() {
    let audit = "
action: AUDIT
rules:
- to:
  - operation:
      methods: [POST]
- to:
  - operation:
      paths: [\"/api/*\"]
";
    let audited = PolicyMatch { policy: "shop/audit-api", action: AuthorizationAction::Audit, rule: 1 };

    let alone = compile(&[policy("audit-api", audit)]);
    let decision = alone.evaluate(&Req::http().facts());
    assert_eq!(decision, Decision { allowed: true, decided_by: None, audits: vec![audited] });

    let with_deny = compile(&[policy("deny-get", DENY_GET), policy("audit-api", audit)]);
    let decision = with_deny.evaluate(&Req::http().facts());
    assert!(!decision.allowed);
    assert_eq!(decision.audits, vec![audited]);

    let with_allow_nothing = compile(&[policy("audit-api", audit), policy("allow-nothing", "{}")]);
    let decision = with_allow_nothing.evaluate(&Req::http().facts());
    assert!(!decision.allowed);
    assert_eq!(decision.audits, vec![audited]);

    let other_path = Req::http().with_http(|h| h.path = "/health".into());
    assert!(alone.evaluate(&other_path.facts()).audits.is_empty());
}

#[test]
fn on_tcp_an_allow_rule_with_http_only_fields_never_matches() {
    for rule in [
        "{to: [{operation: {paths: [\"/api/*\"]}}]}",
        "{to: [{operation: {notPaths: [/admin]}}]}",
        "{to: [{operation: {methods: [\"*\"]}}]}",
        "{to: [{operation: {hosts: [\"*\"]}}]}",
        "{to: [{operation: {ports: [\"8080\"], notHosts: [x]}}]}",
        "{from: [{source: {requestPrincipals: [\"*\"]}}]}",
        "{from: [{source: {namespaces: [shop], notRequestPrincipals: [x/y]}}]}",
        "{when: [{key: \"request.headers[x-a]\", notValues: [b]}]}",
        "{when: [{key: \"request.auth.claims[iss]\", values: [\"*\"]}]}",
    ] {
        let policies = compile(&[policy("allow-http", &format!("action: ALLOW\nrules:\n- {rule}\n"))]);
        let decision = policies.evaluate(&Req::tcp().facts());
        assert!(!decision.allowed, "ALLOW rule {rule} must not match TCP, got {decision}");
    }
    let l4 = "rules:\n- {from: [{source: {principals: [\"*\"]}}], to: [{operation: {ports: [\"8080\"]}}]}\n";
    let policies = compile(&[policy("allow-l4", l4)]);
    assert!(policies.evaluate(&Req::tcp().facts()).allowed);
}

#[test]
fn on_tcp_a_deny_rule_ignores_its_http_only_fields_and_still_denies() {
    let deny = "
action: DENY
rules:
- from:
  - source:
      namespaces: [shop]
      notRequestPrincipals: [\"*\"]
  to:
  - operation:
      paths: [\"/admin/*\"]
      methods: [DELETE]
  when:
  - key: request.headers[x-debug]
    values: [\"1\"]
";
    let policies = compile(&[policy("deny-admin", deny)]);
    let decision = policies.evaluate(&Req::tcp().facts());
    assert!(!decision.allowed, "the rule's L4 part matches, so the connection is denied");
    assert_eq!(decision.decided_by.map(|m| m.rule), Some(0));

    let elsewhere = Req::tcp().peer(Some("cluster.local/ns/web/sa/frontend"));
    assert!(policies.evaluate(&elsewhere.facts()).allowed, "the namespace is still checked");

    assert!(policies.evaluate(&Req::http().facts()).allowed, "on HTTP every field is checked");

    let jwt_only =
        compile(&[policy("deny-jwt", "action: DENY\nrules:\n- {from: [{source: {requestPrincipals: [\"*\"]}}]}\n")]);
    assert!(!jwt_only.evaluate(&Req::tcp().facts()).allowed, "a DENY of HTTP-only fields denies all TCP");
}

#[test]
fn on_tcp_an_audit_rule_ignores_its_http_only_fields() {
    let audit = "action: AUDIT\nrules:\n- {to: [{operation: {ports: [\"8080\"], paths: [/x]}}]}\n";
    let policies = compile(&[policy("audit-x", audit)]);
    let decision = policies.evaluate(&Req::tcp().facts());
    assert!(decision.allowed);
    assert_eq!(decision.audits.len(), 1);
}

#[test]
fn compile_errors_name_the_policy_and_the_field() {
    let bad_ip = "
action: DENY
rules:
- from:
  - source:
      ipBlocks: [10.0.0.0/8, 10.0.0.300/8]
";
    let err = AuthzPolicies::compile(&[policy("deny-x", bad_ip)]).expect_err("bad IP is refused");
    assert!(matches!(&err, Error::Authorization { policy, .. } if policy == "shop/deny-x"));
    assert_eq!(
        err.to_string(),
        r#"policy shop/deny-x: rules[0].from[0].source.ipBlocks[1]: "10.0.0.300/8" is not an IP or CIDR"#
    );
    let cases = [
        (
            "rules:\n- {from: [{source: {notRemoteIpBlocks: [10.0.0.0/33]}}]}",
            "rules[0].from[0].source.notRemoteIpBlocks[0]: \"10.0.0.0/33\" is not an IP or CIDR",
        ),
        (
            "rules:\n- {}\n- {to: [{operation: {ports: [\"http\"]}}]}",
            "rules[1].to[0].operation.ports[0]: \"http\" is not a port (1-65535)",
        ),
        (
            "rules:\n- {to: [{operation: {notPorts: [\"70000\"]}}]}",
            "rules[0].to[0].operation.notPorts[0]: \"70000\" is not a port (1-65535)",
        ),
        (
            "rules:\n- {from: [{source: {principals: [\"\"]}}]}",
            "rules[0].from[0].source.principals[0]: value must not be empty",
        ),
        (
            "rules:\n- {when: [{key: request.color, values: [red]}]}",
            "rules[0].when[0].key: unknown condition key \"request.color\"",
        ),
        (
            "rules:\n- {when: [{key: request.headers, values: [x]}]}",
            "rules[0].when[0].key: condition key \"request.headers\" must have the form name[entry] (or claims[a][b])",
        ),
        (
            "rules:\n- {when: [{key: \"request.headers[a b]\", values: [x]}]}",
            "rules[0].when[0].key: condition key \"request.headers[a b]\": \"a b\" is not a valid header name",
        ),
        ("rules:\n- {when: [{key: source.ip, values: [x]}]}", "rules[0].when[0].values[0]: \"x\" is not an IP or CIDR"),
        (
            "rules:\n- {when: [{key: destination.port, notValues: [\"0\"]}]}",
            "rules[0].when[0].notValues[0]: \"0\" is not a port (1-65535)",
        ),
        ("rules:\n- {when: [{key: source.ip}]}", "rules[0].when[0]: condition \"source.ip\" needs values or notValues"),
        ("rules:\n- {from: []}", "rules[0].from: must not be empty when set"),
        ("rules:\n- {to: [{}]}", "rules[0].to[0].operation: must be set"),
        (
            "rules:\n- {to: [{operation: {paths: [\"/a/{**}/{*}\"]}}]}",
            "rules[0].to[0].operation.paths[0]: path template \"/a/{**}/{*}\" has an operator after {**}, which must be last",
        ),
        (
            "rules:\n- {from: [{source: {serviceAccounts: [\"front*\"]}}]}",
            "rules[0].from[0].source.serviceAccounts[0]: service account \"front*\" must not contain a wildcard",
        ),
    ];
    for (spec, field_and_message) in cases {
        assert_eq!(compile_error(spec), format!("policy shop/bad: {field_and_message}"), "for {spec}");
    }
}
