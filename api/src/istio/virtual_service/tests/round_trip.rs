//! VirtualService shape: serde round trips, strict deserialization, and the generated CRD (names and CEL rules).

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::{HOST, issues_of, rule, spec, with_http, with_match};
use crate::istio::virtual_service::{VirtualService, VirtualServiceSpec};
use crate::{Issues, Severity};

fn full_example() -> Value {
    json!({
        "hosts": [HOST, "*.bookinfo.example.com"],
        "gateways": ["istio-system/public", "mesh"],
        "exportTo": [".", "observability"],
        "http": [
            {
                "name": "v2-canary",
                "match": [{
                    "name": "api",
                    "uri": { "prefix": "/api/" },
                    "scheme": { "exact": "https" },
                    "method": { "regex": "GET|HEAD" },
                    "authority": { "prefix": "reviews" },
                    "headers": { "x-canary": { "exact": "yes" } },
                    "port": 9080,
                    "sourceLabels": { "app": "productpage", "version": "v1" },
                    "gateways": ["mesh"],
                    "queryParams": { "debug": { "regex": "^(1|true)$" } },
                    "ignoreUriCase": true,
                    "withoutHeaders": { "x-legacy": { "regex": "*" } },
                    "sourceNamespace": "frontend",
                    "statPrefix": "reviews-api"
                }],
                "route": [
                    {
                        "destination": { "host": HOST, "subset": "v1", "port": { "number": 9080 } },
                        "weight": 90,
                        "headers": {
                            "request": { "set": { "x-route": "v1" } },
                            "response": { "remove": ["x-internal"] }
                        }
                    },
                    { "destination": { "host": HOST, "subset": "v2" }, "weight": 10 }
                ],
                "rewrite": {
                    "authority": "reviews.internal",
                    "uriRegexRewrite": { "match": "^/api/(.*)$", "rewrite": "/\\1" }
                },
                "timeout": "10s",
                "retries": {
                    "attempts": 3,
                    "perTryTimeout": "2s",
                    "retryOn": "5xx,connect-failure,503",
                    "retryRemoteLocalities": true,
                    "retryIgnorePreviousHosts": true,
                    "backoff": "25ms"
                },
                "fault": {
                    "delay": { "fixedDelay": "5s", "percentage": { "value": 0.5 }, "percent": 1 },
                    "abort": { "httpStatus": 503, "percentage": { "value": 0.1 } }
                },
                "mirrors": [{ "destination": { "host": "shadow.prod.svc.cluster.local" }, "percentage": { "value": 5.0 } }],
                "mirrorPercentage": { "value": 5.0 },
                "corsPolicy": {
                    "allowOrigin": ["https://legacy.example.com"],
                    "allowOrigins": [{ "exact": "https://example.com" }, { "regex": "https://.*\\.example\\.com" }],
                    "allowMethods": ["GET", "POST"],
                    "allowHeaders": ["x-custom", "*"],
                    "exposeHeaders": ["x-request-id"],
                    "maxAge": "24h",
                    "allowCredentials": false,
                    "unmatchedPreflights": "IGNORE"
                },
                "headers": {
                    "request": { "set": { "x-from": "mesh" }, "add": { "x-trace": "%REQ(x-request-id)%" }, "remove": ["x-debug"] },
                    "response": { "set": { "cache-control": "no-store" }, "add": { "x-served-by": "reviews" } }
                }
            },
            {
                "name": "legacy-mirror",
                "match": [{ "uri": { "exact": "/legacy" } }],
                "route": [{ "destination": { "host": HOST } }],
                "mirror": { "host": "shadow.prod.svc.cluster.local", "subset": "v1", "port": { "number": 9080 } },
                "mirrorPercent": 50
            },
            {
                "name": "old-path",
                "match": [{ "uri": { "exact": "/old" } }],
                "redirect": {
                    "uri": "/new",
                    "authority": "reviews.example.com",
                    "derivePort": "FROM_PROTOCOL_DEFAULT",
                    "scheme": "https",
                    "redirectCode": 308
                }
            },
            {
                "name": "old-prefix",
                "match": [{ "uri": { "prefix": "/v0/" } }],
                "redirect": { "prefixRewrite": "/v1/", "port": 8443 }
            },
            {
                "name": "teapot",
                "match": [{ "uri": { "exact": "/teapot" } }],
                "directResponse": { "status": 418, "body": { "string": "I am a teapot" } }
            },
            {
                "name": "binary",
                "match": [{ "uri": { "exact": "/bytes" } }],
                "directResponse": { "status": 200, "body": { "bytes": "aGVsbG8=" } }
            },
            {
                "name": "grpc-fault",
                "match": [{ "uri": { "prefix": "/grpc.Reviews/" } }],
                "route": [{ "destination": { "host": HOST } }],
                "fault": { "abort": { "grpcStatus": "UNAVAILABLE" } }
            },
            {
                "name": "team-b",
                "match": [{ "uri": { "prefix": "/team-b/" } }],
                "delegate": { "name": "team-b-routes", "namespace": "team-b" }
            }
        ],
        "tls": [{
            "match": [{
                "sniHosts": ["login.bookinfo.example.com"],
                "destinationSubnets": ["10.0.0.0/8", "192.168.1.1"],
                "port": 443,
                "sourceLabels": { "app": "gateway" },
                "gateways": ["istio-system/public"],
                "sourceNamespace": "istio-system"
            }],
            "route": [{ "destination": { "host": "login.prod.svc.cluster.local", "port": { "number": 8443 } }, "weight": 100 }]
        }],
        "tcp": [{
            "match": [{
                "destinationSubnets": ["2001:db8::/32"],
                "port": 27017,
                "sourceSubnet": "10.1.0.0/16",
                "sourceLabels": { "app": "reporter" },
                "gateways": ["mesh"],
                "sourceNamespace": "batch"
            }],
            "route": [
                { "destination": { "host": "mongo.prod.svc.cluster.local", "port": { "number": 27017 } }, "weight": 80 },
                { "destination": { "host": "mongo-replica.prod.svc.cluster.local" }, "weight": 20 }
            ]
        }]
    })
}

// -------------------------------------------------------------------------------------------------------------
// Shape
// -------------------------------------------------------------------------------------------------------------

#[test]
fn a_full_virtual_service_round_trips_to_the_same_json() {
    let input = full_example();
    let typed = spec(input.clone());
    assert_eq!(serde_json::to_value(&typed).expect("serializes"), input);
}

#[test]
fn the_snake_case_mirror_percent_round_trips_under_its_own_name() {
    let input = with_http(rule(json!({ "mirror": { "host": "shadow" }, "mirror_percent": 20 })));
    let typed = spec(input.clone());
    let route = &typed.http.as_ref().expect("http")[0];
    assert_eq!(route.legacy_mirror_percent, Some(20));
    assert_eq!(route.mirror_percent, None);
    assert_eq!(serde_json::to_value(&typed).expect("serializes"), input);
}

#[test]
fn the_full_example_is_valid() {
    let issues = issues_of(full_example());
    let errors: Vec<_> = issues.iter().filter(|(s, ..)| *s == Severity::Error).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn unknown_fields_fail_to_deserialize() {
    for input in [
        json!({ "hosts": [HOST], "hostz": [] }),
        with_http(rule(json!({ "routes": [] }))),
        with_match(json!({ "uri": { "exact": "/", "glob": "*" } })),
        with_http(json!({ "route": [{ "destination": { "host": HOST, "version": "v1" } }] })),
    ] {
        assert!(serde_json::from_value::<VirtualServiceSpec>(input.clone()).is_err(), "accepted {input}");
    }
}

#[test]
fn required_fields_must_be_present_to_deserialize() {
    for input in [
        with_http(json!({ "route": [{ "weight": 100 }] })),
        with_http(json!({ "route": [{ "destination": { "subset": "v1" } }] })),
        with_http(rule(json!({ "mirrors": [{ "percentage": { "value": 1.0 } }] }))),
        with_http(json!({ "directResponse": { "body": { "string": "x" } } })),
        json!({ "hosts": [HOST], "tls": [{ "route": [] }] }),
        json!({ "hosts": [HOST], "tls": [{ "match": [{ "port": 443 }] }] }),
    ] {
        assert!(serde_json::from_value::<VirtualServiceSpec>(input.clone()).is_err(), "accepted {input}");
    }
}

#[test]
fn enum_values_are_istios_spelling() {
    let bad = with_http(json!({ "redirect": { "uri": "/", "derivePort": "FromRequestPort" } }));
    assert!(serde_json::from_value::<VirtualServiceSpec>(bad).is_err());
    let bad = with_http(rule(json!({ "corsPolicy": { "unmatchedPreflights": "forward" } })));
    assert!(serde_json::from_value::<VirtualServiceSpec>(bad).is_err());
}

#[test]
fn the_crd_uses_istios_group_short_name_and_categories() {
    let crd = VirtualService::crd();
    assert_eq!(crd.spec.group, "networking.istio.io");
    assert_eq!(crd.spec.names.short_names, Some(vec!["vs".to_owned()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["istio-io".to_owned(), "networking-istio-io".to_owned()]));
}

// -------------------------------------------------------------------------------------------------------------
// The CRD's own CEL rules
// -------------------------------------------------------------------------------------------------------------

fn cel_issues(spec: Value) -> Vec<(String, String)> {
    let object = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "default" },
        "spec": spec
    });
    let mut issues = Issues::default();
    crate::cel::check("VirtualService", &object, &mut issues);
    issues.into_vec().into_iter().map(|i| (i.path.to_string(), i.message)).collect()
}

#[test]
fn the_full_example_passes_the_crds_cel_rules() {
    let issues = cel_issues(full_example());
    assert!(issues.is_empty(), "{issues:#?}");
}

#[test]
fn the_crds_cel_rules_catch_what_the_api_server_would() {
    let issues = cel_issues(with_http(rule(json!({ "timeout": "0s" }))));
    assert!(issues.iter().any(|(p, m)| p == "spec.http[0].timeout" && m.contains("greater than 1ms")), "{issues:#?}");
    let issues =
        cel_issues(with_http(json!({ "redirect": { "uri": "/", "port": 80, "derivePort": "FROM_REQUEST_PORT" } })));
    assert!(issues.iter().any(|(p, m)| p == "spec.http[0].redirect" && m.contains("only one of port")), "{issues:#?}");
}
