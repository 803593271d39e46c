//! DestinationRule traffic policies: tunnel, retry budget, port-level settings, connection pool, outliers, TLS.

use serde_json::{Value, json};

use super::{assert_error, assert_no_errors, assert_warning, at, issues, with_policy};
use crate::Severity;

// ----- traffic policy ---------------------------------------------------------------------------

#[test]
fn an_empty_traffic_policy_is_rejected() {
    assert_error(&issues(with_policy(json!({}))), "spec.trafficPolicy", "at least one field");
}

#[test]
fn tunnel_and_proxy_protocol_together_are_rejected() {
    let found = issues(with_policy(json!({
        "tunnel": {"targetHost": "proxy.example.com", "targetPort": 8080},
        "proxyProtocol": {"version": "V1"}
    })));
    assert_error(&found, "spec.trafficPolicy", "tunnel and proxyProtocol");
}

#[test]
fn tunnel_settings_need_a_known_protocol_a_real_host_and_a_port_in_range() {
    let found =
        issues(with_policy(json!({"tunnel": {"protocol": "GET", "targetHost": "not a host", "targetPort": 0}})));
    assert_error(&found, "spec.trafficPolicy.tunnel.protocol", "\"GET\"");
    assert_error(&found, "spec.trafficPolicy.tunnel.targetHost", "\"not a host\"");
    assert_error(&found, "spec.trafficPolicy.tunnel.targetPort", "port 0");
    for host in ["10.0.0.1", "::1", "proxy.example.com"] {
        let ok = issues(with_policy(json!({"tunnel": {"protocol": "POST", "targetHost": host, "targetPort": 3128}})));
        assert_no_errors(&ok);
    }
}

#[test]
fn retry_budget_percent_and_interval_are_checked() {
    let found = issues(with_policy(json!({"retryBudget": {"percent": 150.0, "budgetInterval": "soon"}})));
    assert_error(&found, "spec.trafficPolicy.retryBudget.percent", "150");
    assert_error(&found, "spec.trafficPolicy.retryBudget.budgetInterval", "\"soon\"");
}

// ----- port level settings ----------------------------------------------------------------------

#[test]
fn port_level_settings_need_a_port_in_range_and_each_port_once() {
    let tls = json!({"mode": "ISTIO_MUTUAL"});
    let found = issues(with_policy(json!({"portLevelSettings": [
        {"port": {"number": 0}, "tls": tls},
        {"port": {"number": 70000}, "tls": tls},
        {"tls": tls},
        {"port": {"number": 80}, "tls": tls},
        {"port": {"number": 80}, "tls": tls}
    ]})));
    let base = "spec.trafficPolicy.portLevelSettings";
    assert_error(&found, &format!("{base}[0].port.number"), "port 0 is out of range");
    assert_error(&found, &format!("{base}[1].port.number"), "port 70000 is out of range");
    assert_error(&found, &format!("{base}[2].port"), "needs port.number");
    assert_error(&found, &format!("{base}[4].port.number"), "port 80 has more than one");
    assert!(at(&found, Severity::Error, &format!("{base}[3].port.number")).is_empty());
}

#[test]
fn a_port_level_setting_with_only_a_port_is_rejected() {
    let found = issues(with_policy(json!({"portLevelSettings": [{"port": {"number": 80}}]})));
    assert_error(&found, "spec.trafficPolicy.portLevelSettings[0]", "at least one field besides port");
}

#[test]
fn more_than_4096_port_level_settings_are_rejected() {
    let ports: Vec<Value> =
        (1..=4097).map(|n| json!({"port": {"number": n}, "tls": {"mode": "ISTIO_MUTUAL"}})).collect();
    assert_error(
        &issues(with_policy(json!({"portLevelSettings": ports}))),
        "spec.trafficPolicy.portLevelSettings",
        "4096",
    );
}

// ----- connection pool --------------------------------------------------------------------------

#[test]
fn a_connection_pool_must_set_tcp_or_http() {
    let found = issues(with_policy(json!({"connectionPool": {}})));
    assert_error(&found, "spec.trafficPolicy.connectionPool", "tcp or http");
}

#[test]
fn connection_pool_limits_must_not_be_negative() {
    let found = issues(with_policy(json!({"connectionPool": {
        "tcp": {"maxConnections": -1},
        "http": {"http1MaxPendingRequests": -1, "http2MaxRequests": -2, "maxRequestsPerConnection": -3,
                 "maxRetries": -4, "maxConcurrentStreams": -5}
    }})));
    let base = "spec.trafficPolicy.connectionPool";
    assert_error(&found, &format!("{base}.tcp.maxConnections"), "-1 must not be negative");
    for (field, value) in [
        ("http1MaxPendingRequests", -1),
        ("http2MaxRequests", -2),
        ("maxRequestsPerConnection", -3),
        ("maxRetries", -4),
        ("maxConcurrentStreams", -5),
    ] {
        assert_error(&found, &format!("{base}.http.{field}"), &format!("{value} must not be negative"));
    }
}

#[test]
fn connection_pool_durations_must_be_at_least_1ms_in_whole_milliseconds() {
    let found = issues(with_policy(json!({"connectionPool": {
        "tcp": {"connectTimeout": "500us", "maxConnectionDuration": "1.5ms", "idleTimeout": "0.1ms",
                "tcpKeepalive": {"time": "0s", "interval": "x"}},
        "http": {"idleTimeout": "0ms", "http2KeepAlive": {"interval": "1ns", "timeout": "3"}}
    }})));
    let base = "spec.trafficPolicy.connectionPool";
    assert_error(&found, &format!("{base}.tcp.connectTimeout"), "at least 1ms");
    assert_error(&found, &format!("{base}.tcp.maxConnectionDuration"), "whole number of milliseconds");
    assert_error(&found, &format!("{base}.tcp.idleTimeout"), "at least 1ms");
    assert_error(&found, &format!("{base}.tcp.tcpKeepalive.time"), "at least 1ms");
    assert_error(&found, &format!("{base}.tcp.tcpKeepalive.interval"), "\"x\"");
    assert_error(&found, &format!("{base}.http.idleTimeout"), "at least 1ms");
    assert_error(&found, &format!("{base}.http.http2KeepAlive.interval"), "at least 1ms");
    assert_error(&found, &format!("{base}.http.http2KeepAlive.timeout"), "\"3\"");
}

#[test]
fn a_zero_tcp_idle_timeout_disables_it_and_is_accepted() {
    assert_no_errors(&issues(with_policy(json!({"connectionPool": {"tcp": {"idleTimeout": "0s"}}}))));
}

#[test]
fn use_client_protocol_conflicts_with_forced_upgrade() {
    let found = issues(with_policy(
        json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": true}}}),
    ));
    assert_error(&found, "spec.trafficPolicy.connectionPool.http.useClientProtocol", "UPGRADE");
    assert_no_errors(&issues(with_policy(
        json!({"connectionPool": {"http": {"h2UpgradePolicy": "DO_NOT_UPGRADE", "useClientProtocol": true}}}),
    )));
}

// ----- outlier detection ------------------------------------------------------------------------

#[test]
fn outlier_detection_percentages_must_be_0_to_100() {
    let found = issues(with_policy(json!({"outlierDetection": {"maxEjectionPercent": 101, "minHealthPercent": -1}})));
    assert_error(&found, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "101");
    assert_error(&found, "spec.trafficPolicy.outlierDetection.minHealthPercent", "-1");
}

#[test]
fn outlier_detection_durations_must_be_at_least_1ms() {
    let found = issues(with_policy(json!({"outlierDetection": {"interval": "0.5ms", "baseEjectionTime": "0s"}})));
    assert_error(&found, "spec.trafficPolicy.outlierDetection.interval", "at least 1ms");
    assert_error(&found, "spec.trafficPolicy.outlierDetection.baseEjectionTime", "at least 1ms");
}

#[test]
fn local_origin_failures_need_the_split_flag() {
    let path = "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures";
    let found = issues(with_policy(json!({"outlierDetection": {"consecutiveLocalOriginFailures": 3}})));
    assert_error(&found, path, "splitExternalLocalOriginErrors");
    assert_no_errors(&issues(with_policy(
        json!({"outlierDetection": {"consecutiveLocalOriginFailures": 3, "splitExternalLocalOriginErrors": true}}),
    )));
}

#[test]
fn deprecated_consecutive_errors_warn_and_error_codes_must_be_http_statuses() {
    let found = issues(with_policy(
        json!({"outlierDetection": {"consecutiveErrors": 5, "outlierDetectionHttpErrorCodes": [503, 600]}}),
    ));
    assert_warning(&found, "spec.trafficPolicy.outlierDetection.consecutiveErrors", "deprecated");
    assert_error(&found, "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]", "600");
}

// ----- tls --------------------------------------------------------------------------------------

#[test]
fn credential_name_excludes_file_certificates_in_simple_and_mutual_modes() {
    for mode in ["SIMPLE", "MUTUAL"] {
        let found = issues(with_policy(json!({"tls": {"mode": mode, "credentialName": "cert",
            "clientCertificate": "/c", "privateKey": "/k", "caCertificates": "/ca", "caCrl": "/crl"}})));
        for field in ["clientCertificate", "privateKey", "caCertificates", "caCrl"] {
            assert_error(&found, &format!("spec.trafficPolicy.tls.{field}"), "together with credentialName");
        }
    }
}

#[test]
fn mutual_tls_without_a_credential_needs_a_certificate_and_key() {
    let found = issues(with_policy(json!({"tls": {"mode": "MUTUAL"}})));
    assert_error(&found, "spec.trafficPolicy.tls.clientCertificate", "needs clientCertificate");
    assert_error(&found, "spec.trafficPolicy.tls.privateKey", "needs privateKey");
    assert_no_errors(&issues(with_policy(json!({"tls": {"mode": "MUTUAL", "credentialName": "client-cert"}}))));
    assert_no_errors(&issues(with_policy(json!({"tls": {"mode": "ISTIO_MUTUAL"}}))));
}

#[test]
fn insecure_skip_verify_excludes_server_verification_settings() {
    let simple = issues(with_policy(json!({"tls": {"mode": "SIMPLE", "insecureSkipVerify": true,
        "caCertificates": "/ca", "subjectAltNames": ["a"]}})));
    assert_error(&simple, "spec.trafficPolicy.tls.caCertificates", "insecureSkipVerify");
    assert_error(&simple, "spec.trafficPolicy.tls.subjectAltNames", "insecureSkipVerify");
    let with_credential =
        issues(with_policy(json!({"tls": {"mode": "SIMPLE", "insecureSkipVerify": true, "credentialName": "c"}})));
    assert_error(&with_credential, "spec.trafficPolicy.tls.credentialName", "insecureSkipVerify");
    let mutual =
        issues(with_policy(json!({"tls": {"mode": "MUTUAL", "insecureSkipVerify": true, "credentialName": "c"}})));
    assert_no_errors(&mutual);
}

#[test]
fn port_level_tls_is_validated_under_its_port_path() {
    let found =
        issues(with_policy(json!({"portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "MUTUAL"}}]})));
    assert_error(&found, "spec.trafficPolicy.portLevelSettings[0].tls.clientCertificate", "needs clientCertificate");
}
