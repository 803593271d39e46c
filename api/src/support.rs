//! Fields Trellis accepts (so any valid Istio YAML applies) but does not act on yet.
//!
//! `trellis analyze` and the control plane warn when an object sets one of these, so nobody believes a
//! setting is in force when it is not. Each entry leaves this list in the change that implements it.

use serde_json::Value;

use crate::{FieldPath, Issues};

/// `(kind, path pattern)`. In a pattern `[*]` matches any list index, `*` any key, and `**` any
/// number of steps (so one entry covers a traffic policy at the top, in subsets and per port).
pub const NOT_ACTED_ON: &[(&str, &str)] = &[
    ("VirtualService", "spec.http[*].delegate"),
    ("VirtualService", "spec.http[*].corsPolicy"),
    ("VirtualService", "spec.http[*].match[*].statPrefix"),
    ("VirtualService", "spec.http[*].retries.retryRemoteLocalities"),
    ("VirtualService", "spec.http[*].retries.retryIgnorePreviousHosts"),
    ("DestinationRule", "spec.workloadSelector"),
    ("DestinationRule", "spec.**.loadBalancer.localityLbSetting"),
    ("DestinationRule", "spec.**.loadBalancer.warmup"),
    ("DestinationRule", "spec.**.loadBalancer.warmupDurationSecs"),
    ("DestinationRule", "spec.**.loadBalancer.consistentHash.ringHash"),
    ("DestinationRule", "spec.**.loadBalancer.consistentHash.maglev"),
    ("DestinationRule", "spec.**.loadBalancer.consistentHash.minimumRingSize"),
    ("DestinationRule", "spec.**.connectionPool.tcp.tcpKeepalive"),
    ("DestinationRule", "spec.**.connectionPool.tcp.maxConnectionDuration"),
    ("DestinationRule", "spec.**.connectionPool.tcp.idleTimeout"),
    ("DestinationRule", "spec.**.connectionPool.http.h2UpgradePolicy"),
    ("DestinationRule", "spec.**.connectionPool.http.useClientProtocol"),
    ("DestinationRule", "spec.**.connectionPool.http.http2KeepAlive"),
    ("DestinationRule", "spec.**.connectionPool.http.maxConcurrentStreams"),
    ("DestinationRule", "spec.**.outlierDetection.splitExternalLocalOriginErrors"),
    ("DestinationRule", "spec.**.outlierDetection.consecutiveLocalOriginFailures"),
    ("DestinationRule", "spec.**.tls.clientCertificate"),
    ("DestinationRule", "spec.**.tls.privateKey"),
    ("DestinationRule", "spec.**.tls.credentialName"),
    ("DestinationRule", "spec.**.tls.subjectAltNames"),
    ("DestinationRule", "spec.**.tls.insecureSkipVerify"),
    ("DestinationRule", "spec.**.tunnel"),
    ("DestinationRule", "spec.**.proxyProtocol"),
    ("Gateway", "spec.servers[*].tls"),
    ("Gateway", "spec.servers[*].bind"),
    ("Gateway", "spec.servers[*].defaultEndpoint"),
    ("ServiceEntry", "spec.subjectAltNames"),
    ("ServiceEntry", "spec.endpoints[*].network"),
    ("ServiceEntry", "spec.endpoints[*].locality"),
    ("WorkloadEntry", "spec.network"),
    ("WorkloadEntry", "spec.locality"),
    ("AuthorizationPolicy", "spec.provider"),
    ("AuthorizationPolicy", "spec.targetRef"),
    ("AuthorizationPolicy", "spec.targetRefs"),
    ("RequestAuthentication", "spec.targetRef"),
    ("RequestAuthentication", "spec.targetRefs"),
    ("RequestAuthentication", "spec.jwtRules[*].spaceDelimitedClaims"),
];

/// Warns about every field of `object` (a `kind` object as JSON) that Trellis does not act on yet.
pub fn warn_not_acted_on(kind: &str, object: &Value, issues: &mut Issues) {
    for (_, pattern) in NOT_ACTED_ON.iter().filter(|(k, _)| *k == kind) {
        let steps = steps(pattern);
        let mut found = Vec::new();
        find(object, &steps, FieldPath::root(), &mut found);
        for path in found {
            issues.warn(&path, "accepted but not acted on yet by Trellis");
        }
    }
}

#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    AnyKey,
    AnyIndex,
    AnyDepth,
}

fn steps(pattern: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in pattern.split('.') {
        let (name, list) = match part.strip_suffix("[*]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        out.push(match name {
            "**" => Step::AnyDepth,
            "*" => Step::AnyKey,
            key => Step::Key(key),
        });
        if list {
            out.push(Step::AnyIndex);
        }
    }
    out
}

fn find(value: &Value, steps: &[Step<'_>], path: FieldPath, found: &mut Vec<FieldPath>) {
    let Some((step, rest)) = steps.split_first() else {
        if !value.is_null() && !found.contains(&path) {
            found.push(path);
        }
        return;
    };
    match (step, value) {
        (Step::Key(key), Value::Object(map)) => {
            if let Some(child) = map.get(*key) {
                find(child, rest, path.key(key), found);
            }
        }
        (Step::AnyKey, Value::Object(map)) => {
            for (key, child) in map {
                find(child, rest, path.key(key), found);
            }
        }
        (Step::AnyIndex, Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                find(child, rest, path.index(i), found);
            }
        }
        (Step::AnyDepth, _) => {
            find(value, rest, path.clone(), found);
            match value {
                Value::Object(map) => map.iter().for_each(|(k, child)| find(child, steps, path.key(k), found)),
                Value::Array(items) => {
                    items.iter().enumerate().for_each(|(i, child)| find(child, steps, path.index(i), found))
                }
                _ => {}
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_field_not_acted_on_is_warned_about_wherever_the_pattern_reaches_it() {
        let dr = json!({"spec": {
            "trafficPolicy": {"tunnel": {"protocol": "CONNECT"}},
            "subsets": [{"name": "v1", "trafficPolicy": {"tunnel": {"protocol": "POST"}}}]
        }});
        let mut issues = Issues::default();
        warn_not_acted_on("DestinationRule", &dr, &mut issues);
        let mut paths: Vec<String> = issues.iter().map(|i| i.path.to_string()).collect();
        paths.sort();
        assert_eq!(paths, ["spec.subsets[0].trafficPolicy.tunnel", "spec.trafficPolicy.tunnel"]);
    }

    #[test]
    fn fields_that_are_acted_on_raise_no_warning() {
        let vs = json!({"spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}]}]}});
        let mut issues = Issues::default();
        warn_not_acted_on("VirtualService", &vs, &mut issues);
        assert_eq!(issues.iter().count(), 0);
    }

    #[test]
    fn every_pattern_names_a_field_of_the_served_schema() {
        // A pattern that names no field of the CRD would silently never warn.
        let crds = crate::crd::all();
        for (kind, pattern) in NOT_ACTED_ON {
            let crd = crds.iter().find(|c| c.spec.names.kind == *kind).expect("kind is served");
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
            let mut at = vec![&schema["openAPIV3Schema"]];
            for step in steps(pattern) {
                let next: Vec<&Value> = at
                    .iter()
                    .flat_map(|s| -> Vec<&Value> {
                        match step {
                            Step::Key(k) => s.get("properties").and_then(|p| p.get(k)).into_iter().collect(),
                            Step::AnyIndex => s.get("items").into_iter().collect(),
                            Step::AnyKey => s.get("additionalProperties").into_iter().collect(),
                            Step::AnyDepth => all_descendants(s),
                        }
                    })
                    .collect();
                at = next;
            }
            assert!(!at.is_empty(), "{kind} {pattern} names no field of the schema");
        }
    }

    fn all_descendants(schema: &Value) -> Vec<&Value> {
        let mut out = vec![schema];
        let mut i = 0;
        while i < out.len() {
            let s = out[i];
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                out.extend(props.values());
            }
            out.extend(s.get("items"));
            out.extend(s.get("additionalProperties").filter(|v| v.is_object()));
            i += 1;
        }
        out
    }
}
