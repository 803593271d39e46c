use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;
use crate::{FieldPath, Issues, Severity, Validate};

const HOST: &str = "reviews.prod.svc.cluster.local";

fn spec(value: Value) -> VirtualServiceSpec {
    serde_json::from_value(value).expect("the test input deserializes")
}

/// Every issue of `value` as (severity, path, message).
fn issues_of(value: Value) -> Vec<(Severity, String, String)> {
    let mut issues = Issues::default();
    spec(value).validate(&FieldPath::of("spec"), &mut issues);
    issues.into_vec().into_iter().map(|i| (i.severity, i.path.to_string(), i.message)).collect()
}

fn errors_of(value: Value) -> Vec<(String, String)> {
    issues_of(value).into_iter().filter(|(s, ..)| *s == Severity::Error).map(|(_, p, m)| (p, m)).collect()
}

#[track_caller]
fn assert_error(value: Value, path: &str, needle: &str) {
    let errors = errors_of(value);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected an error at {path} containing {needle:?}, got {errors:#?}"
    );
}

#[track_caller]
fn assert_warning(value: Value, path: &str, needle: &str) {
    let issues = issues_of(value);
    assert!(
        issues.iter().any(|(s, p, m)| *s == Severity::Warning && p == path && m.contains(needle)),
        "expected a warning at {path} containing {needle:?}, got {issues:#?}"
    );
}

#[track_caller]
fn assert_valid(value: Value) {
    let errors = errors_of(value);
    assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
}

/// A virtual service with one HTTP rule.
fn with_http(rule: Value) -> Value {
    json!({ "hosts": [HOST], "http": [rule] })
}

/// An HTTP rule forwarding to `HOST` with `extra` fields merged in.
fn rule(extra: Value) -> Value {
    let mut rule = json!({ "route": [{ "destination": { "host": HOST } }] });
    if let (Some(rule), Value::Object(extra)) = (rule.as_object_mut(), extra) {
        rule.extend(extra);
    }
    rule
}

/// A virtual service whose one HTTP rule has one condition.
fn with_match(condition: Value) -> Value {
    with_http(rule(json!({ "match": [condition] })))
}

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
// Hosts, gateways, exportTo
// -------------------------------------------------------------------------------------------------------------

#[test]
fn a_virtual_service_without_hosts_is_rejected() {
    for spec in [json!({ "http": [rule(json!({}))] }), json!({ "hosts": [], "http": [rule(json!({}))] })] {
        assert!(errors_of(spec.clone()).is_empty(), "a delegate target without hosts is valid Istio");
        assert_warning(spec, "spec.hosts", "delegate");
    }
}

#[test]
fn an_empty_host_is_rejected() {
    assert_error(json!({ "hosts": [""], "http": [rule(json!({}))] }), "spec.hosts[0]", "must not be empty");
}

#[test]
fn wildcards_are_only_allowed_as_a_leading_label_or_alone() {
    for host in ["foo.*.example.com", "a*.example.com", "example.*", "*foo.example.com"] {
        assert_error(
            json!({ "hosts": [host], "gateways": ["gw"], "http": [rule(json!({}))] }),
            "spec.hosts[0]",
            "\"*\" is only allowed",
        );
    }
    assert_valid(json!({ "hosts": ["*.example.com"], "http": [rule(json!({}))] }));
    assert_valid(json!({ "hosts": ["*"], "gateways": ["istio-system/public"], "http": [rule(json!({}))] }));
}

#[test]
fn malformed_host_names_are_rejected() {
    assert_error(
        json!({ "hosts": ["bad_name.example.com"], "http": [rule(json!({}))] }),
        "spec.hosts[0]",
        "not a DNS-1123 label",
    );
    assert_error(
        json!({ "hosts": ["example.123"], "http": [rule(json!({}))] }),
        "spec.hosts[0]",
        "cannot be all digits",
    );
    assert_valid(json!({ "hosts": ["reviews", "reviews.prod.svc.cluster.local."], "http": [rule(json!({}))] }));
}

#[test]
fn ip_addresses_are_valid_hosts() {
    assert_valid(json!({ "hosts": ["10.0.0.1", "2001:db8::1"], "http": [rule(json!({}))] }));
}

#[test]
fn the_catch_all_host_is_rejected_for_the_mesh() {
    let path = "spec.hosts[0]";
    assert_error(json!({ "hosts": ["*"], "http": [rule(json!({}))] }), path, "only allowed when");
    assert_error(
        json!({ "hosts": ["*"], "gateways": ["mesh", "gw"], "http": [rule(json!({}))] }),
        path,
        "only allowed when",
    );
}

#[test]
fn duplicate_or_overlapping_hosts_are_rejected() {
    assert_error(
        json!({ "hosts": [HOST, HOST], "http": [rule(json!({}))] }),
        "spec.hosts[1]",
        "duplicates or overlaps",
    );
    assert_error(
        json!({ "hosts": ["*.example.com", "api.example.com"], "http": [rule(json!({}))] }),
        "spec.hosts[1]",
        "duplicates or overlaps",
    );
    assert_valid(json!({ "hosts": ["*.example.com", "example.org"], "http": [rule(json!({}))] }));
}

#[test]
fn gateway_references_must_be_namespace_slash_name() {
    let bad = |gateway: &str| json!({ "hosts": [HOST], "gateways": [gateway], "http": [rule(json!({}))] });
    assert_error(bad("/public"), "spec.gateways[0]", "both parts set");
    assert_error(bad("Istio_System/public"), "spec.gateways[0]", "invalid namespace");
    assert_error(bad("istio-system/pub.lic"), "spec.gateways[0]", "invalid name");
    assert_valid(bad("istio-system/public"));
    assert_valid(bad("mesh"));
}

#[test]
fn dotted_gateway_names_draw_a_legacy_format_warning() {
    let value = json!({ "hosts": [HOST], "gateways": ["public.istio-system"], "http": [rule(json!({}))] });
    assert_warning(value.clone(), "spec.gateways[0]", "prefer istio-system/public");
    assert_valid(value);
}

#[test]
fn a_virtual_service_needs_some_routes() {
    assert_error(json!({ "hosts": [HOST] }), "spec", "at least one of http, tcp or tls");
}

#[test]
fn export_to_accepts_dot_star_and_namespaces_only() {
    let with = |export: Value| json!({ "hosts": [HOST], "http": [rule(json!({}))], "exportTo": export });
    assert_error(with(json!(["~"])), "spec.exportTo[0]", "only allowed on ServiceEntry");
    assert_error(with(json!(["Bad_NS"])), "spec.exportTo[0]", "must be \".\", \"*\" or a namespace");
    assert_error(with(json!([".", "."])), "spec.exportTo[1]", "duplicate exportTo entry");
    assert_error(with(json!(["*", "."])), "spec.exportTo", "cannot be combined");
    assert_valid(with(json!([".", "istio-system"])));
    assert_valid(with(json!(["*"])));
}

// -------------------------------------------------------------------------------------------------------------
// HTTP rule actions
// -------------------------------------------------------------------------------------------------------------

#[test]
fn an_http_rule_needs_a_route_redirect_direct_response_or_delegate() {
    assert_error(
        with_http(json!({ "name": "nothing" })),
        "spec.http[0]",
        "one of route, redirect, directResponse or delegate",
    );
    assert_error(with_http(json!({ "route": [] })), "spec.http[0]", "one of route, redirect");
    assert_valid(with_http(json!({ "redirect": { "uri": "/" } })));
    assert_valid(with_http(json!({ "directResponse": { "status": 204 } })));
    assert_valid(with_http(json!({ "delegate": { "name": "other" } })));
}

#[test]
fn redirect_and_route_cannot_be_combined() {
    assert_error(
        with_http(rule(json!({ "redirect": { "uri": "/" } }))),
        "spec.http[0].redirect",
        "cannot be combined with route",
    );
}

#[test]
fn direct_response_cannot_be_combined_with_route_or_redirect() {
    assert_error(
        with_http(rule(json!({ "directResponse": { "status": 200 } }))),
        "spec.http[0].directResponse",
        "cannot be combined with route",
    );
    assert_error(
        with_http(json!({ "redirect": { "uri": "/" }, "directResponse": { "status": 200 } })),
        "spec.http[0].directResponse",
        "cannot be combined with redirect",
    );
}

#[test]
fn delegate_cannot_be_combined_with_route_or_redirect() {
    assert_error(
        with_http(rule(json!({ "delegate": { "name": "x" } }))),
        "spec.http[0].delegate",
        "cannot be combined with route",
    );
    assert_error(
        with_http(json!({ "delegate": { "name": "x" }, "redirect": { "uri": "/" } })),
        "spec.http[0].delegate",
        "cannot be combined with redirect",
    );
}

#[test]
fn a_delegate_without_a_name_draws_a_warning() {
    assert_warning(with_http(json!({ "delegate": {} })), "spec.http[0].delegate.name", "has no name");
}

#[test]
fn fault_and_rewrite_cannot_accompany_a_redirect_or_direct_response() {
    let fault = json!({ "abort": { "httpStatus": 500 } });
    assert_error(
        with_http(json!({ "redirect": { "uri": "/" }, "fault": fault })),
        "spec.http[0].fault",
        "combined with redirect",
    );
    assert_error(
        with_http(json!({ "redirect": { "uri": "/" }, "rewrite": { "uri": "/" } })),
        "spec.http[0].rewrite",
        "combined with redirect",
    );
    assert_error(
        with_http(json!({ "directResponse": { "status": 200 }, "fault": fault })),
        "spec.http[0].fault",
        "combined with directResponse",
    );
}

#[test]
fn mirror_and_mirrors_cannot_both_be_set() {
    let value = with_http(rule(json!({ "mirror": { "host": "a" }, "mirrors": [{ "destination": { "host": "b" } }] })));
    assert_error(value, "spec.http[0].mirrors", "cannot both be set");
}

// -------------------------------------------------------------------------------------------------------------
// Destinations and weights
// -------------------------------------------------------------------------------------------------------------

#[test]
fn a_destination_host_must_be_present_and_specific() {
    let route = |host: &str| with_http(json!({ "route": [{ "destination": { "host": host } }] }));
    assert_error(route(""), "spec.http[0].route[0].destination.host", "is required");
    assert_error(route("*"), "spec.http[0].route[0].destination.host", "cannot be \"*\"");
    assert_error(route("bad host"), "spec.http[0].route[0].destination.host", "not a DNS-1123 label");
}

#[test]
fn destination_ports_must_be_between_1_and_65535() {
    let route = |port: Value| with_http(json!({ "route": [{ "destination": { "host": HOST, "port": port } }] }));
    assert_error(route(json!({ "number": 0 })), "spec.http[0].route[0].destination.port.number", "1-65535");
    assert_error(route(json!({ "number": 70000 })), "spec.http[0].route[0].destination.port.number", "1-65535");
    assert_error(route(json!({})), "spec.http[0].route[0].destination.port.number", "is required");
    assert_valid(route(json!({ "number": 65535 })));
}

#[test]
fn subset_names_must_be_dns_labels() {
    let value = with_http(json!({ "route": [{ "destination": { "host": HOST, "subset": "v1.beta" } }] }));
    assert_error(value, "spec.http[0].route[0].destination.subset", "DNS-1123 label");
}

#[test]
fn mirror_destinations_are_validated() {
    assert_error(with_http(rule(json!({ "mirror": { "host": "" } }))), "spec.http[0].mirror.host", "is required");
    assert_error(
        with_http(rule(json!({ "mirrors": [{ "destination": { "host": HOST, "port": { "number": 0 } } }] }))),
        "spec.http[0].mirrors[0].destination.port.number",
        "1-65535",
    );
}

#[test]
fn negative_weights_are_rejected() {
    let value = with_http(json!({ "route": [
        { "destination": { "host": "a" }, "weight": -1 },
        { "destination": { "host": "b" }, "weight": 101 }
    ] }));
    assert_error(value, "spec.http[0].route[0].weight", "must not be negative");
}

#[test]
fn all_zero_route_weights_are_rejected() {
    let value = with_http(json!({ "route": [
        { "destination": { "host": "a" }, "weight": 0 },
        { "destination": { "host": "b" }, "weight": 0 }
    ] }));
    assert_error(value, "spec.http[0].route", "all route weights are zero");
}

#[test]
fn omitted_weights_count_as_zero_when_there_are_several_destinations() {
    let value = with_http(json!({ "route": [{ "destination": { "host": "a" } }, { "destination": { "host": "b" } }] }));
    assert_error(value, "spec.http[0].route", "an omitted weight counts as 0");
}

#[test]
fn a_single_destination_with_weight_zero_is_rejected() {
    let value = with_http(json!({ "route": [{ "destination": { "host": "a" }, "weight": 0 }] }));
    assert_error(value, "spec.http[0].route", "all route weights are zero");
    assert_valid(with_http(json!({ "route": [{ "destination": { "host": "a" } }] })));
}

#[test]
fn weights_are_relative_and_need_not_sum_to_100() {
    assert_valid(with_http(json!({ "route": [
        { "destination": { "host": "a" }, "weight": 1 },
        { "destination": { "host": "b" }, "weight": 2 },
        { "destination": { "host": "c" }, "weight": 0 }
    ] })));
}

// -------------------------------------------------------------------------------------------------------------
// Matches and regular expressions
// -------------------------------------------------------------------------------------------------------------

#[test]
fn string_match_regexes_must_compile() {
    let cases = [
        (json!({ "uri": { "regex": "/api/(" } }), "spec.http[0].match[0].uri.regex"),
        (json!({ "scheme": { "regex": "[" } }), "spec.http[0].match[0].scheme.regex"),
        (json!({ "method": { "regex": "(GET" } }), "spec.http[0].match[0].method.regex"),
        (json!({ "authority": { "regex": "*.example" } }), "spec.http[0].match[0].authority.regex"),
        (json!({ "headers": { "x-user": { "regex": "a{2" } } }), "spec.http[0].match[0].headers.x-user.regex"),
        (json!({ "queryParams": { "q": { "regex": "(?<" } } }), "spec.http[0].match[0].queryParams.q.regex"),
        (
            json!({ "withoutHeaders": { "x-user": { "regex": "+" } } }),
            "spec.http[0].match[0].withoutHeaders.x-user.regex",
        ),
    ];
    for (condition, path) in cases {
        assert_error(with_match(condition), path, "invalid regular expression");
    }
}

#[test]
fn a_star_regex_in_without_headers_means_present() {
    assert_valid(with_match(json!({ "withoutHeaders": { "x-user": { "regex": "*" } } })));
}

#[test]
fn empty_and_oversized_regexes_are_rejected() {
    assert_error(with_match(json!({ "uri": { "regex": "" } })), "spec.http[0].match[0].uri.regex", "must not be empty");
    let long = "a".repeat(1025);
    assert_error(
        with_match(json!({ "uri": { "regex": long } })),
        "spec.http[0].match[0].uri.regex",
        "the limit is 1024",
    );
}

#[test]
fn a_string_match_sets_only_one_of_exact_prefix_or_regex() {
    assert_error(
        with_match(json!({ "uri": { "exact": "/a", "prefix": "/b" } })),
        "spec.http[0].match[0].uri",
        "only one of",
    );
}

#[test]
fn empty_prefixes_are_allowed_only_on_the_path() {
    assert_valid(with_match(json!({ "uri": { "prefix": "" } })));
    assert_error(
        with_match(json!({ "method": { "prefix": "" } })),
        "spec.http[0].match[0].method.prefix",
        "must not be empty",
    );
    assert_error(
        with_match(json!({ "headers": { "x-a": { "prefix": "" } } })),
        "spec.http[0].match[0].headers.x-a.prefix",
        "must not be empty",
    );
}

#[test]
fn header_match_names_must_be_tokens() {
    assert_error(
        with_match(json!({ "headers": { "x user": { "exact": "a" } } })),
        "spec.http[0].match[0].headers[\"x user\"]",
        "not a valid header name",
    );
    assert_error(
        with_match(json!({ "headers": { "": { "exact": "a" } } })),
        "spec.http[0].match[0].headers[\"\"]",
        "must not be empty",
    );
}

#[test]
fn jwt_claim_routing_needs_a_gateway() {
    let condition = json!({ "headers": { "@request.auth.claims.group": { "exact": "admin" } } });
    let path = "spec.http[0].match[0].headers[\"@request.auth.claims.group\"]";
    assert_error(with_match(condition.clone()), path, "only works on gateways");
    let mut on_gateway = with_match(condition);
    on_gateway["gateways"] = json!(["istio-system/public"]);
    assert_valid(on_gateway);
}

#[test]
fn match_ports_labels_and_namespaces_are_checked() {
    assert_error(with_match(json!({ "port": 70000 })), "spec.http[0].match[0].port", "1-65535");
    assert_valid(with_match(json!({ "port": 0 })));
    assert_error(
        with_match(json!({ "sourceLabels": { "-app": "x" } })),
        "spec.http[0].match[0].sourceLabels.-app",
        "label key",
    );
    assert_error(
        with_match(json!({ "sourceLabels": { "app": "a b" } })),
        "spec.http[0].match[0].sourceLabels.app",
        "label value",
    );
    assert_error(
        with_match(json!({ "sourceNamespace": "Bad_NS" })),
        "spec.http[0].match[0].sourceNamespace",
        "not a valid namespace",
    );
    assert_error(with_match(json!({ "gateways": ["a/b/c"] })), "spec.http[0].match[0].gateways[0]", "invalid name");
}

// -------------------------------------------------------------------------------------------------------------
// Rewrite, redirect, direct response
// -------------------------------------------------------------------------------------------------------------

#[test]
fn uri_and_uri_regex_rewrite_cannot_both_be_set() {
    let value =
        with_http(rule(json!({ "rewrite": { "uri": "/", "uriRegexRewrite": { "match": "a", "rewrite": "b" } } })));
    assert_error(value, "spec.http[0].rewrite.uriRegexRewrite", "only one of uri or uriRegexRewrite");
}

#[test]
fn uri_regex_rewrite_needs_a_compiling_match_and_a_rewrite() {
    let rewrite = |r: Value| with_http(rule(json!({ "rewrite": { "uriRegexRewrite": r } })));
    assert_error(
        rewrite(json!({ "match": "(", "rewrite": "/" })),
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "invalid regular expression",
    );
    assert_error(rewrite(json!({ "rewrite": "/" })), "spec.http[0].rewrite.uriRegexRewrite.match", "needs both");
    assert_error(rewrite(json!({ "match": "^/a" })), "spec.http[0].rewrite.uriRegexRewrite.rewrite", "needs both");
}

#[test]
fn an_empty_rewrite_is_rejected() {
    assert_error(with_http(rule(json!({ "rewrite": {} }))), "spec.http[0].rewrite", "needs at least one of");
}

#[test]
fn the_authority_may_be_rewritten_only_once() {
    let value = with_http(rule(json!({
        "rewrite": { "authority": "a.example.com" },
        "headers": { "request": { "set": { ":authority": "b.example.com" } } }
    })));
    assert_error(value, "spec.http[0].headers.request", "rewritten more than once");
    assert_valid(with_http(rule(json!({ "headers": { "request": { "set": { "host": "b.example.com" } } } }))));
}

#[test]
fn redirect_codes_must_be_3xx() {
    let redirect = |code: u32| with_http(json!({ "redirect": { "uri": "/", "redirectCode": code } }));
    assert_error(redirect(200), "spec.http[0].redirect.redirectCode", "between 300 and 399");
    assert_error(redirect(400), "spec.http[0].redirect.redirectCode", "between 300 and 399");
    assert_valid(redirect(302));
}

#[test]
fn redirect_fields_are_checked() {
    let redirect = |r: Value| with_http(json!({ "redirect": r }));
    assert_error(redirect(json!({})), "spec.http[0].redirect", "needs at least one of");
    assert_error(redirect(json!({ "scheme": "ftp" })), "spec.http[0].redirect.scheme", "must be http or https");
    assert_error(redirect(json!({ "port": 70000 })), "spec.http[0].redirect.port", "1-65535");
    assert_error(
        redirect(json!({ "port": 80, "derivePort": "FROM_REQUEST_PORT" })),
        "spec.http[0].redirect",
        "only one of port or derivePort",
    );
    assert_error(
        redirect(json!({ "uri": "/a", "prefixRewrite": "/b" })),
        "spec.http[0].redirect.prefixRewrite",
        "only one of uri or prefixRewrite",
    );
}

#[test]
fn direct_response_status_must_be_between_200_and_599() {
    let status = |s: u32| with_http(json!({ "directResponse": { "status": s } }));
    assert_error(status(100), "spec.http[0].directResponse.status", "between 200 and 599");
    assert_error(status(600), "spec.http[0].directResponse.status", "between 200 and 599");
    assert_valid(status(503));
}

#[test]
fn direct_response_bodies_are_checked() {
    let body = |b: Value| with_http(json!({ "directResponse": { "status": 200, "body": b } }));
    assert_error(
        body(json!({ "string": "a", "bytes": "YQ==" })),
        "spec.http[0].directResponse.body",
        "only one of string or bytes",
    );
    assert_error(body(json!({ "bytes": "not base64!" })), "spec.http[0].directResponse.body.bytes", "base64");
    assert_error(
        body(json!({ "string": "x".repeat(1024 * 1024 + 1) })),
        "spec.http[0].directResponse.body",
        "too large",
    );
    assert_warning(
        body(json!({ "string": "x".repeat(200 * 1024) })),
        "spec.http[0].directResponse.body",
        "may slow down",
    );
}

// -------------------------------------------------------------------------------------------------------------
// Durations, retries, faults, mirrors
// -------------------------------------------------------------------------------------------------------------

#[test]
fn durations_must_parse_and_be_at_least_1ms() {
    assert_error(with_http(rule(json!({ "timeout": "soon" }))), "spec.http[0].timeout", "soon");
    assert_error(with_http(rule(json!({ "timeout": "500us" }))), "spec.http[0].timeout", "at least 1ms");
    assert_error(with_http(rule(json!({ "timeout": "0s" }))), "spec.http[0].timeout", "at least 1ms");
    assert_error(
        with_http(rule(json!({ "timeout": "1500us" }))),
        "spec.http[0].timeout",
        "whole number of milliseconds",
    );
    assert_valid(with_http(rule(json!({ "timeout": "1.5s" }))));
}

#[test]
fn every_duration_field_is_checked() {
    let cases = [
        (json!({ "retries": { "attempts": 1, "perTryTimeout": "1" } }), "spec.http[0].retries.perTryTimeout"),
        (json!({ "retries": { "attempts": 1, "backoff": "-1s" } }), "spec.http[0].retries.backoff"),
        (json!({ "fault": { "delay": { "fixedDelay": "fast" } } }), "spec.http[0].fault.delay.fixedDelay"),
        (json!({ "corsPolicy": { "maxAge": "1d" } }), "spec.http[0].corsPolicy.maxAge"),
    ];
    for (extra, path) in cases {
        let errors = errors_of(with_http(rule(extra)));
        assert!(errors.iter().any(|(p, _)| p == path), "no error at {path}: {errors:#?}");
    }
}

#[test]
fn cors_max_age_must_be_whole_seconds() {
    assert_error(
        with_http(rule(json!({ "corsPolicy": { "maxAge": "1500ms" } }))),
        "spec.http[0].corsPolicy.maxAge",
        "whole number of seconds",
    );
}

#[test]
fn retry_attempts_must_not_be_negative() {
    assert_error(
        with_http(rule(json!({ "retries": { "attempts": -1 } }))),
        "spec.http[0].retries.attempts",
        "must not be negative",
    );
    assert_valid(with_http(rule(json!({ "retries": { "attempts": 0 } }))));
}

#[test]
fn retry_settings_need_attempts() {
    let value = with_http(rule(json!({ "retries": { "perTryTimeout": "1s" } })));
    assert_error(value, "spec.http[0].retries.attempts", "attempts is 0 or unset");
}

#[test]
fn retry_on_policies_must_be_known() {
    let value = with_http(rule(json!({ "retries": { "attempts": 2, "retryOn": "5xx,sometimes,999" } })));
    let errors = errors_of(value);
    let at_retry_on: Vec<_> = errors.iter().filter(|(p, _)| p == "spec.http[0].retries.retryOn").collect();
    assert_eq!(at_retry_on.len(), 2, "{errors:#?}");
    assert!(at_retry_on[0].1.contains("\"sometimes\""));
    assert!(at_retry_on[1].1.contains("\"999\""));
}

#[test]
fn fault_abort_status_must_be_a_valid_http_status() {
    let abort = |a: Value| with_http(rule(json!({ "fault": { "abort": a } })));
    assert_error(abort(json!({ "httpStatus": 700 })), "spec.http[0].fault.abort.httpStatus", "between 200 and 599");
    assert_error(abort(json!({ "httpStatus": 199 })), "spec.http[0].fault.abort.httpStatus", "between 200 and 599");
    assert_error(abort(json!({ "grpcStatus": "MAYBE" })), "spec.http[0].fault.abort.grpcStatus", "\"MAYBE\"");
    assert_error(
        abort(json!({ "http2Error": "REFUSED_STREAM" })),
        "spec.http[0].fault.abort.http2Error",
        "rejected by Istio",
    );
    assert_error(
        abort(json!({ "httpStatus": 500, "grpcStatus": "INTERNAL" })),
        "spec.http[0].fault.abort",
        "only one of",
    );
    assert_warning(abort(json!({ "percentage": { "value": 1.0 } })), "spec.http[0].fault.abort", "aborts nothing");
}

#[test]
fn fault_percentages_must_be_between_0_and_100() {
    let fault = |f: Value| with_http(rule(json!({ "fault": f })));
    assert_error(
        fault(json!({ "abort": { "httpStatus": 500, "percentage": { "value": 150.0 } } })),
        "spec.http[0].fault.abort.percentage.value",
        "between 0 and 100",
    );
    assert_error(
        fault(json!({ "delay": { "fixedDelay": "1s", "percentage": { "value": -1.0 } } })),
        "spec.http[0].fault.delay.percentage.value",
        "between 0 and 100",
    );
    assert_error(
        fault(json!({ "delay": { "fixedDelay": "1s", "percentage": { "value": 0.00001 } } })),
        "spec.http[0].fault.delay.percentage.value",
        "at least 0.0001",
    );
    assert_error(
        fault(json!({ "delay": { "fixedDelay": "1s", "percent": 101 } })),
        "spec.http[0].fault.delay.percent",
        "between 0 and 100",
    );
}

#[test]
fn a_fault_needs_a_delay_or_an_abort() {
    assert_error(with_http(rule(json!({ "fault": {} }))), "spec.http[0].fault", "needs an abort, a delay or both");
}

#[test]
fn exponential_delays_are_rejected_as_istio_does() {
    let value = with_http(rule(json!({ "fault": { "delay": { "exponentialDelay": "1s" } } })));
    assert_error(value, "spec.http[0].fault.delay.exponentialDelay", "rejected by Istio");
}

#[test]
fn mirror_percentages_must_be_between_0_and_100() {
    assert_error(
        with_http(rule(json!({ "mirror": { "host": "m" }, "mirrorPercentage": { "value": 101.0 } }))),
        "spec.http[0].mirrorPercentage.value",
        "between 0 and 100",
    );
    assert_error(
        with_http(rule(json!({ "mirrors": [{ "destination": { "host": "m" }, "percentage": { "value": 100.5 } }] }))),
        "spec.http[0].mirrors[0].percentage.value",
        "between 0 and 100",
    );
    assert_error(
        with_http(rule(json!({ "mirror": { "host": "m" }, "mirrorPercent": 101 }))),
        "spec.http[0].mirrorPercent",
        "at most 100",
    );
    assert_error(
        with_http(rule(json!({ "mirror": { "host": "m" }, "mirror_percent": 101 }))),
        "spec.http[0].mirror_percent",
        "at most 100",
    );
}

#[test]
fn the_deprecated_mirror_percent_draws_a_warning() {
    assert_warning(
        with_http(rule(json!({ "mirror": { "host": "m" }, "mirrorPercent": 10 }))),
        "spec.http[0].mirrorPercent",
        "deprecated",
    );
}

// -------------------------------------------------------------------------------------------------------------
// Headers and CORS
// -------------------------------------------------------------------------------------------------------------

#[test]
fn header_operation_names_must_not_be_empty() {
    let headers = |h: Value| with_http(rule(json!({ "headers": h })));
    assert_error(
        headers(json!({ "request": { "set": { "": "a" } } })),
        "spec.http[0].headers.request.set[\"\"]",
        "must not be empty",
    );
    assert_error(
        headers(json!({ "request": { "add": { "": "a" } } })),
        "spec.http[0].headers.request.add[\"\"]",
        "must not be empty",
    );
    assert_error(
        headers(json!({ "response": { "remove": [""] } })),
        "spec.http[0].headers.response.remove[0]",
        "must not be empty",
    );
    let on_destination = with_http(
        json!({ "route": [{ "destination": { "host": HOST }, "headers": { "response": { "set": { "": "a" } } } }] }),
    );
    assert_error(on_destination, "spec.http[0].route[0].headers.response.set[\"\"]", "must not be empty");
}

#[test]
fn pseudo_headers_and_host_cannot_be_changed_outside_the_request_authority() {
    let headers = |h: Value| with_http(rule(json!({ "headers": h })));
    assert_error(
        headers(json!({ "request": { "set": { ":path": "/" } } })),
        "spec.http[0].headers.request.set.:path",
        "pseudo-header",
    );
    assert_error(
        headers(json!({ "request": { "remove": ["Host"] } })),
        "spec.http[0].headers.request.remove[0]",
        "cannot be changed",
    );
    assert_error(
        headers(json!({ "response": { "set": { "host": "x" } } })),
        "spec.http[0].headers.response.set.host",
        "cannot be changed",
    );
    assert_valid(headers(json!({ "request": { "set": { ":authority": "x.example.com" } } })));
}

#[test]
fn header_values_must_be_valid_for_envoy() {
    let set = |v: &str| with_http(rule(json!({ "headers": { "request": { "set": { "x-a": v } } } })));
    assert_error(set("a\nb"), "spec.http[0].headers.request.set.x-a", "control character");
    assert_error(set("abc%123"), "spec.http[0].headers.request.set.x-a", "unterminated %");
    assert_error(set("%START_TIME%%"), "spec.http[0].headers.request.set.x-a", "unterminated %");
    assert_valid(set("100%% of %HOSTNAME%\tok"));
}

#[test]
fn cors_policy_fields_are_checked() {
    let cors = |c: Value| with_http(rule(json!({ "corsPolicy": c })));
    assert_error(
        cors(json!({ "allowOrigins": [{ "regex": "(" }] })),
        "spec.http[0].corsPolicy.allowOrigins[0].regex",
        "invalid regular expression",
    );
    assert_error(
        cors(json!({ "allowOrigins": [{ "exact": "" }] })),
        "spec.http[0].corsPolicy.allowOrigins[0]",
        "non-empty",
    );
    assert_error(cors(json!({ "allowOrigins": [{}] })), "spec.http[0].corsPolicy.allowOrigins[0]", "non-empty");
    assert_error(
        cors(json!({ "allowMethods": ["get"] })),
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    );
    assert_error(
        cors(json!({ "allowHeaders": ["x y"] })),
        "spec.http[0].corsPolicy.allowHeaders[0]",
        "not a valid header name",
    );
    assert_error(
        cors(json!({ "exposeHeaders": [""] })),
        "spec.http[0].corsPolicy.exposeHeaders[0]",
        "must not be empty",
    );
}

// -------------------------------------------------------------------------------------------------------------
// TLS and TCP
// -------------------------------------------------------------------------------------------------------------

fn tls(rule: Value) -> Value {
    json!({ "hosts": ["*.example.com"], "tls": [rule] })
}

#[test]
fn tcp_routes_need_a_route_destination() {
    assert_error(
        json!({ "hosts": [HOST], "tcp": [{ "match": [{ "port": 27017 }] }] }),
        "spec.tcp[0].route",
        "at least one route destination",
    );
    assert_error(
        json!({ "hosts": [HOST], "tcp": [{ "route": [] }] }),
        "spec.tcp[0].route",
        "at least one route destination",
    );
}

#[test]
fn tls_routes_need_a_route_destination() {
    let value = tls(json!({ "match": [{ "sniHosts": ["a.example.com"] }] }));
    assert_error(value, "spec.tls[0].route", "at least one route destination");
}

#[test]
fn tls_matches_need_at_least_one_sni_host() {
    let value = tls(json!({ "match": [{ "sniHosts": [] }], "route": [{ "destination": { "host": HOST } }] }));
    assert_error(value, "spec.tls[0].match[0].sniHosts", "at least one sniHost");
    let value = tls(json!({ "match": [], "route": [{ "destination": { "host": HOST } }] }));
    assert_error(value, "spec.tls[0].match", "at least one match");
}

#[test]
fn sni_hosts_must_fall_under_the_virtual_service_hosts() {
    let route = json!([{ "destination": { "host": HOST } }]);
    let value = tls(json!({ "match": [{ "sniHosts": ["a.example.org"] }], "route": route }));
    assert_error(value, "spec.tls[0].match[0].sniHosts[0]", "not covered");
    let value = tls(json!({ "match": [{ "sniHosts": ["*.a.example.com", "b.example.com"] }], "route": route }));
    assert_valid(value);
}

#[test]
fn tls_and_tcp_destination_weights_and_ports_are_checked() {
    let value = json!({ "hosts": [HOST], "tcp": [{ "route": [
        { "destination": { "host": "a", "port": { "number": 0 } }, "weight": 0 },
        { "destination": { "host": "b" }, "weight": 0 }
    ] }] });
    assert_error(value.clone(), "spec.tcp[0].route", "all route weights are zero");
    assert_error(value, "spec.tcp[0].route[0].destination.port.number", "1-65535");
}

#[test]
fn subnets_must_be_ip_addresses_or_cidr_blocks() {
    let value = json!({ "hosts": [HOST], "tcp": [{
        "match": [{ "destinationSubnets": ["10.0.0.0/33", "not-an-ip", "10.0.0.0/8"] }],
        "route": [{ "destination": { "host": HOST } }]
    }] });
    assert_error(value.clone(), "spec.tcp[0].match[0].destinationSubnets[0]", "not a valid IP address or CIDR");
    assert_error(value.clone(), "spec.tcp[0].match[0].destinationSubnets[1]", "not a valid IP address or CIDR");
    let errors = errors_of(value);
    assert!(!errors.iter().any(|(p, _)| p == "spec.tcp[0].match[0].destinationSubnets[2]"), "{errors:#?}");
}

#[test]
fn tls_match_ports_are_checked() {
    let value = tls(
        json!({ "match": [{ "sniHosts": ["a.example.com"], "port": 65536 }], "route": [{ "destination": { "host": HOST } }] }),
    );
    assert_error(value, "spec.tls[0].match[0].port", "1-65535");
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
