//! DestinationRule shape: serde round trips, strict deserialization, and the generated CRD names.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::{assert_no_errors, issues, spec};
use crate::Severity;
use crate::istio::destination_rule::{DestinationRule, DestinationRuleSpec};

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
