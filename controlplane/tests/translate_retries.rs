//! Retries end to end from the API: VirtualService `retries` on routes, and DestinationRule
//! `trafficPolicy.retryBudget` on clusters (the rule's budget, a subset's own budget, Envoy's defaults
//! for what a budget leaves out, and what the proxy cannot honour).

mod support;

use std::time::Duration;
use support::*;

use trellis_api::proxy_config::{
    DEFAULT_MIN_RETRY_CONCURRENCY, DEFAULT_RETRY_BUDGET_PERCENT, RetryBudget, RetryPolicy,
};
use trellis_controlplane::index::Kind;
use trellis_controlplane::translate::cluster_name;
use trellis_controlplane::translate::default_retries;

const QUOTES: &str = "quotes.shop.svc.cluster.local";

fn translated() -> trellis_controlplane::Translation {
    let index = index(&["retries.yaml"]);
    run(&index, &sidecar(&index, "shop", "client"))
}

fn budget(t: &trellis_controlplane::Translation, port: u16, subset: &str, host: &str) -> Option<RetryBudget> {
    cluster(&t.config, &cluster_name(port, subset, host)).retry_budget.clone()
}

#[test]
fn the_rules_retry_budget_caps_every_port_of_the_host() {
    let t = translated();
    let expected = Some(RetryBudget { percent: 25.0, min_retry_concurrency: 5 });
    assert_eq!(budget(&t, 9080, "", QUOTES), expected);
    assert_eq!(budget(&t, 9090, "", QUOTES), expected, "port-level settings carry no budget of their own");
}

#[test]
fn a_subsets_budget_replaces_the_rules_and_gets_envoys_default_minimum() {
    let t = translated();
    let canary = Some(RetryBudget { percent: 10.0, min_retry_concurrency: DEFAULT_MIN_RETRY_CONCURRENCY });
    assert_eq!(budget(&t, 9080, "canary", QUOTES), canary);
    assert_eq!(budget(&t, 9090, "canary", QUOTES), canary);
    let stable = Some(RetryBudget { percent: 25.0, min_retry_concurrency: 5 });
    assert_eq!(budget(&t, 9080, "stable", QUOTES), stable, "a subset without a budget inherits the rule's");
}

#[test]
fn a_budget_with_only_an_interval_gets_envoys_defaults_and_the_interval_is_reported() {
    let t = translated();
    let ledger = "ledger.shop.svc.cluster.local";
    assert_eq!(
        budget(&t, 80, "", ledger),
        Some(RetryBudget {
            percent: DEFAULT_RETRY_BUDGET_PERCENT,
            min_retry_concurrency: DEFAULT_MIN_RETRY_CONCURRENCY
        })
    );
    let about = skipped_about(&t, Kind::DestinationRule, "shop", "ledger");
    assert_eq!(about.len(), 1, "{about:?}");
    assert!(about[0].contains("retryBudget.budgetInterval"), "{about:?}");
}

#[test]
fn a_host_without_a_rule_has_no_budget() {
    let index = index(&["policy.yaml"]);
    let t = run(&index, &sidecar(&index, "shop", "client"));
    let legacy = cluster(&t.config, &cluster_name(80, "", "legacy.shop.svc.cluster.local"));
    assert_eq!(legacy.retry_budget, None, "a rule without retryBudget leaves retries capped by maxRetries only");
}

#[test]
fn every_retry_field_reaches_the_route_and_an_unset_policy_is_istios_default() {
    let t = translated();
    let routes = &vhost(&t.config, QUOTES, 9080).routes;
    let sticky = routes.iter().find(|r| r.name.ends_with("#sticky-retries")).expect("sticky route");
    assert_eq!(sticky.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        sticky.retries,
        Some(RetryPolicy {
            attempts: 4,
            per_try_timeout: None,
            retry_on: vec!["gateway-error".into(), "retriable-status-codes".into(), "429".into()],
            backoff: Some(Duration::from_millis(50)),
            allow_previous_hosts: true,
            remote_localities: true,
        })
    );
    let default = routes.iter().find(|r| r.name.ends_with("#default")).expect("default route");
    assert_eq!(default.retries, Some(default_retries()));
    assert!(!default_retries().allow_previous_hosts, "Istio's retries avoid the hosts already tried");
}
