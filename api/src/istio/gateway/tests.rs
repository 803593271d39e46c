use serde_json::{Value, json};

use super::*;
use crate::Severity;

fn spec(value: Value) -> GatewaySpec {
    serde_json::from_value(value).expect("valid Gateway spec")
}

fn issues_of(spec: &GatewaySpec, severity: Severity) -> Vec<(String, String)> {
    let mut issues = Issues::default();
    spec.validate(&FieldPath::of("spec"), &mut issues);
    issues.into_vec().into_iter().filter(|i| i.severity == severity).map(|i| (i.path.to_string(), i.message)).collect()
}

fn errors_of(spec: &GatewaySpec) -> Vec<(String, String)> {
    issues_of(spec, Severity::Error)
}

fn assert_error(spec: &GatewaySpec, path: &str, needle: &str) {
    let errors = errors_of(spec);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected an error at {path} containing {needle:?}, got {errors:?}"
    );
}

fn assert_warning(spec: &GatewaySpec, path: &str, needle: &str) {
    let warnings = issues_of(spec, Severity::Warning);
    assert!(
        warnings.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected a warning at {path} containing {needle:?}, got {warnings:?}"
    );
}

fn assert_valid(spec: &GatewaySpec) {
    let errors = errors_of(spec);
    assert!(errors.is_empty(), "unexpected errors: {errors:?}");
}

/// A gateway with the one server given.
fn one_server(server: Value) -> GatewaySpec {
    spec(json!({"selector": {"istio": "ingressgateway"}, "servers": [server]}))
}

fn http_server() -> Value {
    json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]})
}

/// An HTTPS server with the given TLS settings.
fn https_server(tls: Value) -> GatewaySpec {
    one_server(
        json!({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*.example.com"], "tls": tls}),
    )
}

#[test]
fn a_full_gateway_round_trips_unchanged() {
    let value = json!({
        "selector": {"istio": "ingressgateway"},
        "servers": [
            {
                "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                "hosts": ["bookinfo/*.example.com"],
                "tls": {"httpsRedirect": true},
                "name": "plain"
            },
            {
                "port": {"number": 443, "name": "https-files", "protocol": "HTTPS"},
                "bind": "0.0.0.0",
                "hosts": ["./files.example.com"],
                "defaultEndpoint": "127.0.0.1:8080",
                "name": "files",
                "tls": {
                    "mode": "MUTUAL",
                    "serverCertificate": "/etc/certs/server.pem",
                    "privateKey": "/etc/certs/key.pem",
                    "caCertificates": "/etc/certs/ca.pem",
                    "caCrl": "/etc/certs/crl.pem",
                    "subjectAltNames": ["client.example.com"],
                    "verifyCertificateSpki": ["bm90IGEgcmVhbCBoYXNo"],
                    "verifyCertificateHash": ["aa:bb"],
                    "minProtocolVersion": "TLSV1_2",
                    "maxProtocolVersion": "TLSV1_3",
                    "cipherSuites": ["ECDHE-RSA-AES256-GCM-SHA384"],
                    "ecdhCurves": ["X25519"],
                    "insecureSkipVerify": false
                }
            },
            {
                "port": {"number": 8443, "name": "https-secrets", "protocol": "HTTPS"},
                "hosts": ["*/secrets.example.com"],
                "tls": {"mode": "OPTIONAL_MUTUAL", "credentialNames": ["rsa-cert", "ecdsa-cert"], "caCertCredentialName": "client-ca"}
            },
            {
                "port": {"number": 9443, "name": "https-pairs", "protocol": "HTTPS"},
                "hosts": ["pairs.example.com"],
                "tls": {
                    "mode": "SIMPLE",
                    "tlsCertificates": [
                        {"serverCertificate": "/etc/rsa.pem", "privateKey": "/etc/rsa.key"},
                        {"serverCertificate": "/etc/ec.pem", "privateKey": "/etc/ec.key", "caCertificates": "/etc/ca.pem"}
                    ]
                }
            },
            {
                "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "hosts": ["*.local"],
                "tls": {"mode": "AUTO_PASSTHROUGH"}
            }
        ]
    });
    let parsed = spec(value.clone());
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), value);
    assert_valid(&parsed);
    assert!(issues_of(&parsed, Severity::Warning).is_empty(), "{:?}", issues_of(&parsed, Severity::Warning));
}

#[test]
fn every_tls_mode_and_version_has_istios_spelling() {
    for mode in ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] {
        let tls: ServerTlsSettings = serde_json::from_value(json!({"mode": mode})).expect("mode parses");
        assert_eq!(serde_json::to_value(&tls).expect("serializes")["mode"], mode);
    }
    for version in ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"] {
        let tls: ServerTlsSettings =
            serde_json::from_value(json!({"minProtocolVersion": version})).expect("version parses");
        assert_eq!(serde_json::to_value(&tls).expect("serializes")["minProtocolVersion"], version);
    }
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    assert!(serde_json::from_value::<GatewaySpec>(json!({"server": []})).is_err());
    let bad_server =
        json!({"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"}, "hosts": ["*"], "host": "x"}]});
    assert!(serde_json::from_value::<GatewaySpec>(bad_server).is_err());
    let bad_port =
        json!({"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP", "x": 1}, "hosts": ["*"]}]});
    assert!(serde_json::from_value::<GatewaySpec>(bad_port).is_err());
    let bad_tls = json!({"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"}, "hosts": ["*"], "tls": {"redirect": true}}]});
    assert!(serde_json::from_value::<GatewaySpec>(bad_tls).is_err());
}

#[test]
fn a_server_needs_a_port_and_hosts() {
    assert!(serde_json::from_value::<GatewaySpec>(json!({"servers": [{"hosts": ["*"]}]})).is_err());
    assert!(
        serde_json::from_value::<GatewaySpec>(
            json!({"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"}}]})
        )
        .is_err()
    );
    let port_without_protocol = json!({"servers": [{"port": {"number": 80, "name": "h"}, "hosts": ["*"]}]});
    assert!(serde_json::from_value::<GatewaySpec>(port_without_protocol).is_err());
}

#[test]
fn a_gateway_without_servers_is_rejected() {
    assert_error(&spec(json!({"selector": {"istio": "ingressgateway"}})), "spec.servers", "at least one server");
    assert_error(&spec(json!({"servers": []})), "spec.servers", "at least one server");
}

#[test]
fn a_server_without_hosts_is_rejected() {
    let mut server = http_server();
    server["hosts"] = json!([]);
    assert_error(&one_server(server), "spec.servers[0].hosts", "at least one host");
}

#[test]
fn hosts_accept_istios_namespace_and_wildcard_forms() {
    let mut server = http_server();
    server["hosts"] =
        json!(["*", "*.example.com", "foo.example.com", "ns/*", "./foo.com", "*/foo.com", "ns-1/*.foo.com", "svc"]);
    assert_valid(&one_server(server));
}

#[test]
fn malformed_hosts_are_rejected() {
    let mut server = http_server();
    server["hosts"] = json!(["foo.*.com", "Bad_NS/foo.com", "/foo.com", "ns/", "ns/bad host", "a/b/c"]);
    let gateway = one_server(server);
    assert_error(&gateway, "spec.servers[0].hosts[0]", "invalid host");
    assert_error(&gateway, "spec.servers[0].hosts[1]", "invalid namespace");
    assert_error(&gateway, "spec.servers[0].hosts[2]", "namespace and a DNS name");
    assert_error(&gateway, "spec.servers[0].hosts[3]", "namespace and a DNS name");
    assert_error(&gateway, "spec.servers[0].hosts[4]", "invalid host");
    assert_error(&gateway, "spec.servers[0].hosts[5]", "invalid host");
}

#[test]
fn port_numbers_must_be_between_1_and_65535() {
    let mut server = http_server();
    server["port"]["number"] = json!(0);
    assert_error(&one_server(server.clone()), "spec.servers[0].port.number", "out of range");
    server["port"]["number"] = json!(65536);
    assert_error(&one_server(server), "spec.servers[0].port.number", "out of range");
}

#[test]
fn protocols_are_istios_and_case_insensitive() {
    for protocol in ["HTTP", "https", "GRPC", "grpc-web", "HTTP2", "Mongo", "TCP", "tls"] {
        let mut server = http_server();
        server["port"]["protocol"] = json!(protocol);
        if Protocol::parse(protocol).is_some_and(Protocol::is_tls) {
            server["tls"] = json!({"mode": "PASSTHROUGH"});
        }
        assert_valid(&one_server(server));
    }
    let mut server = http_server();
    server["port"]["protocol"] = json!("QUIC");
    assert_error(&one_server(server), "spec.servers[0].port.protocol", "unknown protocol \"QUIC\"");
}

#[test]
fn a_port_needs_a_name() {
    let mut server = http_server();
    server["port"]["name"] = json!("");
    assert_error(&one_server(server), "spec.servers[0].port.name", "port name is required");
}

#[test]
fn a_target_port_is_rejected_on_gateways() {
    let mut server = http_server();
    server["port"]["targetPort"] = json!(8080);
    assert_error(&one_server(server), "spec.servers[0].port.targetPort", "no effect on gateways");
}

#[test]
fn port_names_and_server_names_are_unique() {
    let mut second = http_server();
    second["port"]["number"] = json!(8080);
    let mut first = http_server();
    first["name"] = json!("web");
    second["name"] = json!("web");
    let gateway = spec(json!({"servers": [first, second]}));
    assert_error(&gateway, "spec.servers[1].port.name", "already used by servers[0]");
    assert_error(&gateway, "spec.servers[1].name", "already used by servers[0]");
}

#[test]
fn bind_must_be_an_ip_or_a_unix_socket_with_port_0() {
    let mut server = http_server();
    server["bind"] = json!("localhost");
    assert_error(&one_server(server.clone()), "spec.servers[0].bind", "not a valid IP address");
    server["bind"] = json!("unix:///var/run/gw.sock");
    assert_error(&one_server(server.clone()), "spec.servers[0].port.number", "must be 0");
    server["port"]["number"] = json!(0);
    assert_valid(&one_server(server.clone()));
    server["bind"] = json!("unix://relative");
    assert_error(&one_server(server), "spec.servers[0].bind", "absolute path");
}

#[test]
fn https_and_tls_servers_need_tls_settings() {
    let gateway = one_server(json!({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"]}));
    assert_error(&gateway, "spec.servers[0].tls", "needs tls settings");
    let gateway = one_server(json!({"port": {"number": 443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"]}));
    assert_error(&gateway, "spec.servers[0].tls", "needs tls settings");
}

#[test]
fn passthrough_servers_need_no_certificates() {
    assert_valid(&https_server(json!({"mode": "PASSTHROUGH"})));
    assert_valid(&https_server(json!({"mode": "AUTO_PASSTHROUGH"})));
    let gateway = https_server(json!({"mode": "PASSTHROUGH", "credentialName": "cert"}));
    assert_valid(&gateway);
    assert_warning(&gateway, "spec.servers[0].tls", "does not use certificates");
}

#[test]
fn a_plain_http_server_may_only_redirect_to_https() {
    let mut server = http_server();
    server["tls"] = json!({"httpsRedirect": true});
    assert_valid(&one_server(server.clone()));
    server["tls"] = json!({"mode": "SIMPLE", "credentialName": "cert"});
    assert_error(&one_server(server.clone()), "spec.servers[0].tls", "only have tls.httpsRedirect");
    server["tls"] = json!({"httpsRedirect": true, "serverCertificate": "/c.pem"});
    assert_error(&one_server(server), "spec.servers[0].tls", "only have tls.httpsRedirect");
}

#[test]
fn a_tcp_server_cannot_have_tls_settings() {
    let gateway = one_server(
        json!({"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"], "tls": {"httpsRedirect": true}}),
    );
    assert_error(&gateway, "spec.servers[0].tls", "cannot have tls settings");
    assert_warning(&gateway, "spec.servers[0].tls.httpsRedirect", "only has an effect on HTTP servers");
}

#[test]
fn simple_tls_needs_a_credential_or_a_certificate_and_key() {
    assert_valid(&https_server(json!({"mode": "SIMPLE", "credentialName": "cert"})));
    assert_valid(&https_server(json!({"mode": "SIMPLE", "credentialNames": ["rsa", "ecdsa"]})));
    assert_valid(&https_server(json!({"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"})));
    let gateway = https_server(json!({"mode": "SIMPLE"}));
    assert_error(&gateway, "spec.servers[0].tls.serverCertificate", "requires credentialName or a server certificate");
    assert_error(&gateway, "spec.servers[0].tls.privateKey", "requires credentialName or a private key");
    let gateway = https_server(json!({"mode": "SIMPLE", "serverCertificate": "/c.pem"}));
    assert_error(&gateway, "spec.servers[0].tls.privateKey", "private key");
}

#[test]
fn each_tls_certificate_needs_a_certificate_and_key() {
    let gateway = https_server(
        json!({"mode": "SIMPLE", "tlsCertificates": [{"serverCertificate": "/c.pem"}, {"privateKey": "/k.pem"}]}),
    );
    assert_error(&gateway, "spec.servers[0].tls.tlsCertificates[0].privateKey", "requires a private key");
    assert_error(&gateway, "spec.servers[0].tls.tlsCertificates[1].serverCertificate", "requires a server certificate");
}

#[test]
fn mutual_tls_needs_a_client_ca_unless_a_credential_holds_it() {
    let gateway = https_server(json!({"mode": "MUTUAL", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}));
    assert_error(&gateway, "spec.servers[0].tls.caCertificates", "requires a client CA bundle");
    assert_valid(&https_server(
        json!({"mode": "MUTUAL", "serverCertificate": "/c.pem", "privateKey": "/k.pem", "caCertificates": "/ca.pem"}),
    ));
    assert_valid(&https_server(json!({"mode": "MUTUAL", "credentialName": "cert-with-ca"})));
}

#[test]
fn credential_sources_are_mutually_exclusive() {
    let gateway = https_server(json!({"mode": "SIMPLE", "credentialName": "a", "credentialNames": ["b"]}));
    assert_error(&gateway, "spec.servers[0].tls", "only one of credentialName or credentialNames");
    let gateway = https_server(
        json!({"mode": "SIMPLE", "credentialNames": ["b"], "tlsCertificates": [{"serverCertificate": "/c", "privateKey": "/k"}]}),
    );
    assert_error(&gateway, "spec.servers[0].tls", "only one of credentialNames or tlsCertificates");
    let gateway =
        https_server(json!({"mode": "SIMPLE", "credentialName": "a", "serverCertificate": "/c", "privateKey": "/k"}));
    assert_error(
        &gateway,
        "spec.servers[0].tls",
        "only one of credentialName, credentialNames, serverCertificate/privateKey",
    );
}

#[test]
fn credential_names_and_tls_certificates_hold_one_or_two_entries() {
    let gateway = https_server(json!({"mode": "SIMPLE", "credentialNames": ["a", "b", "c"]}));
    assert_error(&gateway, "spec.servers[0].tls.credentialNames", "1 or 2 entries");
    let gateway = https_server(json!({"mode": "SIMPLE", "credentialNames": []}));
    assert_error(&gateway, "spec.servers[0].tls.credentialNames", "1 or 2 entries");
    let gateway = https_server(json!({"mode": "SIMPLE", "tlsCertificates": []}));
    assert_error(&gateway, "spec.servers[0].tls.tlsCertificates", "1 or 2 entries");
}

#[test]
fn istio_mutual_cannot_carry_its_own_certificates() {
    assert_valid(&https_server(json!({"mode": "ISTIO_MUTUAL"})));
    let gateway = https_server(json!({"mode": "ISTIO_MUTUAL", "credentialName": "cert", "privateKey": "/k.pem"}));
    assert_error(&gateway, "spec.servers[0].tls.credentialName", "ISTIO_MUTUAL");
    assert_error(&gateway, "spec.servers[0].tls.privateKey", "ISTIO_MUTUAL");
}

#[test]
fn a_crl_is_not_supported_with_credential_name_or_simple_tls() {
    let gateway = https_server(json!({"mode": "MUTUAL", "credentialName": "cert", "caCrl": "/crl.pem"}));
    assert_error(&gateway, "spec.servers[0].tls.caCrl", "credentialName");
    let gateway =
        https_server(json!({"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k", "caCrl": "/crl.pem"}));
    assert_error(&gateway, "spec.servers[0].tls.caCrl", "SIMPLE");
}

#[test]
fn the_minimum_tls_version_cannot_exceed_the_maximum() {
    let gateway = https_server(
        json!({"mode": "SIMPLE", "credentialName": "c", "minProtocolVersion": "TLSV1_3", "maxProtocolVersion": "TLSV1_2"}),
    );
    assert_error(&gateway, "spec.servers[0].tls.minProtocolVersion", "above maxProtocolVersion TLSV1_2");
    let gateway = https_server(
        json!({"mode": "SIMPLE", "credentialName": "c", "minProtocolVersion": "TLSV1_3", "maxProtocolVersion": "TLS_AUTO"}),
    );
    assert_valid(&gateway);
}

#[test]
fn old_tls_versions_without_cipher_suites_are_a_warning() {
    let gateway = https_server(json!({"mode": "SIMPLE", "credentialName": "c", "minProtocolVersion": "TLSV1_0"}));
    assert_valid(&gateway);
    assert_warning(&gateway, "spec.servers[0].tls.minProtocolVersion", "below 1.2");
}

#[test]
fn unknown_and_duplicate_cipher_suites_are_warnings() {
    let gateway = https_server(json!({
        "mode": "SIMPLE",
        "credentialName": "c",
        "cipherSuites": ["AES128-SHA", "NOT-A-CIPHER", "AES128-SHA", "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"]
    }));
    assert_valid(&gateway);
    assert_warning(&gateway, "spec.servers[0].tls.cipherSuites[1]", "unknown cipher suite");
    assert_warning(&gateway, "spec.servers[0].tls.cipherSuites[2]", "duplicate cipher suite");
    assert_eq!(issues_of(&gateway, Severity::Warning).len(), 2);
}

#[test]
fn the_seed_example_gateway_is_valid() {
    let gateway = spec(json!({"selector": {"istio": "ingressgateway"}, "servers": [http_server()]}));
    assert_valid(&gateway);
    assert!(issues_of(&gateway, Severity::Warning).is_empty());
}

/// Every CEL error of the CRD on `value`, as `(path, message)`.
fn cel_errors(value: &Value) -> Vec<(String, String)> {
    let object =
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "x"}, "spec": value});
    let mut issues = Issues::default();
    crate::cel::check("Gateway", &object, &mut issues);
    issues.into_vec().into_iter().map(|i| (i.path.to_string(), i.message)).collect()
}

/// The CEL errors on `value` that the Rust validation does not already report at or around the same field.
fn cel_errors_not_in_rust(value: &Value) -> Vec<(String, String)> {
    let object =
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "x"}, "spec": value});
    let mut issues = Issues::default();
    spec(value.clone()).validate(&FieldPath::of("spec"), &mut issues);
    let before = issues.iter().count();
    crate::cel::check("Gateway", &object, &mut issues);
    issues.into_vec().into_iter().skip(before).map(|i| (i.path.to_string(), i.message)).collect()
}

fn https_value(tls: Value) -> Value {
    json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"], "tls": tls}]})
}

#[test]
fn the_crd_cel_rules_accept_valid_tls_settings() {
    for tls in [
        json!({"mode": "SIMPLE", "credentialName": "a"}),
        json!({"mode": "SIMPLE", "credentialNames": ["a", "b"]}),
        json!({"mode": "SIMPLE", "tlsCertificates": [{"serverCertificate": "/c", "privateKey": "/k"}]}),
    ] {
        assert_eq!(cel_errors(&https_value(tls)), vec![]);
    }
}

#[test]
fn every_cel_rule_of_the_crd_is_mirrored_in_rust() {
    for tls in [
        json!({"mode": "SIMPLE", "credentialName": "a", "credentialNames": ["b"]}),
        json!({"mode": "SIMPLE", "credentialNames": ["b"], "tlsCertificates": [{"serverCertificate": "/c", "privateKey": "/k"}]}),
    ] {
        let value = https_value(tls);
        assert!(!cel_errors(&value).is_empty(), "the CRD should reject {value}");
        assert_eq!(cel_errors_not_in_rust(&value), vec![], "for {value}");
    }
}
