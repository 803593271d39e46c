//! VirtualService HTTP features: rewrite, redirect, direct response, timeouts, retries, faults, mirrors, headers, CORS.

use serde_json::{Value, json};

use super::{HOST, assert_error, assert_valid, assert_warning, errors_of, rule, with_http};

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
