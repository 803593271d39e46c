//! VirtualService HTTP match conditions and their regular expressions.

use serde_json::json;

use super::{assert_error, assert_valid, with_match};

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
