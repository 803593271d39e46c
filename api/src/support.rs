//! Fields Trellis accepts (so any valid Istio YAML applies) but does not act on yet.
//!
//! `trellis analyze` and the control plane warn when an object sets one of these, so nobody believes a
//! setting is in force when it is not. Each entry leaves this list in the change that implements it.

use serde_json::Value;

use crate::path::Segment;
use crate::{FieldPath, Issues};

/// The warning about a field in [`NOT_ACTED_ON`].
pub const NOT_ACTED_ON_MESSAGE: &str = "accepted but not acted on yet by Trellis";

/// `(kind, path pattern)`. In a pattern `[*]` matches any list index, `*` any key, and `**` any
/// number of steps (so one entry covers a traffic policy at the top, in subsets and per port).
///
/// Checked against the control plane's translation (`controlplane/src/translate`) and the proxy: a field
/// is listed when nothing reads it, or when the translation only records that it cannot apply it.
pub const NOT_ACTED_ON: &[(&str, &str)] = &[
    ("VirtualService", "spec.http[*].delegate"),
    ("VirtualService", "spec.http[*].corsPolicy"),
    ("VirtualService", "spec.http[*].match[*].statPrefix"),
    ("VirtualService", "spec.http[*].redirect.prefixRewrite"),
    ("VirtualService", "spec.http[*].retries.retryRemoteLocalities"),
    ("VirtualService", "spec.tcp[*].match[*].destinationSubnets"),
    ("VirtualService", "spec.tcp[*].match[*].sourceSubnet"),
    ("VirtualService", "spec.tls[*].match[*].destinationSubnets"),
    ("DestinationRule", "spec.**.loadBalancer.localityLbSetting"),
    ("DestinationRule", "spec.**.loadBalancer.zoneAwareLbSetting"),
    ("DestinationRule", "spec.**.loadBalancer.backendUtilization"),
    ("DestinationRule", "spec.**.loadBalancer.warmup"),
    ("DestinationRule", "spec.**.loadBalancer.warmupDurationSecs"),
    ("DestinationRule", "spec.**.loadBalancer.consistentHash.httpCookie.path"),
    ("DestinationRule", "spec.**.loadBalancer.consistentHash.httpCookie.attributes"),
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
    ("DestinationRule", "spec.**.outlierDetection.outlierDetectionHttpErrorCodes"),
    ("DestinationRule", "spec.**.tls.clientCertificate"),
    ("DestinationRule", "spec.**.tls.privateKey"),
    ("DestinationRule", "spec.**.tls.credentialName"),
    ("DestinationRule", "spec.**.tls.subjectAltNames"),
    ("DestinationRule", "spec.**.tls.insecureSkipVerify"),
    ("DestinationRule", "spec.**.tls.caCrl"),
    ("DestinationRule", "spec.**.tunnel"),
    ("DestinationRule", "spec.**.proxyProtocol"),
    ("DestinationRule", "spec.**.retryBudget.budgetInterval"),
    ("Gateway", "spec.servers[*].bind"),
    ("Gateway", "spec.servers[*].defaultEndpoint"),
    // Gateways serve HTTP, HTTP2 and gRPC servers; of `tls` only `httpsRedirect` is acted on.
    ("Gateway", "spec.servers[*].tls.mode"),
    ("Gateway", "spec.servers[*].tls.serverCertificate"),
    ("Gateway", "spec.servers[*].tls.privateKey"),
    ("Gateway", "spec.servers[*].tls.caCertificates"),
    ("Gateway", "spec.servers[*].tls.caCrl"),
    ("Gateway", "spec.servers[*].tls.credentialName"),
    ("Gateway", "spec.servers[*].tls.credentialNames"),
    ("Gateway", "spec.servers[*].tls.tlsCertificates"),
    ("Gateway", "spec.servers[*].tls.caCertCredentialName"),
    ("Gateway", "spec.servers[*].tls.subjectAltNames"),
    ("Gateway", "spec.servers[*].tls.verifyCertificateSpki"),
    ("Gateway", "spec.servers[*].tls.verifyCertificateHash"),
    ("Gateway", "spec.servers[*].tls.minProtocolVersion"),
    ("Gateway", "spec.servers[*].tls.maxProtocolVersion"),
    ("Gateway", "spec.servers[*].tls.cipherSuites"),
    ("Gateway", "spec.servers[*].tls.ecdhCurves"),
    ("Gateway", "spec.servers[*].tls.insecureSkipVerify"),
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
    ("RequestAuthentication", "spec.jwtRules[*].presence"),
];

/// `(kind, path pattern, values)`: settings Trellis accepts but does not act on when the field holds one
/// of `values` (compared ignoring case), as the control plane's translation reports them.
pub const VALUES_NOT_ACTED_ON: &[(&str, &str, &[&str])] = &[
    ("VirtualService", "spec.http[*].redirect.derivePort", &["FROM_REQUEST_PORT"]),
    ("DestinationRule", "spec.**.loadBalancer.simple", &["PASSTHROUGH"]),
    ("DestinationRule", "spec.**.tls.mode", &["MUTUAL"]),
    ("Gateway", "spec.servers[*].port.protocol", &["HTTPS", "TLS", "TCP", "MONGO", "REDIS", "MYSQL", "UDP"]),
    ("AuthorizationPolicy", "spec.action", &["CUSTOM"]),
];

/// Every field of `object` (a `kind` object as JSON) holding a value in [`VALUES_NOT_ACTED_ON`], with
/// that value.
pub fn values_not_acted_on(kind: &str, object: &Value) -> Vec<(String, FieldPath)> {
    let mut out = Vec::new();
    for (_, pattern, values) in VALUES_NOT_ACTED_ON.iter().filter(|(k, _, _)| *k == kind) {
        let mut found = Vec::new();
        find(object, &steps(pattern), FieldPath::root(), &mut found);
        for path in found {
            let Some(value) = lookup(object, &path).and_then(Value::as_str) else { continue };
            if values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                out.push((value.to_owned(), path));
            }
        }
    }
    out
}

/// The value at `path` in `object`.
fn lookup<'a>(object: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.segments().iter().try_fold(object, |value, segment| match segment {
        Segment::Key(key) => value.get(key.as_str()),
        Segment::Index(i) => value.get(*i),
    })
}

/// Every field of `object` (a `kind` object as JSON) that Trellis does not act on yet, with the
/// [`NOT_ACTED_ON`] pattern that names it.
pub fn not_acted_on(kind: &str, object: &Value) -> Vec<(&'static str, FieldPath)> {
    let mut out = Vec::new();
    for (_, pattern) in NOT_ACTED_ON.iter().filter(|(k, _)| *k == kind) {
        let mut found = Vec::new();
        find(object, &steps(pattern), FieldPath::root(), &mut found);
        out.extend(found.into_iter().map(|path| (*pattern, path)));
    }
    out
}

/// Warns about every field and value of `object` (a `kind` object as JSON) that Trellis does not act on yet.
pub fn warn_not_acted_on(kind: &str, object: &Value, issues: &mut Issues) {
    for (_, path) in not_acted_on(kind, object) {
        issues.warn(&path, NOT_ACTED_ON_MESSAGE);
    }
    for (value, path) in values_not_acted_on(kind, object) {
        issues.warn(&path, format!("{value} is {NOT_ACTED_ON_MESSAGE}"));
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
mod tests;
