//! Tests for `DestinationRule`: shared builders and assertions; the tests themselves live in the submodules.

mod load_balancer;
mod policies;
mod round_trip;
mod subsets;

use serde_json::{Value, json};

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
