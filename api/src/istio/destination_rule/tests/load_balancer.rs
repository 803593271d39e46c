//! DestinationRule load balancers: consistent hashing, locality, warmup, zone awareness, Envoy's primality check.

use serde_json::{Value, json};

use super::{assert_error, assert_no_errors, assert_warning, issues, with_lb, with_policy};
use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::destination_rule::validate::load_balancer::is_prime;

const LB: &str = "spec.trafficPolicy.loadBalancer";

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

// ----- helpers ----------------------------------------------------------------------------------

#[test]
fn primality_matches_envoys_check() {
    let primes: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
    // Like Envoy (and Istio, which copies it), 1 counts as prime and 0 does not.
    assert_eq!(primes, vec![1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65537) && is_prime(5_000_011) && !is_prime(65536) && !is_prime(65535) && is_prime(4_999_999));
}
