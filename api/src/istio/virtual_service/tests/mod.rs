//! Tests for `VirtualService`: shared builders and assertions; the tests themselves live in the submodules.

mod hosts;
mod http_features;
mod matches;
mod round_trip;
mod routes;
mod tcp_tls;

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
