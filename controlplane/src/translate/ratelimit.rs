//! RateLimitPolicy: the local rate limits of the proxy's workload, in the order the proxy tries them.
//!
//! Scope is that of AuthorizationPolicy: a policy applies from the workload's namespace (to every workload,
//! or those its selector matches) and from the root namespace (to the whole mesh, or the workloads its
//! selector matches anywhere). Rules are listed most specific policy first, so the first match is the
//! narrowest one: selected in the workload's namespace, then namespace-wide, then selected from the root
//! namespace, then mesh-wide; among policies of one rank the oldest first (then namespace and name), and
//! within a policy in the order written.

use trellis_api::FieldPath;
use trellis_api::object::Object;
use trellis_api::proxy_config::RateLimit;
use trellis_api::rate_limit::{DEFAULT_STATUS_CODE, DEFAULT_TOKENS_PER_FILL, RateLimitPolicySpec};

use super::{Context, security};
use crate::index::{Age, Key, Kind};

/// The rate limits that apply to the proxy's workload, in evaluation order.
pub fn rate_limits(cx: &mut Context<'_>) -> Vec<RateLimit> {
    let mut policies: Vec<((bool, bool, Age), &Key, &RateLimitPolicySpec)> = cx
        .index
        .configs(Kind::RateLimitPolicy)
        .filter_map(|(key, age, object)| match object {
            Object::RateLimitPolicy(policy) => Some((key, age, &policy.spec)),
            _ => None,
        })
        .filter(|(key, _, spec)| security::applies(cx, key, spec.selector.as_ref()))
        .map(|(key, age, spec)| {
            let elsewhere = *key.namespace != *cx.proxy.namespace;
            ((elsewhere, !security::has_labels(spec.selector.as_ref()), age), key, spec)
        })
        .collect();
    policies.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut limits = Vec::new();
    let mut skipped = Vec::new();
    for (_, key, spec) in policies {
        for (i, rule) in spec.rules.iter().enumerate() {
            let bucket = &rule.token_bucket;
            let fill_interval = match trellis_api::duration::parse(&bucket.fill_interval) {
                Ok(interval) => interval,
                Err(err) => {
                    let at = FieldPath::of("spec").key("rules").index(i).key("tokenBucket").key("fillInterval");
                    skipped.push((key.clone(), at, format!("{err}; the rule is ignored")));
                    continue;
                }
            };
            let matching = rule.match_.clone().unwrap_or_default();
            limits.push(RateLimit {
                policy: format!("{}/{}", key.namespace, key.name),
                rule: u32::try_from(i).unwrap_or(u32::MAX),
                paths: matching.paths.unwrap_or_default(),
                methods: matching.methods.unwrap_or_default(),
                ports: matching.ports.unwrap_or_default().into_iter().filter_map(|p| u16::try_from(p).ok()).collect(),
                max_tokens: bucket.max_tokens,
                tokens_per_fill: bucket.tokens_per_fill.unwrap_or(DEFAULT_TOKENS_PER_FILL),
                fill_interval,
                per_source: rule.per_source.unwrap_or(false),
                status_code: rule.status_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(DEFAULT_STATUS_CODE),
                quota_headers: rule.quota_headers.unwrap_or(false),
            });
        }
    }
    for (key, at, reason) in skipped {
        cx.skip(&key, at, reason);
    }
    limits
}

/// The limits that can fire on workload port `port`: those naming no port or this one. The catch-all
/// listener ([`trellis_api::proxy_config::INBOUND_CATCH_ALL_PORT`]) keeps them all; the proxy checks
/// each rule's ports against the connection's.
pub fn for_port(limits: &[RateLimit], port: u16) -> Vec<RateLimit> {
    if port == trellis_api::proxy_config::INBOUND_CATCH_ALL_PORT {
        return limits.to_vec();
    }
    limits.iter().filter(|l| l.ports.is_empty() || l.ports.contains(&port)).cloned().collect()
}
