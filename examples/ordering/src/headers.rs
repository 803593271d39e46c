//! The request headers an application in an Istio mesh must copy from its incoming request to the
//! requests it makes, so traces join up across services and identity-based routing and authorization
//! see the caller: request id, B3 and W3C trace context, and the end user and their token.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// Headers copied as they are from an incoming request to the requests it causes.
pub const PROPAGATED: &[&str] = &[
    "x-request-id",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "end-user",
    "authorization",
    "user-agent",
];
/// Header name prefixes copied as they are (B3's split headers: `x-b3-traceid`, `x-b3-spanid`, ...).
pub const PROPAGATED_PREFIXES: &[&str] = &["x-b3-"];
/// Header carrying the answering instance's version on every response.
pub const VERSION_HEADER: &str = "x-ordering-version";
/// Header carrying the answering role (`booking`, `inventory`, `shipping`) on every response.
pub const SERVICE_HEADER: &str = "x-ordering-service";
/// Header a Trellis proxy adds to the responses it generates itself (a 503 from a circuit breaker).
pub const PROXY_ERROR_HEADER: &str = "x-trellis-error";
/// What answers show instead of a token's value.
pub const REDACTED: &str = "(redacted)";

/// Whether `name` (lowercase, as `http` stores it) is copied to outgoing requests.
pub fn is_propagated(name: &str) -> bool {
    PROPAGATED.contains(&name) || PROPAGATED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The headers of `incoming` to copy to outgoing requests, in their order, repeats kept.
pub fn propagated(incoming: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    incoming.iter().filter(|(name, _)| is_propagated(name.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect()
}

/// The propagated headers an answer shows (so a demo can see the trace and the user arrive), with
/// `authorization` redacted; repeated headers are joined with `, `.
pub fn echo(incoming: &HeaderMap) -> Map<String, Value> {
    let mut shown = Map::new();
    for (name, value) in incoming.iter().filter(|(name, _)| is_propagated(name.as_str())) {
        let text = if name == http::header::AUTHORIZATION {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match shown.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&text);
            }
            _ => {
                shown.insert(name.as_str().to_owned(), Value::String(text));
            }
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tracing_and_identity_headers_are_propagated_and_others_are_not() {
        let incoming = headers(&[
            ("x-request-id", "r1"),
            ("x-b3-traceid", "t"),
            ("x-b3-spanid", "s"),
            ("x-b3-sampled", "1"),
            ("traceparent", "00-abc-def-01"),
            ("end-user", "jason"),
            ("authorization", "Bearer x"),
            ("host", "booking-service:8080"),
            ("content-length", "0"),
            ("cookie", "a=b"),
        ]);
        let names: Vec<String> = propagated(&incoming).iter().map(|(n, _)| n.as_str().to_owned()).collect();
        assert_eq!(
            names,
            ["x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "traceparent", "end-user", "authorization"]
        );
    }

    #[test]
    fn the_echo_redacts_the_token_and_joins_repeats() {
        let incoming = headers(&[("authorization", "Bearer secret"), ("end-user", "a"), ("end-user", "b")]);
        let shown = echo(&incoming);
        assert_eq!(shown.get("authorization"), Some(&Value::from(REDACTED)));
        assert_eq!(shown.get("end-user"), Some(&Value::from("a, b")));
        assert_eq!(shown.len(), 2);
    }
}
