//! Fields Trellis accepts but does not act on yet: each parses, survives a round trip, and `analyze`
//! warns about it at its own line; fields Trellis does act on raise no such warning.

mod common;

use common::normalize;
use trellis_api::analyze::{Finding, Source, analyze};
use trellis_api::document;
use trellis_api::object::decode;
use trellis_api::support::NOT_ACTED_ON_MESSAGE;

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  hosts: [reviews]\n";
const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  host: reviews\n";
const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: edge\n  namespace: shop\nspec:\n  selector: {istio: ingressgateway}\n";
const RA: &str =
    "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n";

/// Analyzes one file; returns the findings as lines and the not-acted-on warnings as (path, line).
fn warnings(yaml: &str) -> (Vec<String>, Vec<(String, usize)>) {
    let report = analyze(&[Source { name: "snippet.yaml".to_owned(), bytes: yaml.as_bytes().to_vec() }]);
    let lines = report.findings.iter().map(Finding::to_string).collect();
    let warned = report
        .findings
        .iter()
        .filter(|f| f.issue.message == NOT_ACTED_ON_MESSAGE)
        .map(|f| (f.issue.path.to_string(), f.line))
        .collect();
    assert!(!report.has_errors(), "{yaml}\n{:#?}", report.findings.iter().map(Finding::to_string).collect::<Vec<_>>());
    (lines, warned)
}

/// The 1-based line of the `nth` (from 0) line of `yaml` that starts (after indentation and `- `) with `key:`.
fn line_of(yaml: &str, key: &str, nth: usize) -> usize {
    let mut lines = yaml.lines().enumerate().filter(|(_, l)| {
        let l = l.trim_start().trim_start_matches("- ");
        l.starts_with(&format!("{key}:"))
    });
    lines.nth(nth).map(|(i, _)| i + 1).unwrap_or_else(|| panic!("{key} is not written {nth} times in {yaml}"))
}

/// The snippet decodes with no error and its typed form serializes back to the same document.
fn assert_round_trip(yaml: &str) {
    for doc in document::parse(yaml).expect("valid YAML") {
        let decoded = decode(&doc.value);
        let object = decoded.object.unwrap_or_else(|| panic!("not typed: {:?}", decoded.issues));
        let mut back = object.to_value().expect("serialize");
        back["apiVersion"] = doc.value["apiVersion"].clone();
        assert_eq!(normalize(&back), normalize(&doc.value), "round trip changed {yaml}");
    }
}

/// The snippet round-trips, and `analyze` warns about exactly `expected`, each on the line of its last
/// key (a key written twice: the paths in the order they are written).
fn assert_warned(yaml: &str, expected: &[&str]) {
    assert_round_trip(yaml);
    let (lines, warned) = warnings(yaml);
    for (i, path) in expected.iter().enumerate() {
        let key = path.rsplit('.').next().expect("a key");
        let earlier = expected[..i].iter().filter(|p| p.rsplit('.').next() == Some(key)).count();
        let line = line_of(yaml, key, earlier);
        assert!(warned.contains(&((*path).to_owned(), line)), "no warning at {path} on line {line}:\n{lines:#?}");
    }
    assert_eq!(warned.len(), expected.len(), "{lines:#?}");
}

#[test]
fn a_redirect_that_rewrites_a_prefix_is_warned_about() {
    let yaml = format!(
        "{VS}  http:\n    - redirect:\n        prefixRewrite: /v2/\n        derivePort: FROM_PROTOCOL_DEFAULT\n"
    );
    assert_warned(&yaml, &["spec.http[0].redirect.prefixRewrite"]);
}

#[test]
fn subnet_matches_of_tcp_and_tls_routes_are_warned_about() {
    let yaml = format!(
        "{VS}  tcp:\n    - match:\n        - destinationSubnets: [10.0.0.0/24]\n          sourceSubnet: 10.1.0.0/16\n      route:\n        - destination: {{host: reviews}}\n  tls:\n    - match:\n        - sniHosts: [reviews]\n          destinationSubnets: [10.2.0.0/24]\n      route:\n        - destination: {{host: reviews}}\n"
    );
    assert_warned(
        &yaml,
        &[
            "spec.tcp[0].match[0].destinationSubnets",
            "spec.tcp[0].match[0].sourceSubnet",
            "spec.tls[0].match[0].destinationSubnets",
        ],
    );
}

#[test]
fn zone_aware_and_backend_utilization_balancing_are_warned_about() {
    let yaml = format!(
        "{DR}  trafficPolicy:\n    loadBalancer:\n      backendUtilization:\n        weightUpdatePeriod: 1s\n      zoneAwareLbSetting:\n        enabled: true\n        minClusterSize: 2\n"
    );
    assert_warned(
        &yaml,
        &["spec.trafficPolicy.loadBalancer.backendUtilization", "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting"],
    );
}

#[test]
fn cookie_path_and_attributes_are_warned_about_but_the_cookie_is_used() {
    let yaml = format!(
        "{DR}  subsets:\n    - name: v1\n      labels: {{version: v1}}\n      trafficPolicy:\n        loadBalancer:\n          consistentHash:\n            httpCookie:\n              name: session\n              ttl: 60s\n              path: /shop\n              attributes:\n                - name: Secure\n"
    );
    let at = "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie";
    assert_warned(&yaml, &[&format!("{at}.path"), &format!("{at}.attributes")]);
}

#[test]
fn custom_ejection_codes_a_crl_and_a_budget_interval_are_warned_about() {
    let yaml = format!(
        "{DR}  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 3\n      outlierDetectionHttpErrorCodes: [500]\n    tls:\n      mode: SIMPLE\n      caCertificates: /etc/ca.pem\n      caCrl: /etc/crl.pem\n    retryBudget:\n      percent: 20\n      budgetInterval: 10s\n"
    );
    assert_warned(
        &yaml,
        &[
            "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes",
            "spec.trafficPolicy.tls.caCrl",
            "spec.trafficPolicy.retryBudget.budgetInterval",
        ],
    );
}

#[test]
fn fields_the_control_plane_applies_raise_no_warning() {
    // The workload selector chooses the rule, split local-origin errors eject, previous hosts are avoided
    // on retries and space-delimited claims are split: all acted on.
    let dr = format!(
        "{DR}  workloadSelector:\n    matchLabels: {{app: productpage}}\n  exportTo: [\".\"]\n  trafficPolicy:\n    outlierDetection:\n      splitExternalLocalOriginErrors: true\n      consecutiveLocalOriginFailures: 3\n"
    );
    assert_warned(&dr, &[]);
    let vs = format!(
        "{VS}  http:\n    - retries:\n        attempts: 2\n        retryIgnorePreviousHosts: false\n      route:\n        - destination: {{host: reviews}}\n"
    );
    assert_warned(&vs, &[]);
    let ra =
        format!("{RA}  jwtRules:\n    - issuer: https://issuer.example.com\n      spaceDelimitedClaims: [scope]\n");
    assert_warned(&ra, &[]);
}

#[test]
fn gateway_tls_is_warned_about_field_by_field_except_https_redirect() {
    let redirect = format!(
        "{GW}  servers:\n    - port: {{number: 80, name: http, protocol: HTTP}}\n      hosts: [\"*\"]\n      tls:\n        httpsRedirect: true\n"
    );
    assert_warned(&redirect, &[]);
    let https = format!(
        "{GW}  servers:\n    - port:\n        number: 443\n        name: https\n        protocol: HTTPS\n      hosts: [\"*\"]\n      tls:\n        mode: SIMPLE\n        credentialName: edge-cert\n        minProtocolVersion: TLSV1_2\n"
    );
    assert_warned(
        &https,
        &["spec.servers[0].tls.mode", "spec.servers[0].tls.credentialName", "spec.servers[0].tls.minProtocolVersion"],
    );
}

#[test]
fn jwt_presence_is_warned_about_and_the_fetch_timeout_is_not() {
    let yaml = format!(
        "{RA}  jwtRules:\n    - issuer: https://issuer.example.com\n      jwksUri: https://issuer.example.com/keys\n      timeout: 5s\n      presence: REQUIRED\n"
    );
    assert_warned(&yaml, &["spec.jwtRules[0].presence"]);
}

/// The value warnings of one file as (path, line, message).
fn value_warnings(yaml: &str) -> Vec<(String, usize, String)> {
    assert_round_trip(yaml);
    let report = analyze(&[Source { name: "snippet.yaml".to_owned(), bytes: yaml.as_bytes().to_vec() }]);
    report
        .findings
        .iter()
        .filter(|f| f.issue.message != NOT_ACTED_ON_MESSAGE && f.issue.message.ends_with(NOT_ACTED_ON_MESSAGE))
        .map(|f| (f.issue.path.to_string(), f.line, f.issue.message.clone()))
        .collect()
}

#[test]
fn values_the_control_plane_cannot_apply_are_warned_about_with_the_value() {
    let passthrough = format!("{DR}  trafficPolicy:\n    loadBalancer:\n      simple: PASSTHROUGH\n");
    assert_eq!(
        value_warnings(&passthrough),
        [("spec.trafficPolicy.loadBalancer.simple".to_owned(), 10, format!("PASSTHROUGH is {NOT_ACTED_ON_MESSAGE}"))]
    );
    let round_robin = format!("{DR}  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n");
    assert_eq!(value_warnings(&round_robin), []);
    let request_port =
        format!("{VS}  http:\n    - redirect:\n        uri: /v2\n        derivePort: FROM_REQUEST_PORT\n");
    assert_eq!(
        value_warnings(&request_port),
        [("spec.http[0].redirect.derivePort".to_owned(), 11, format!("FROM_REQUEST_PORT is {NOT_ACTED_ON_MESSAGE}"))]
    );
    let tcp =
        format!("{GW}  servers:\n    - port: {{number: 31400, name: tcp, protocol: TCP}}\n      hosts: [\"*\"]\n");
    assert_eq!(
        value_warnings(&tcp),
        [("spec.servers[0].port.protocol".to_owned(), 9, format!("TCP is {NOT_ACTED_ON_MESSAGE}"))]
    );
}
