//! DestinationRule traffic policy on clusters (top level, port level, subset level and Istio's defaults)
//! and the security of a sidecar's inbound ports (PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication with their scopes).

mod support;

use std::time::Duration;

use support::*;
use trellis_api::proxy_config::{
    AuthorizationAction, ConnectionPool, HashKey, InboundMtls, JwtClaimToHeader, JwtHeader, LoadBalancer,
    OutlierDetection, UpstreamTls,
};
use trellis_controlplane::Index;
use trellis_controlplane::index::Kind;
use trellis_controlplane::translate::{
    DEFAULT_BASE_EJECTION_TIME, DEFAULT_CONSECUTIVE_5XX_ERRORS, DEFAULT_JWT_HEADER, DEFAULT_JWT_PARAM,
    DEFAULT_JWT_PREFIX, DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_OUTLIER_INTERVAL, cluster_name,
};

const PRICING: &str = "pricing.shop.svc.cluster.local";

fn pricing(port: u16, subset: &str) -> String {
    cluster_name(port, subset, PRICING)
}

fn translated() -> trellis_controlplane::Translation {
    let index = index(&["policy.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "client"));
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
    t
}

#[test]
fn the_rules_top_level_policy_shapes_every_cluster_of_the_host() {
    let t = translated();
    let http = cluster(&t.config, &pricing(9080, ""));
    assert_eq!(http.load_balancer, LoadBalancer::ConsistentHash(HashKey::Header("x-user".into())));
    assert_eq!(
        http.connection_pool,
        Some(ConnectionPool {
            max_connections: Some(10),
            connect_timeout: Some(Duration::from_millis(250)),
            max_requests: Some(100),
            max_retries: Some(2),
            idle_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        })
    );
    assert_eq!(http.tls, UpstreamTls::IstioMutual);
}

#[test]
fn an_empty_outlier_detection_gets_istios_defaults() {
    let t = translated();
    assert_eq!(
        cluster(&t.config, &pricing(9080, "")).outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx_errors: Some(DEFAULT_CONSECUTIVE_5XX_ERRORS),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            interval: DEFAULT_OUTLIER_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            min_health_percent: 0,
        })
    );
}

#[test]
fn port_level_settings_replace_the_top_level_as_a_whole_for_their_port() {
    let t = translated();
    let grpc = cluster(&t.config, &pricing(9090, ""));
    assert_eq!(grpc.load_balancer, LoadBalancer::LeastRequest);
    assert_eq!(grpc.tls, UpstreamTls::Disable);
    // Istio: "settings specified at the destination-level will not be inherited when overridden by
    // port-level settings", so what the port-level entry omits takes its default.
    assert_eq!(grpc.connection_pool, None, "not inherited from the top level");
    assert_eq!(grpc.outlier_detection, None, "not inherited from the top level");
}

#[test]
fn a_subsets_policy_overrides_the_rules_including_its_port_level_settings_field_by_field() {
    let t = translated();
    let canary = cluster(&t.config, &pricing(9080, "canary"));
    assert_eq!(canary.load_balancer, LoadBalancer::Random);
    let outlier = canary.outlier_detection.clone().expect("subset outlier detection");
    assert_eq!(outlier.consecutive_gateway_errors, Some(3));
    assert_eq!(outlier.interval, Duration::from_secs(5));
    assert_eq!(canary.connection_pool, cluster(&t.config, &pricing(9080, "")).connection_pool, "inherited");
    assert_eq!(addresses(canary), ["10.8.0.2:9080"]);
    // Istio's MergeSubsetTrafficPolicy: the rule's port-level entry first, then the subset over it.
    let canary_grpc = cluster(&t.config, &pricing(9090, "canary"));
    assert_eq!(canary_grpc.load_balancer, LoadBalancer::Random, "the subset's own setting wins");
    assert_eq!(canary_grpc.tls, UpstreamTls::Disable, "the rule's port-level TLS, which the subset leaves");
    assert_eq!(canary_grpc.outlier_detection, canary.outlier_detection);
    assert_eq!(canary_grpc.connection_pool, None, "the port-level entry did not inherit it");
}

#[test]
fn a_subsets_own_port_level_settings_replace_everything_for_their_port() {
    let t = translated();
    let sticky = cluster(&t.config, &pricing(9080, "sticky"));
    let cookie = HashKey::Cookie { name: "session".into(), ttl: Some(Duration::from_secs(60)) };
    assert_eq!(sticky.load_balancer, LoadBalancer::ConsistentHash(cookie));
    assert_eq!(sticky.tls, UpstreamTls::IstioMutual, "the rule's top level, no port-level entry for 9080");
    let sticky_grpc = cluster(&t.config, &pricing(9090, "sticky"));
    assert_eq!(sticky_grpc.load_balancer, LoadBalancer::ConsistentHash(HashKey::SourceIp));
    assert_eq!(sticky_grpc.tls, UpstreamTls::Auto, "omitted by the subset's port-level entry: the default");
    assert_eq!(sticky_grpc.connection_pool, None);
}

#[test]
fn workload_entry_ports_weights_and_tls_mode_shape_the_endpoints() {
    let t = translated();
    let grpc = cluster(&t.config, &pricing(9090, ""));
    assert_eq!(addresses(grpc), ["10.8.0.1:19090", "10.8.0.2:9090"], "the entry's port for the port name");
    assert_eq!(grpc.endpoints[0].weight, 3);
    assert!(grpc.endpoints[0].meshed && !grpc.endpoints[1].meshed, "tlsMode: disabled has no proxy");
    assert!(grpc.endpoints[1].identity.is_empty());
}

#[test]
fn deprecated_consecutive_errors_count_gateway_errors_and_simple_tls_keeps_its_sni() {
    let t = translated();
    let legacy = cluster(&t.config, &cluster_name(80, "", "legacy.shop.svc.cluster.local"));
    let outlier = legacy.outlier_detection.clone().expect("outlier detection");
    assert_eq!((outlier.consecutive_5xx_errors, outlier.consecutive_gateway_errors), (None, Some(7)));
    assert_eq!(outlier.consecutive_local_origin_failures, Some(2), "split out, so counted on their own");
    assert_eq!(legacy.tls, UpstreamTls::Simple { sni: Some("legacy.example.com".into()), ca_certificates: None });
    assert_eq!(addresses(legacy), ["10.8.1.1:80"]);
}

const SECURITY: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: shop, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pricing, namespace: shop}
spec:
  selector: {matchLabels: {app: pricing}}
  mtls: {mode: UNSET}
  portLevelMtls:
    "19090": {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/debug/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: shop}
spec:
  selector: {matchLabels: {app: pricing}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: external, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: pricing-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: pricing}}
  jwtRules:
    - issuer: https://issuer.example.com
      audiences: [pricing]
      jwks: '{"keys": []}'
      fromHeaders: [{name: X-Jwt}]
      outputPayloadToHeader: X-Jwt-Payload
      outputClaimToHeaders: [{header: X-Tenant, claim: org.tenant}]
      forwardOriginalToken: true
      spaceDelimitedClaims: [roles]
      timeout: 5s
    - issuer: https://cookies.example.com
      jwksUri: https://cookies.example.com/jwks.json
      fromCookies: [session]
    - issuer: https://defaults.example.com
      jwks_uri: https://defaults.example.com/jwks.json
"#;

fn secured() -> trellis_controlplane::Translation {
    let policy = std::fs::read_to_string(fixtures().join("policy.yaml")).expect("fixture");
    let index = Index::from_yaml_documents(&format!("{policy}---{SECURITY}")).expect("valid YAML");
    run(&index, &sidecar(&index, "shop", "pricing-1"))
}

#[test]
fn the_most_specific_peer_authentication_decides_each_ports_mtls_mode() {
    let t = secured();
    let modes: Vec<(u16, InboundMtls)> = t.config.inbound.iter().map(|l| (l.port, l.mtls)).collect();
    assert_eq!(
        modes,
        [(0, InboundMtls::Permissive), (9080, InboundMtls::Permissive), (19090, InboundMtls::Disable)],
        "UNSET inherits the namespace's; the catch-all (port 0) carries the workload's policies to undeclared ports"
    );
}

#[test]
fn authorization_policies_from_the_root_and_the_workloads_namespace_apply_deny_first() {
    let t = secured();
    let rules = &t.config.inbound[0].authorization;
    let listed: Vec<(&str, AuthorizationAction)> = rules.iter().map(|r| (r.policy.as_str(), r.action)).collect();
    assert_eq!(
        listed,
        [
            ("istio-system/deny-debug", AuthorizationAction::Deny),
            ("shop/allow-client", AuthorizationAction::Allow),
            ("shop/audit", AuthorizationAction::Audit)
        ]
    );
    let custom = skipped_about(&t, Kind::AuthorizationPolicy, "shop", "external");
    assert_eq!(custom, ["spec.action: CUSTOM (external authorization) cannot be expressed yet; the policy is ignored"]);
}

#[test]
fn request_authentication_gives_jwt_providers_and_reports_what_it_cannot_express() {
    let t = secured();
    let jwt = &t.config.inbound[1].jwt;
    assert_eq!(jwt.len(), 3);
    assert_eq!(jwt[0].issuer, "https://issuer.example.com");
    assert_eq!(jwt[0].audiences, ["pricing"]);
    assert_eq!(jwt[0].from_headers[0].name, "x-jwt");
    assert!(jwt[0].from_params.is_empty(), "a named location replaces the defaults");
    let about = skipped_about(&t, Kind::RequestAuthentication, "shop", "pricing-jwt");
    assert!(about.is_empty(), "timeout bounds trellisd's JWKS fetch, so nothing is left out: {about:?}");
}

#[test]
fn a_jwt_rules_outputs_forwarding_and_space_delimited_claims_reach_the_proxy() {
    let t = secured();
    let jwt = &t.config.inbound[1].jwt[0];
    assert_eq!(jwt.output_payload_to_header.as_deref(), Some("x-jwt-payload"), "header names are lower case");
    assert_eq!(
        jwt.output_claim_to_headers,
        [JwtClaimToHeader { header: "x-tenant".into(), claim: "org.tenant".into() }]
    );
    assert!(jwt.forward_original_token);
    assert_eq!(jwt.space_delimited_claims, ["roles"]);
}

#[test]
fn a_jwt_rule_with_cookies_reads_only_them_and_one_without_a_location_gets_istios_defaults() {
    let t = secured();
    let cookies = &t.config.inbound[1].jwt[1];
    assert_eq!(cookies.from_cookies, ["session"]);
    assert!(cookies.from_headers.is_empty() && cookies.from_params.is_empty(), "a cookie is a named location");
    assert_eq!(cookies.jwks_uri.as_deref(), Some("https://cookies.example.com/jwks.json"));
    assert!(!cookies.forward_original_token, "the token is removed by default");
    let defaults = &t.config.inbound[1].jwt[2];
    assert_eq!(
        defaults.from_headers,
        [JwtHeader { name: DEFAULT_JWT_HEADER.into(), prefix: DEFAULT_JWT_PREFIX.into() }]
    );
    assert_eq!(defaults.from_params, [DEFAULT_JWT_PARAM]);
    assert_eq!(defaults.jwks_uri.as_deref(), Some("https://defaults.example.com/jwks.json"), "snake_case spelling");
}

#[test]
fn auto_mtls_talks_plain_text_to_a_workload_port_whose_peer_authentication_is_disable() {
    let policy = std::fs::read_to_string(fixtures().join("policy.yaml")).expect("fixture");
    let index = Index::from_yaml_documents(&format!("{policy}---{SECURITY}")).expect("valid YAML");
    let t = run(&index, &sidecar(&index, "shop", "client"));
    let meshed = |port: u16| -> Vec<(String, bool, bool)> {
        cluster(&t.config, &pricing(port, ""))
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.meshed, e.identity.is_empty()))
            .collect()
    };
    assert_eq!(
        meshed(9080),
        [("10.8.0.1:9080".to_owned(), true, false), ("10.8.0.2:9080".to_owned(), false, true)],
        "pricing-1's port 9080 is PERMISSIVE (inherited), so it stays meshed"
    );
    assert_eq!(
        meshed(9090),
        [("10.8.0.1:19090".to_owned(), false, true), ("10.8.0.2:9090".to_owned(), false, true)],
        "pricing-1's target port 19090 is DISABLE at port level: plain text, no expected identity"
    );
}
