//! Field by field: every Source and Operation field, its `not` form and string forms, and every `when` key.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use trellis_api::istio::AuthorizationPolicySpec;
use trellis_api::istio::authorization_policy::Action;
use trellis_api::proxy_config::{AuthorizationAction, AuthorizationRule};

use super::*;

/// The namespace every policy under test lives in.
const NS: &str = "shop";

/// A policy as the control plane hands it over, from the spec's Istio YAML.
fn policy(name: &str, spec: &str) -> AuthorizationRule {
    let spec: AuthorizationPolicySpec = serde_saphyr::from_str(spec).expect("policy YAML parses");
    let action = match spec.effective_action() {
        Action::Allow => AuthorizationAction::Allow,
        Action::Deny => AuthorizationAction::Deny,
        Action::Audit => AuthorizationAction::Audit,
        Action::Custom => panic!("CUSTOM is not compiled by the proxy"),
    };
    AuthorizationRule { policy: format!("{NS}/{name}"), action, rules: spec.rules.unwrap_or_default() }
}

fn compile(policies: &[AuthorizationRule]) -> AuthzPolicies {
    AuthzPolicies::compile(policies).expect("policies compile")
}

fn compile_error(spec: &str) -> String {
    AuthzPolicies::compile(&[policy("bad", spec)]).expect_err("policy is refused").to_string()
}

/// A request's facts, owned, with defaults a test changes one at a time.
#[derive(Debug, Clone)]
struct Req {
    source_ip: IpAddr,
    remote_ip: IpAddr,
    destination_ip: IpAddr,
    port: u16,
    peer: Option<String>,
    sni: Option<String>,
    http: Option<HttpReq>,
}

#[derive(Debug, Clone)]
struct HttpReq {
    host: String,
    method: String,
    path: String,
    headers: HeaderMap,
    jwt: Option<(String, Value)>,
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP parses")
}

impl Req {
    /// `GET shop.example.com/api/v1/items?page=2` on port 8080 from `shop/frontend` over mutual TLS.
    fn http() -> Req {
        Req {
            http: Some(HttpReq {
                host: "shop.example.com".into(),
                method: "GET".into(),
                path: "/api/v1/items?page=2".into(),
                headers: HeaderMap::new(),
                jwt: None,
            }),
            ..Req::tcp()
        }
    }

    /// A TCP connection on port 8080 from `shop/frontend` over mutual TLS.
    fn tcp() -> Req {
        Req {
            source_ip: ip("10.1.2.3"),
            remote_ip: ip("10.1.2.3"),
            destination_ip: ip("10.9.0.5"),
            port: 8080,
            peer: Some("cluster.local/ns/shop/sa/frontend".into()),
            sni: Some("outbound_.8080_._.cart.shop.svc.cluster.local".into()),
            http: None,
        }
    }

    fn peer(mut self, peer: Option<&str>) -> Req {
        self.peer = peer.map(Into::into);
        self
    }

    fn with_http(mut self, change: impl FnOnce(&mut HttpReq)) -> Req {
        change(self.http.as_mut().expect("an HTTP request"));
        self
    }

    fn header(self, name: &'static str, value: &'static str) -> Req {
        self.with_http(|h| {
            h.headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        })
    }

    fn jwt(self, principal: &str, claims: Value) -> Req {
        self.with_http(|h| h.jwt = Some((principal.into(), claims)))
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            destination_port: self.port,
            peer: self.peer.as_deref(),
            sni: self.sni.as_deref(),
            http: self.http.as_ref().map(|h| HttpFacts {
                host: &h.host,
                method: &h.method,
                path: &h.path,
                headers: &h.headers,
                jwt: h.jwt.as_ref().map(|(principal, claims)| JwtFacts { principal, claims }),
            }),
        }
    }
}

fn user_jwt(req: Req) -> Req {
    req.jwt(
        "https://issuer.example.com/user-1",
        json!({
            "iss": "https://issuer.example.com", "sub": "user-1",
            "aud": ["shop", "cart"], "azp": "web-app",
            "groups": ["buyers", "admins"], "tier": "gold", "age": 42,
            "org": {"team": {"role": "owner"}, "roles": ["dev"]},
        }),
    )
}

/// Runs rows of (what, one rule in Istio YAML, request, whether the rule matches), each as the only rule of
/// the only ALLOW policy, so "allowed" is "the rule matched".
fn table(rows: Vec<(&str, &str, Req, bool)>) {
    let mut failures = Vec::new();
    for (what, rule, req, expected) in rows {
        let compiled = compile(&[policy("under-test", &format!("action: ALLOW\nrules:\n- {rule}\n"))]);
        let decision = compiled.evaluate(&req.facts());
        if decision.allowed != expected {
            failures.push(format!("{what}: rule {rule} expected match={expected}, got {decision}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn source_principals_match_every_form_and_their_not_form_excludes() {
    let plain = || Req::http().peer(None);
    table(vec![
        ("exact", r#"{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}"#, Req::http(), true),
        ("exact other", r#"{from: [{source: {principals: [cluster.local/ns/shop/sa/admin]}}]}"#, Req::http(), false),
        ("prefix", r#"{from: [{source: {principals: ["cluster.local/ns/shop/*"]}}]}"#, Req::http(), true),
        ("prefix other", r#"{from: [{source: {principals: ["cluster.local/ns/web/*"]}}]}"#, Req::http(), false),
        ("suffix", r#"{from: [{source: {principals: ["*/sa/frontend"]}}]}"#, Req::http(), true),
        ("suffix other", r#"{from: [{source: {principals: ["*/sa/admin"]}}]}"#, Req::http(), false),
        ("any authenticated peer", r#"{from: [{source: {principals: ["*"]}}]}"#, Req::http(), true),
        ("* needs a peer", r#"{from: [{source: {principals: ["*"]}}]}"#, plain(), false),
        (
            "exact needs a peer",
            r#"{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}"#,
            plain(),
            false,
        ),
        ("one of several", r#"{from: [{source: {principals: [a/ns/b/sa/c, "*/sa/frontend"]}}]}"#, Req::http(), true),
        (
            "not exact",
            r#"{from: [{source: {notPrincipals: [cluster.local/ns/shop/sa/frontend]}}]}"#,
            Req::http(),
            false,
        ),
        ("not other", r#"{from: [{source: {notPrincipals: [cluster.local/ns/shop/sa/admin]}}]}"#, Req::http(), true),
        ("not * (unauthenticated only)", r#"{from: [{source: {notPrincipals: ["*"]}}]}"#, plain(), true),
        ("not * with a peer", r#"{from: [{source: {notPrincipals: ["*"]}}]}"#, Req::http(), false),
    ]);
}

#[test]
fn source_namespaces_service_accounts_and_trust_domains_come_from_the_peer_identity() {
    let plain = || Req::http().peer(None);
    table(vec![
        ("namespace exact", "{from: [{source: {namespaces: [shop]}}]}", Req::http(), true),
        ("namespace other", "{from: [{source: {namespaces: [web]}}]}", Req::http(), false),
        ("namespace prefix", r#"{from: [{source: {namespaces: ["sh*"]}}]}"#, Req::http(), true),
        ("namespace suffix", r#"{from: [{source: {namespaces: ["*op"]}}]}"#, Req::http(), true),
        ("namespace presence", r#"{from: [{source: {namespaces: ["*"]}}]}"#, Req::http(), true),
        ("namespace needs a peer", "{from: [{source: {namespaces: [shop]}}]}", plain(), false),
        ("not namespace", "{from: [{source: {notNamespaces: [shop]}}]}", Req::http(), false),
        ("not other namespace", "{from: [{source: {notNamespaces: [web]}}]}", Req::http(), true),
        ("not namespace without peer", "{from: [{source: {notNamespaces: [shop]}}]}", plain(), true),
        (
            "service account in the policy's namespace",
            "{from: [{source: {serviceAccounts: [frontend]}}]}",
            Req::http(),
            true,
        ),
        ("service account with namespace", "{from: [{source: {serviceAccounts: [shop/frontend]}}]}", Req::http(), true),
        ("service account elsewhere", "{from: [{source: {serviceAccounts: [web/frontend]}}]}", Req::http(), false),
        (
            "bare service account is the policy's namespace",
            "{from: [{source: {serviceAccounts: [frontend]}}]}",
            Req::http().peer(Some("cluster.local/ns/web/sa/frontend")),
            false,
        ),
        ("not service account", "{from: [{source: {notServiceAccounts: [frontend]}}]}", Req::http(), false),
        ("not other service account", "{from: [{source: {notServiceAccounts: [admin]}}]}", Req::http(), true),
        ("trust domain exact", "{from: [{source: {trustDomains: [cluster.local]}}]}", Req::http(), true),
        ("trust domain suffix", r#"{from: [{source: {trustDomains: ["*.local"]}}]}"#, Req::http(), true),
        ("trust domain other", "{from: [{source: {trustDomains: [corp.example]}}]}", Req::http(), false),
        ("not trust domain", "{from: [{source: {notTrustDomains: [cluster.local]}}]}", Req::http(), false),
    ]);
}

#[test]
fn request_principals_match_the_jwt_issuer_and_subject() {
    let signed = || user_jwt(Req::http());
    table(vec![
        ("exact", "{from: [{source: {requestPrincipals: [https://issuer.example.com/user-1]}}]}", signed(), true),
        (
            "exact other",
            "{from: [{source: {requestPrincipals: [https://issuer.example.com/user-2]}}]}",
            signed(),
            false,
        ),
        ("prefix", r#"{from: [{source: {requestPrincipals: ["https://issuer.example.com/*"]}}]}"#, signed(), true),
        ("suffix", r#"{from: [{source: {requestPrincipals: ["*/user-1"]}}]}"#, signed(), true),
        ("presence", r#"{from: [{source: {requestPrincipals: ["*"]}}]}"#, signed(), true),
        ("presence without a JWT", r#"{from: [{source: {requestPrincipals: ["*"]}}]}"#, Req::http(), false),
        ("not presence without a JWT", r#"{from: [{source: {notRequestPrincipals: ["*"]}}]}"#, Req::http(), true),
        (
            "not exact",
            "{from: [{source: {notRequestPrincipals: [https://issuer.example.com/user-1]}}]}",
            signed(),
            false,
        ),
    ]);
}

#[test]
fn ip_blocks_match_the_source_address_and_remote_ip_blocks_the_original_client() {
    let forwarded = || Req { remote_ip: ip("203.0.113.7"), ..Req::http() };
    let v6 = || Req { source_ip: ip("2001:db8::7"), ..Req::http() };
    let mapped = || Req { source_ip: ip("::ffff:10.1.2.3"), ..Req::http() };
    table(vec![
        ("cidr", "{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}", Req::http(), true),
        ("single address", "{from: [{source: {ipBlocks: [10.1.2.3]}}]}", Req::http(), true),
        ("other cidr", "{from: [{source: {ipBlocks: [192.168.0.0/16]}}]}", Req::http(), false),
        ("host bits are ignored", "{from: [{source: {ipBlocks: [10.1.2.99/24]}}]}", Req::http(), true),
        ("zero prefix is everything", "{from: [{source: {ipBlocks: [0.0.0.0/0]}}]}", Req::http(), true),
        ("ipv6", r#"{from: [{source: {ipBlocks: ["2001:db8::/32"]}}]}"#, v6(), true),
        ("ipv6 against ipv4", "{from: [{source: {ipBlocks: [0.0.0.0/0]}}]}", v6(), false),
        ("ipv4-mapped ipv6", "{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}", mapped(), true),
        ("not cidr", "{from: [{source: {notIpBlocks: [10.0.0.0/8]}}]}", Req::http(), false),
        ("not other cidr", "{from: [{source: {notIpBlocks: [192.168.0.0/16]}}]}", Req::http(), true),
        ("remote", "{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}", forwarded(), true),
        ("remote is not source", "{from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]}", forwarded(), false),
        ("source is not remote", "{from: [{source: {ipBlocks: [203.0.113.0/24]}}]}", forwarded(), false),
        ("not remote", "{from: [{source: {notRemoteIpBlocks: [203.0.113.0/24]}}]}", forwarded(), false),
    ]);
}

#[test]
fn hosts_match_case_insensitively_and_as_sent_port_included() {
    let with_port = || Req::http().with_http(|h| h.host = "shop.example.com:8080".into());
    table(vec![
        ("exact", "{to: [{operation: {hosts: [shop.example.com]}}]}", Req::http(), true),
        ("exact ignores case", "{to: [{operation: {hosts: [SHOP.Example.COM]}}]}", Req::http(), true),
        ("exact other", "{to: [{operation: {hosts: [cart.example.com]}}]}", Req::http(), false),
        ("prefix", r#"{to: [{operation: {hosts: ["SHOP.*"]}}]}"#, Req::http(), true),
        ("suffix", r#"{to: [{operation: {hosts: ["*.EXAMPLE.com"]}}]}"#, Req::http(), true),
        ("suffix other", r#"{to: [{operation: {hosts: ["*.example.org"]}}]}"#, Req::http(), false),
        ("presence", r#"{to: [{operation: {hosts: ["*"]}}]}"#, Req::http(), true),
        ("exact does not drop the port", "{to: [{operation: {hosts: [shop.example.com]}}]}", with_port(), false),
        ("host:* takes any port", r#"{to: [{operation: {hosts: ["shop.example.com:*"]}}]}"#, with_port(), true),
        ("not exact", "{to: [{operation: {notHosts: [shop.example.com]}}]}", Req::http(), false),
        ("not other", "{to: [{operation: {notHosts: [cart.example.com]}}]}", Req::http(), true),
    ]);
}

#[test]
fn ports_and_methods_match_exactly() {
    table(vec![
        ("port", r#"{to: [{operation: {ports: ["8080"]}}]}"#, Req::http(), true),
        ("other port", r#"{to: [{operation: {ports: ["9090", "9091"]}}]}"#, Req::http(), false),
        ("not port", r#"{to: [{operation: {notPorts: ["8080"]}}]}"#, Req::http(), false),
        ("not other port", r#"{to: [{operation: {notPorts: ["9090"]}}]}"#, Req::http(), true),
        ("method", "{to: [{operation: {methods: [GET, HEAD]}}]}", Req::http(), true),
        ("method is case-sensitive", "{to: [{operation: {methods: [get]}}]}", Req::http(), false),
        ("other method", "{to: [{operation: {methods: [POST]}}]}", Req::http(), false),
        ("method prefix", r#"{to: [{operation: {methods: ["G*"]}}]}"#, Req::http(), true),
        ("method suffix", r#"{to: [{operation: {methods: ["*ET"]}}]}"#, Req::http(), true),
        ("not method", "{to: [{operation: {notMethods: [GET]}}]}", Req::http(), false),
        ("not other method", "{to: [{operation: {notMethods: [DELETE]}}]}", Req::http(), true),
    ]);
}

#[test]
fn paths_match_without_the_query_in_every_form_and_template() {
    table(vec![
        ("exact", "{to: [{operation: {paths: [/api/v1/items]}}]}", Req::http(), true),
        ("exact other", "{to: [{operation: {paths: [/api/v1]}}]}", Req::http(), false),
        ("prefix", r#"{to: [{operation: {paths: ["/api/*"]}}]}"#, Req::http(), true),
        ("prefix other", r#"{to: [{operation: {paths: ["/admin/*"]}}]}"#, Req::http(), false),
        ("suffix", r#"{to: [{operation: {paths: ["*/items"]}}]}"#, Req::http(), true),
        ("suffix does not see the query", r#"{to: [{operation: {paths: ["*page=2"]}}]}"#, Req::http(), false),
        ("presence", r#"{to: [{operation: {paths: ["*"]}}]}"#, Req::http(), true),
        ("template one segment", "{to: [{operation: {paths: [\"/api/{*}/items\"]}}]}", Req::http(), true),
        ("template one segment is one", "{to: [{operation: {paths: [\"/api/{*}\"]}}]}", Req::http(), false),
        ("template any segments", "{to: [{operation: {paths: [\"/api/{**}\"]}}]}", Req::http(), true),
        ("template any then literal", "{to: [{operation: {paths: [\"/{**}/items\"]}}]}", Req::http(), true),
        ("not exact", "{to: [{operation: {notPaths: [/api/v1/items]}}]}", Req::http(), false),
        ("not prefix other", r#"{to: [{operation: {notPaths: ["/admin*"]}}]}"#, Req::http(), true),
    ]);
}

#[test]
fn conditions_on_connection_attributes_match_values_and_exclude_not_values() {
    let when = |key: &str, list: &str, values: &str| format!("{{when: [{{key: \"{key}\", {list}: {values}}}]}}");
    let rows: Vec<(String, String, Req, bool)> = vec![
        ("source.ip".into(), when("source.ip", "values", "[10.0.0.0/8]"), Req::http(), true),
        ("source.ip other".into(), when("source.ip", "values", "[10.9.9.9]"), Req::http(), false),
        ("source.ip not".into(), when("source.ip", "notValues", "[10.0.0.0/8]"), Req::http(), false),
        ("remote.ip".into(), when("remote.ip", "values", "[10.1.2.3]"), Req::http(), true),
        ("destination.ip".into(), when("destination.ip", "values", "[10.9.0.0/16]"), Req::http(), true),
        ("destination.ip not".into(), when("destination.ip", "notValues", "[10.9.0.5]"), Req::http(), false),
        ("destination.port".into(), when("destination.port", "values", "[\"8080\"]"), Req::http(), true),
        ("destination.port other".into(), when("destination.port", "values", "[\"80\"]"), Req::http(), false),
        ("source.namespace".into(), when("source.namespace", "values", "[shop]"), Req::http(), true),
        ("source.namespace prefix".into(), when("source.namespace", "values", "[\"sh*\"]"), Req::http(), true),
        ("source.namespace not".into(), when("source.namespace", "notValues", "[shop]"), Req::http(), false),
        ("source.principal".into(), when("source.principal", "values", "[\"*/sa/frontend\"]"), Req::http(), true),
        ("source.principal plain".into(), when("source.principal", "values", "[\"*\"]"), Req::http().peer(None), false),
        ("source.serviceAccount".into(), when("source.serviceAccount", "values", "[frontend]"), Req::http(), true),
        ("source.serviceAccount other".into(), when("source.serviceAccount", "values", "[web/x]"), Req::http(), false),
        ("connection.sni".into(), when("connection.sni", "values", "[\"*.cluster.local\"]"), Req::http(), true),
        ("connection.sni not".into(), when("connection.sni", "notValues", "[\"outbound_*\"]"), Req::http(), false),
    ];
    table(rows.iter().map(|(w, r, q, e)| (w.as_str(), r.as_str(), q.clone(), *e)).collect());
}

#[test]
fn conditions_on_headers_match_the_joined_value_and_pseudo_headers() {
    let when = |key: &str, list: &str, values: &str| format!("{{when: [{{key: \"{key}\", {list}: {values}}}]}}");
    let tenant = || Req::http().header("x-tenant", "acme");
    let two_lines = || Req::http().header("x-tenant", "acme").header("x-tenant", "globex");
    let rows: Vec<(String, String, Req, bool)> = vec![
        ("exact".into(), when("request.headers[X-Tenant]", "values", "[acme]"), tenant(), true),
        ("value is case-sensitive".into(), when("request.headers[x-tenant]", "values", "[ACME]"), tenant(), false),
        ("prefix".into(), when("request.headers[x-tenant]", "values", "[\"ac*\"]"), tenant(), true),
        ("suffix".into(), when("request.headers[x-tenant]", "values", "[\"*me\"]"), tenant(), true),
        ("presence".into(), when("request.headers[x-tenant]", "values", "[\"*\"]"), tenant(), true),
        ("absent".into(), when("request.headers[x-tenant]", "values", "[\"*\"]"), Req::http(), false),
        ("not absent".into(), when("request.headers[x-tenant]", "notValues", "[acme]"), Req::http(), true),
        ("not".into(), when("request.headers[x-tenant]", "notValues", "[acme]"), tenant(), false),
        ("lines joined".into(), when("request.headers[x-tenant]", "values", "[\"acme,globex\"]"), two_lines(), true),
        ("one line of two".into(), when("request.headers[x-tenant]", "values", "[globex]"), two_lines(), false),
        (
            "inline element".into(),
            when("request.experimental.inline.headers[x-tenant]", "values", "[globex]"),
            two_lines(),
            true,
        ),
        (":authority".into(), when("request.headers[:authority]", "values", "[shop.example.com]"), Req::http(), true),
        ("host".into(), when("request.headers[Host]", "values", "[\"shop.*\"]"), Req::http(), true),
        (":method".into(), when("request.headers[:method]", "values", "[GET]"), Req::http(), true),
        (":path keeps the query".into(), when("request.headers[:path]", "values", "[\"*page=2\"]"), Req::http(), true),
    ];
    table(rows.iter().map(|(w, r, q, e)| (w.as_str(), r.as_str(), q.clone(), *e)).collect());
}

#[test]
fn conditions_on_the_jwt_read_principal_audiences_presenter_and_nested_claims() {
    let when = |key: &str, list: &str, values: &str| format!("{{when: [{{key: \"{key}\", {list}: {values}}}]}}");
    let signed = || user_jwt(Req::http());
    let single_aud = || Req::http().jwt("i/s", json!({"aud": "shop"}));
    let rows: Vec<(String, String, Req, bool)> = vec![
        ("principal".into(), when("request.auth.principal", "values", "[\"*/user-1\"]"), signed(), true),
        ("principal absent".into(), when("request.auth.principal", "values", "[\"*\"]"), Req::http(), false),
        ("audience in a list".into(), when("request.auth.audiences", "values", "[cart]"), signed(), true),
        ("audience as a string".into(), when("request.auth.audiences", "values", "[shop]"), single_aud(), true),
        ("audience other".into(), when("request.auth.audiences", "values", "[billing]"), signed(), false),
        ("audience not".into(), when("request.auth.audiences", "notValues", "[cart]"), signed(), false),
        ("presenter".into(), when("request.auth.presenter", "values", "[web-app]"), signed(), true),
        ("presenter other".into(), when("request.auth.presenter", "values", "[cli]"), signed(), false),
        ("claim string".into(), when("request.auth.claims[tier]", "values", "[gold]"), signed(), true),
        ("claim list element".into(), when("request.auth.claims[groups]", "values", "[admins]"), signed(), true),
        ("claim list prefix".into(), when("request.auth.claims[groups]", "values", "[\"buy*\"]"), signed(), true),
        ("claim list other".into(), when("request.auth.claims[groups]", "values", "[guests]"), signed(), false),
        ("claim list not".into(), when("request.auth.claims[groups]", "notValues", "[admins]"), signed(), false),
        ("nested claim".into(), when("request.auth.claims[org][team][role]", "values", "[owner]"), signed(), true),
        ("nested list".into(), when("request.auth.claims[org][roles]", "values", "[dev]"), signed(), true),
        ("number claim never matches".into(), when("request.auth.claims[age]", "values", "[\"42\"]"), signed(), false),
        ("missing claim".into(), when("request.auth.claims[nope]", "values", "[\"*\"]"), signed(), false),
        ("missing claim not".into(), when("request.auth.claims[nope]", "notValues", "[x]"), signed(), true),
        ("claim without JWT".into(), when("request.auth.claims[tier]", "values", "[gold]"), Req::http(), false),
    ];
    table(rows.iter().map(|(w, r, q, e)| (w.as_str(), r.as_str(), q.clone(), *e)).collect());
}

#[test]
fn a_rule_needs_any_from_any_to_and_every_when_and_a_source_needs_every_field() {
    table(vec![
        ("empty rule matches all", "{}", Req::http(), true),
        (
            "from any entry",
            "{from: [{source: {namespaces: [web]}}, {source: {namespaces: [shop]}}]}",
            Req::http(),
            true,
        ),
        ("to any entry", "{to: [{operation: {methods: [POST]}}, {operation: {ports: [\"8080\"]}}]}", Req::http(), true),
        (
            "source fields AND",
            "{from: [{source: {namespaces: [shop], ipBlocks: [192.168.0.0/16]}}]}",
            Req::http(),
            false,
        ),
        ("operation fields AND", "{to: [{operation: {methods: [GET], paths: [/other]}}]}", Req::http(), false),
        (
            "from AND to",
            "{from: [{source: {namespaces: [shop]}}], to: [{operation: {methods: [POST]}}]}",
            Req::http(),
            false,
        ),
        (
            "every when",
            r#"{when: [{key: source.namespace, values: [shop]}, {key: destination.port, values: ["9090"]}]}"#,
            Req::http(),
            false,
        ),
        (
            "all parts matching",
            r#"{from: [{source: {principals: ["*"]}}], to: [{operation: {paths: ["/api/*"]}}], when: [{key: source.ip, values: [10.0.0.0/8]}]}"#,
            Req::http(),
            true,
        ),
    ]);
}

mod decisions;
