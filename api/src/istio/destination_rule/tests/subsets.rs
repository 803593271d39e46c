//! DestinationRule host, subsets, exportTo and workloadSelector validation.

use serde_json::json;

use super::{assert_error, assert_no_errors, assert_warning, at, issues};
use crate::Severity;

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
