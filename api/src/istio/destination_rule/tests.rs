use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::validate::load_balancer::is_prime;
use super::*;
use crate::{FieldPath, Issue, Issues, Severity, Validate};

fn spec(value: Value) -> DestinationRuleSpec {
    match serde_json::from_value(value) {
        Ok(spec) => spec,
        Err(err) => panic!("spec does not deserialize: {err}"),
    }
}

fn issues(value: Value) -> Vec<Issue> {
    let mut issues = Issues::default();
    spec(value).validate(&FieldPath::of("spec"), &mut issues);
    issues.into_vec()
}

/// Messages of the issues of `severity` found exactly at `path`.
fn at(found: &[Issue], severity: Severity, path: &str) -> Vec<String> {
    found.iter().filter(|i| i.severity == severity && i.path.to_string() == path).map(|i| i.message.clone()).collect()
}

fn assert_error(found: &[Issue], path: &str, needle: &str) {
    let messages = at(found, Severity::Error, path);
    assert!(
        messages.iter().any(|m| m.contains(needle)),
        "expected an error at {path} containing {needle:?}, got {found:#?}"
    );
}

fn assert_warning(found: &[Issue], path: &str, needle: &str) {
    let messages = at(found, Severity::Warning, path);
    assert!(
        messages.iter().any(|m| m.contains(needle)),
        "expected a warning at {path} containing {needle:?}, got {found:#?}"
    );
}

fn assert_no_errors(found: &[Issue]) {
    let errors: Vec<_> = found.iter().filter(|i| i.severity == Severity::Error).collect();
    assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
}

/// A rule whose top-level traffic policy is `policy`.
fn with_policy(policy: Value) -> Value {
    json!({"host": "reviews.prod.svc.cluster.local", "trafficPolicy": policy})
}

/// A rule whose top-level load balancer is `lb` (with outlier detection, so failover is meaningful).
fn with_lb(lb: Value) -> Value {
    with_policy(json!({"loadBalancer": lb, "outlierDetection": {"consecutive5xxErrors": 5}}))
}

const LB: &str = "spec.trafficPolicy.loadBalancer";

fn full_example() -> Value {
    json!({
        "host": "reviews.prod.svc.cluster.local",
        "exportTo": ["."],
        "workloadSelector": {"matchLabels": {"app": "productpage"}},
        "trafficPolicy": {
            "loadBalancer": {
                "simple": "LEAST_REQUEST",
                "localityLbSetting": {
                    "enabled": true,
                    "distribute": [
                        {"from": "us-west/zone1/*", "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}},
                        {"from": "us-east/*", "to": {"us-east/*": 100}}
                    ],
                    "failoverPriority": ["topology.istio.io/network"]
                },
                "zoneAwareLbSetting": {
                    "enabled": true,
                    "failover": [{"from": "us-east", "to": "us-west"}],
                    "failoverPriority": ["topology.istio.io/network"],
                    "minClusterSize": 3
                },
                "warmupDurationSecs": "60s",
                "warmup": {"duration": "90s", "minimumPercent": 10.0, "aggression": 1.5}
            },
            "connectionPool": {
                "tcp": {
                    "maxConnections": 100,
                    "connectTimeout": "30ms",
                    "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"},
                    "maxConnectionDuration": "1h",
                    "idleTimeout": "0s"
                },
                "http": {
                    "http1MaxPendingRequests": 1024,
                    "http2MaxRequests": 1024,
                    "maxRequestsPerConnection": 10,
                    "maxRetries": 3,
                    "idleTimeout": "30s",
                    "h2UpgradePolicy": "UPGRADE",
                    "useClientProtocol": false,
                    "maxConcurrentStreams": 100,
                    "http2KeepAlive": {"interval": "10s", "timeout": "5s"}
                }
            },
            "outlierDetection": {
                "splitExternalLocalOriginErrors": true,
                "consecutiveLocalOriginFailures": 5,
                "consecutiveGatewayErrors": 3,
                "consecutive5xxErrors": 7,
                "outlierDetectionHttpErrorCodes": [500, 503],
                "interval": "5m",
                "baseEjectionTime": "15m",
                "maxEjectionPercent": 50,
                "minHealthPercent": 30
            },
            "tls": {
                "mode": "MUTUAL",
                "clientCertificate": "/etc/certs/client.pem",
                "privateKey": "/etc/certs/key.pem",
                "caCertificates": "/etc/certs/ca.pem",
                "subjectAltNames": ["spiffe://cluster.local/ns/prod/sa/reviews"],
                "sni": "reviews.example.com",
                "insecureSkipVerify": false,
                "caCrl": "/etc/certs/crl.pem"
            },
            "portLevelSettings": [
                {
                    "port": {"number": 80},
                    "loadBalancer": {
                        "consistentHash": {
                            "httpCookie": {
                                "name": "user",
                                "path": "/",
                                "ttl": "0s",
                                "attributes": [{"name": "SameSite", "value": "Strict"}, {"name": "Secure"}]
                            },
                            "ringHash": {"minimumRingSize": 1024}
                        }
                    },
                    "connectionPool": {"tcp": {"maxConnections": 10}},
                    "outlierDetection": {"consecutive5xxErrors": 2},
                    "tls": {"mode": "SIMPLE", "credentialName": "reviews-ca"}
                },
                {
                    "port": {"number": 8080},
                    "loadBalancer": {"consistentHash": {"httpQueryParameterName": "session"}}
                },
                {
                    "port": {"number": 9090},
                    "loadBalancer": {"consistentHash": {"useSourceIp": true, "minimumRingSize": 2048}}
                }
            ],
            "retryBudget": {"percent": 25.0, "minRetryConcurrency": 3, "budgetInterval": "10s"},
            "tunnel": {"protocol": "CONNECT", "targetHost": "egress.example.com", "targetPort": 443}
        },
        "subsets": [
            {
                "name": "v1",
                "labels": {"version": "v1", "app.kubernetes.io/name": "reviews"},
                "trafficPolicy": {
                    "loadBalancer": {
                        "consistentHash": {"httpHeaderName": "x-user", "maglev": {"tableSize": 65537}},
                        "localityLbSetting": {"failover": [{"from": "us-east", "to": "us-west"}]}
                    },
                    "outlierDetection": {"consecutiveGatewayErrors": 1},
                    "proxyProtocol": {"version": "V2"},
                    "portLevelSettings": [{
                        "port": {"number": 443},
                        "loadBalancer": {
                            "backendUtilization": {
                                "weightExpirationPeriod": "3m",
                                "weightStabilizationPeriod": "10s",
                                "weightUpdatePeriod": "1s",
                                "errorUtilizationPenaltyPercent": 100,
                                "metricNamesForComputingUtilization": ["named_metrics.cpu"]
                            }
                        },
                        "tls": {"mode": "ISTIO_MUTUAL"}
                    }]
                }
            },
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"tls": {"mode": "DISABLE"}}}
        ]
    })
}

// ----- shape -----------------------------------------------------------------------------------

#[test]
fn a_full_example_with_every_field_round_trips_to_the_same_json() {
    let input = full_example();
    let parsed = spec(input.clone());
    let output = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(output, input);
}

#[test]
fn the_full_example_is_valid_and_draws_only_the_deprecation_warning() {
    let found = issues(full_example());
    assert_no_errors(&found);
    let warnings: Vec<_> = found.iter().filter(|i| i.severity == Severity::Warning).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(
        warnings[0].path.to_string(),
        "spec.trafficPolicy.portLevelSettings[2].loadBalancer.consistentHash.minimumRingSize"
    );
}

#[test]
fn a_minimal_rule_round_trips_without_adding_fields() {
    let input = json!({"host": "reviews"});
    assert_eq!(serde_json::to_value(spec(input.clone())).expect("serializes"), input);
}

#[test]
fn an_unknown_field_fails_to_deserialize_at_any_depth() {
    for value in [
        json!({"host": "a", "bogus": 1}),
        json!({"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM", "bogus": 1}}}),
        json!({"host": "a", "subsets": [{"name": "v1", "bogus": 1}]}),
        json!({"host": "a", "trafficPolicy": {"tls": {"mode": "SIMPLE", "bogus": true}}}),
    ] {
        assert!(serde_json::from_value::<DestinationRuleSpec>(value.clone()).is_err(), "{value}");
    }
}

#[test]
fn port_level_settings_do_not_accept_the_fields_only_the_top_level_policy_has() {
    for field in ["tunnel", "proxyProtocol", "retryBudget", "portLevelSettings"] {
        let value = json!({"host": "a", "trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}, field: {}}]}});
        assert!(serde_json::from_value::<DestinationRuleSpec>(value).is_err(), "{field} was accepted");
    }
}

#[test]
fn a_missing_host_or_unknown_enum_value_fails_to_deserialize() {
    assert!(serde_json::from_value::<DestinationRuleSpec>(json!({"subsets": []})).is_err());
    let bad_mode = json!({"host": "a", "trafficPolicy": {"tls": {"mode": "STRICT"}}});
    assert!(serde_json::from_value::<DestinationRuleSpec>(bad_mode).is_err());
    let bad_simple = json!({"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}});
    assert!(serde_json::from_value::<DestinationRuleSpec>(bad_simple).is_err());
}

#[test]
fn the_crd_uses_istio_names() {
    let crd = DestinationRule::crd();
    assert_eq!(crd.spec.group, "networking.istio.io");
    assert_eq!(crd.spec.names.short_names, Some(vec!["dr".to_owned()]));
    let categories = crd.spec.names.categories.unwrap_or_default();
    assert!(categories.contains(&"istio-io".to_owned()) && categories.contains(&"networking-istio-io".to_owned()));
}

// ----- host, subsets, exportTo, workloadSelector ------------------------------------------------

#[test]
fn an_empty_host_is_rejected() {
    assert_error(&issues(json!({"host": ""})), "spec.host", "host is required");
}

#[test]
fn a_malformed_host_is_rejected_and_wildcards_in_the_first_label_are_accepted() {
    assert_error(&issues(json!({"host": "reviews..prod"})), "spec.host", "\"reviews..prod\"");
    assert_error(&issues(json!({"host": "reviews.*.prod"})), "spec.host", "is not a DNS label");
    assert_error(&issues(json!({"host": "a_b.example.com"})), "spec.host", "\"a_b\"");
    for good in ["*", "*.example.com", "reviews", "reviews.prod.svc.cluster.local", "example.com."] {
        assert_no_errors(&issues(json!({"host": good})));
    }
}

#[test]
fn subset_names_must_be_present_dns_labels_and_unique() {
    let found = issues(json!({"host": "a", "subsets": [
        {"name": "", "labels": {"v": "1"}},
        {"name": "v_1", "labels": {"v": "1"}},
        {"name": "v2", "labels": {"v": "2"}},
        {"name": "v2", "labels": {"v": "3"}}
    ]}));
    assert_error(&found, "spec.subsets[0].name", "must not be empty");
    assert_error(&found, "spec.subsets[1].name", "\"v_1\"");
    assert_error(&found, "spec.subsets[3].name", "duplicate subset name \"v2\"");
    assert!(at(&found, Severity::Error, "spec.subsets[2].name").is_empty());
}

#[test]
fn a_subset_without_labels_is_a_warning_not_an_error() {
    let found = issues(json!({"host": "a", "subsets": [{"name": "v1"}, {"name": "v2", "labels": {}}]}));
    assert_no_errors(&found);
    assert_warning(&found, "spec.subsets[0].labels", "has no labels");
    assert_warning(&found, "spec.subsets[1].labels", "has no labels");
}

#[test]
fn subset_labels_must_be_valid_kubernetes_labels() {
    let found =
        issues(json!({"host": "a", "subsets": [{"name": "v1", "labels": {"bad key!": "x", "ok": "bad value!"}}]}));
    assert_error(&found, r#"spec.subsets[0].labels["bad key!"]"#, "invalid label key");
    assert_error(&found, "spec.subsets[0].labels.ok", "invalid label value \"bad value!\"");
}

#[test]
fn a_subset_traffic_policy_is_validated_under_the_subset_path() {
    let found = issues(json!({"host": "a", "subsets": [{"name": "v1", "labels": {"v": "1"},
        "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 101}}}]}));
    assert_error(&found, "spec.subsets[0].trafficPolicy.outlierDetection.maxEjectionPercent", "101");
}

#[test]
fn export_to_rejects_duplicates_bad_names_and_star_mixed_with_others() {
    let found = issues(json!({"host": "a", "exportTo": [".", ".", "~", "Bad_NS", "*"]}));
    assert_error(&found, "spec.exportTo[1]", "duplicate exportTo entry \".\"");
    assert_error(&found, "spec.exportTo[2]", "\"~\"");
    assert_error(&found, "spec.exportTo[3]", "\"Bad_NS\"");
    assert_error(&found, "spec.exportTo", "cannot mix '*'");
    assert_no_errors(&issues(json!({"host": "a", "exportTo": [".", "other-ns"]})));
    assert_no_errors(&issues(json!({"host": "a", "exportTo": ["*"]})));
}

#[test]
fn a_rule_with_a_workload_selector_is_only_exported_to_its_own_namespace() {
    let selector = json!({"matchLabels": {"app": "x"}});
    let multiple = issues(json!({"host": "a", "workloadSelector": selector, "exportTo": [".", "other"]}));
    assert_error(&multiple, "spec.exportTo", "only be exported to its own namespace");
    let star = issues(json!({"host": "a", "workloadSelector": selector, "exportTo": ["*"]}));
    assert_error(&star, "spec.exportTo", "beyond its own namespace");
    assert_no_errors(&issues(json!({"host": "a", "workloadSelector": selector, "exportTo": ["."]})));
}

#[test]
fn a_workload_selector_without_labels_warns_and_wildcards_are_rejected() {
    assert_warning(&issues(json!({"host": "a", "workloadSelector": {}})), "spec.workloadSelector", "no labels");
    let found = issues(json!({"host": "a", "workloadSelector": {"matchLabels": {"app": "x*"}}}));
    assert_error(&found, "spec.workloadSelector.matchLabels.app", "wildcard");
}

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

// ----- load balancer ----------------------------------------------------------------------------

#[test]
fn only_one_load_balancer_kind_may_be_set() {
    let found = issues(with_lb(json!({"simple": "RANDOM", "consistentHash": {"useSourceIp": true}})));
    assert_error(&found, LB, "only one of simple, consistentHash or backendUtilization");
    let found = issues(with_lb(json!({"simple": "RANDOM", "backendUtilization": {}})));
    assert_error(&found, LB, "only one of simple");
}

#[test]
fn consistent_hash_takes_exactly_one_hash_key() {
    let found = issues(with_lb(json!({"consistentHash": {"httpHeaderName": "x-user", "useSourceIp": true}})));
    assert_error(&found, &format!("{LB}.consistentHash"), "only one of httpHeaderName");
    let none = issues(with_lb(json!({"consistentHash": {"ringHash": {"minimumRingSize": 64}}})));
    assert_no_errors(&none);
    assert_warning(&none, &format!("{LB}.consistentHash"), "no hash key");
}

#[test]
fn empty_hash_key_names_are_rejected() {
    let header = issues(with_lb(json!({"consistentHash": {"httpHeaderName": ""}})));
    assert_error(&header, &format!("{LB}.consistentHash.httpHeaderName"), "must not be empty");
    let query = issues(with_lb(json!({"consistentHash": {"httpQueryParameterName": ""}})));
    assert_error(&query, &format!("{LB}.consistentHash.httpQueryParameterName"), "must not be empty");
}

#[test]
fn a_hash_cookie_needs_a_name_and_a_valid_ttl() {
    let found = issues(with_lb(json!({"consistentHash": {"httpCookie": {"name": "", "ttl": "forever",
        "attributes": [{"name": ""}]}}})));
    let cookie = format!("{LB}.consistentHash.httpCookie");
    assert_error(&found, &format!("{cookie}.name"), "cookie name is required");
    assert_error(&found, &format!("{cookie}.ttl"), "\"forever\"");
    assert_error(&found, &format!("{cookie}.attributes[0].name"), "attribute name is required");
}

#[test]
fn ring_hash_and_maglev_are_mutually_exclusive() {
    let found = issues(with_lb(json!({"consistentHash": {"useSourceIp": true,
        "ringHash": {"minimumRingSize": 1024}, "maglev": {"tableSize": 65537}}})));
    assert_error(&found, &format!("{LB}.consistentHash"), "only one of ringHash or maglev");
}

#[test]
fn maglev_table_size_must_be_a_prime_below_5000011() {
    let path = format!("{LB}.consistentHash.maglev.tableSize");
    let lb = |size: Value| with_lb(json!({"consistentHash": {"useSourceIp": true, "maglev": {"tableSize": size}}}));
    assert_error(&issues(lb(json!(0))), &path, "must be set");
    assert_error(&issues(lb(json!(65536))), &path, "65536 must be a prime");
    assert_error(&issues(lb(json!(5000011))), &path, "less than 5000011");
    assert_error(
        &issues(with_lb(json!({"consistentHash": {"useSourceIp": true, "maglev": {}}}))),
        &path,
        "must be set",
    );
    assert_no_errors(&issues(lb(json!(65537))));
    assert_no_errors(&issues(lb(json!(2))));
}

#[test]
fn ring_sizes_above_envoys_limit_are_rejected() {
    let found =
        issues(with_lb(json!({"consistentHash": {"useSourceIp": true, "ringHash": {"minimumRingSize": 9000000}}})));
    assert_error(&found, &format!("{LB}.consistentHash.ringHash.minimumRingSize"), "9000000");
}

#[test]
fn the_deprecated_minimum_ring_size_warns_and_conflicts_with_ring_hash() {
    let path = format!("{LB}.consistentHash.minimumRingSize");
    let alone = issues(with_lb(json!({"consistentHash": {"useSourceIp": true, "minimumRingSize": 1024}})));
    assert_no_errors(&alone);
    assert_warning(&alone, &path, "deprecated");
    let both = issues(with_lb(json!({"consistentHash": {"useSourceIp": true, "minimumRingSize": 1024,
        "ringHash": {"minimumRingSize": 1024}}})));
    assert_error(&both, &path, "only one of minimumRingSize or ringHash/maglev");
}

#[test]
fn locality_distribute_weights_must_each_be_1_to_100_and_sum_to_100() {
    let path = format!("{LB}.localityLbSetting.distribute[0].to");
    let sum = issues(with_lb(
        json!({"localityLbSetting": {"distribute": [{"from": "a/b/*", "to": {"a/b/*": 60, "a/c/*": 30}}]}}),
    ));
    assert_error(&sum, &path, "sum to 90");
    let zero =
        issues(with_lb(json!({"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"a/*": 100, "b/*": 0}}]}})));
    assert_error(&zero, &format!("{path}[\"b/*\"]"), "weight 0 must be between 1 and 100");
}

#[test]
fn locality_distribute_and_failover_cannot_both_be_set() {
    let found = issues(with_lb(json!({"localityLbSetting": {
        "distribute": [{"from": "a/*", "to": {"a/*": 100}}],
        "failover": [{"from": "a", "to": "b"}]
    }})));
    assert_error(&found, &format!("{LB}.localityLbSetting"), "only one of distribute or failover");
}

#[test]
fn localities_must_be_well_formed_and_must_not_overlap() {
    let to = |locality: &str| json!({"localityLbSetting": {"distribute": [{"from": "a/*", "to": {locality: 100}}]}});
    let path = format!("{LB}.localityLbSetting.distribute[0].to");
    assert_error(&issues(with_lb(to("a/*/c"))), &path, "one '*' and only at the end");
    assert_error(&issues(with_lb(to("a//c"))), &path, "empty region, zone or subzone");
    let overlap = issues(with_lb(json!({"localityLbSetting": {"distribute": [
        {"from": "us-east/*", "to": {"us-east/*": 100}},
        {"from": "us-east/zone1", "to": {"us-east/*": 100}}
    ]}})));
    assert_error(&overlap, &format!("{LB}.localityLbSetting.distribute"), "\"us-east/zone1\" overlaps");
}

#[test]
fn locality_failover_must_name_two_different_plain_regions() {
    let found = issues(with_lb(json!({"localityLbSetting": {"failover": [
        {"from": "us-east", "to": "us-east"},
        {"from": "us-east/zone1", "to": "us-*"}
    ]}})));
    let base = format!("{LB}.localityLbSetting.failover");
    assert_error(&found, &format!("{base}[0]"), "must be different regions");
    assert_error(&found, &format!("{base}[1].from"), "region only");
    assert_error(&found, &format!("{base}[1].to"), "must not contain '*'");
}

#[test]
fn failover_priority_cannot_repeat_the_topology_labels_failover_implies() {
    let found = issues(with_lb(json!({"localityLbSetting": {
        "failover": [{"from": "a", "to": "b"}],
        "failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/zone"]
    }})));
    assert_error(&found, &format!("{LB}.localityLbSetting.failoverPriority[1]"), "topology.kubernetes.io/zone");
}

#[test]
fn failover_without_outlier_detection_warns() {
    let found =
        issues(with_policy(json!({"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}}})));
    assert_no_errors(&found);
    assert_warning(&found, "spec.trafficPolicy.loadBalancer.localityLbSetting", "outlierDetection");
}

#[test]
fn warmup_needs_a_real_duration_a_percentage_and_an_aggression_of_at_least_one() {
    let found = issues(with_lb(json!({"simple": "ROUND_ROBIN", "warmupDurationSecs": "later",
        "warmup": {"duration": "0s", "minimumPercent": 120.0, "aggression": 0.5}})));
    assert_error(&found, &format!("{LB}.warmupDurationSecs"), "\"later\"");
    assert_error(&found, &format!("{LB}.warmup.duration"), "at least 1ms");
    assert_error(&found, &format!("{LB}.warmup.minimumPercent"), "120");
    assert_error(&found, &format!("{LB}.warmup.aggression"), "0.5");
    assert!(serde_json::from_value::<DestinationRuleSpec>(with_lb(json!({"warmup": {"aggression": 1.0}}))).is_err());
}

#[test]
fn zone_aware_settings_check_cluster_size_and_failover() {
    let found =
        issues(with_lb(json!({"zoneAwareLbSetting": {"minClusterSize": 0, "failover": [{"from": "a", "to": "a"}]}})));
    assert_error(&found, &format!("{LB}.zoneAwareLbSetting.minClusterSize"), "at least 1");
    assert_error(&found, &format!("{LB}.zoneAwareLbSetting.failover[0]"), "different regions");
}

#[test]
fn backend_utilization_periods_must_be_durations() {
    let found = issues(with_lb(json!({"backendUtilization": {"weightUpdatePeriod": "often"}})));
    assert_error(&found, &format!("{LB}.backendUtilization.weightUpdatePeriod"), "\"often\"");
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

// ----- helpers ----------------------------------------------------------------------------------

#[test]
fn primality_matches_envoys_check() {
    let primes: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
    // Like Envoy (and Istio, which copies it), 1 counts as prime and 0 does not.
    assert_eq!(primes, vec![1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65537) && is_prime(5_000_011) && !is_prime(65536) && !is_prime(65535) && is_prime(4_999_999));
}
