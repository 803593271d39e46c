//! The booking role: `/api/v1/booking` asks inventory and shipping at once and answers with both
//! answers. Query parameters prefixed `inventory_` or `shipping_` are passed to that dependency with
//! the prefix removed (`?inventory_delay_ms=500&shipping_fail=1`); tracing and identity headers are
//! propagated. When a dependency gives no answer or a non-2xx one, booking answers 503 and names it.

use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::client::{Answer, CallError, Client};
use crate::headers::{PROXY_ERROR_HEADER, VERSION_HEADER};
use crate::outbound::HttpUrl;

/// Prefix of the query parameters booking passes to inventory.
pub const INVENTORY_PREFIX: &str = "inventory_";
/// Prefix of the query parameters booking passes to shipping.
pub const SHIPPING_PREFIX: &str = "shipping_";

/// Splits booking's raw query into inventory's and shipping's (prefixes removed, order and encoding
/// kept); parameters for neither are dropped.
pub fn split_query(query: &str) -> (String, String) {
    let (mut inventory, mut shipping) = (Vec::new(), Vec::new());
    for part in query.split('&') {
        if let Some(rest) = part.strip_prefix(INVENTORY_PREFIX) {
            inventory.push(rest);
        } else if let Some(rest) = part.strip_prefix(SHIPPING_PREFIX) {
            shipping.push(rest);
        }
    }
    (inventory.join("&"), shipping.join("&"))
}

/// What booking learned from one dependency.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// `inventory` or `shipping`.
    pub name: &'static str,
    /// The URL booking asked (through a proxy or not).
    pub url: String,
    pub outcome: Outcome,
}

/// How a call to a dependency ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It answered (with any status).
    Answered {
        status: StatusCode,
        /// From `x-ordering-version`, else the body's `version`.
        version: Option<String>,
        /// Set when a mesh proxy generated the answer (`x-trellis-error`).
        proxy_error: Option<String>,
        /// The body as JSON, or as text when it is not JSON.
        body: Value,
    },
    /// It gave no answer: connection refused, timeout, broken connection.
    Unreachable { error: String },
}

impl Dependency {
    /// Reads the result of a call.
    pub fn from_result(name: &'static str, url: String, result: Result<Answer, CallError>) -> Self {
        let outcome = match result {
            Ok(answer) => answered(&answer),
            Err(err) => Outcome::Unreachable { error: err.to_string() },
        };
        Dependency { name, url, outcome }
    }

    /// Whether the dependency answered with a 2xx status.
    pub fn ok(&self) -> bool {
        matches!(&self.outcome, Outcome::Answered { status, .. } if status.is_success())
    }

    /// Why the dependency counts as failed, if it does.
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Answered { status, .. } if status.is_success() => None,
            Outcome::Answered { status, proxy_error: Some(reason), .. } => {
                Some(format!("{} answered {} from the mesh proxy ({reason})", self.name, status.as_u16()))
            }
            Outcome::Answered { status, .. } => Some(format!("{} answered {}", self.name, status.as_u16())),
            Outcome::Unreachable { error } => Some(format!("{} unreachable: {error}", self.name)),
        }
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("url".into(), self.url.clone().into());
        match &self.outcome {
            Outcome::Answered { status, version, proxy_error, body } => {
                out.insert("status".into(), status.as_u16().into());
                out.insert("version".into(), version.clone().map_or(Value::Null, Value::from));
                if let Some(reason) = proxy_error {
                    out.insert("proxyError".into(), reason.clone().into());
                }
                out.insert("body".into(), body.clone());
            }
            Outcome::Unreachable { error } => {
                out.insert("status".into(), Value::Null);
                out.insert("error".into(), error.clone().into());
            }
        }
        Value::Object(out)
    }
}

fn answered(answer: &Answer) -> Outcome {
    let body = serde_json::from_slice::<Value>(&answer.body)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&answer.body).into_owned()));
    let header = |headers: &HeaderMap, name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let version = header(&answer.headers, VERSION_HEADER)
        .or_else(|| body.get("version").and_then(Value::as_str).map(str::to_owned));
    Outcome::Answered { status: answer.status, version, proxy_error: header(&answer.headers, PROXY_ERROR_HEADER), body }
}

/// Booking's answer: 200 with both dependencies' answers, or 503 naming the ones that failed.
/// `identity` holds booking's own fields (service, version, ...).
pub fn answer(identity: Map<String, Value>, dependencies: &[Dependency]) -> (StatusCode, Value) {
    let mut out = identity;
    let failed: Vec<&Dependency> = dependencies.iter().filter(|d| !d.ok()).collect();
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !failed.is_empty() {
        let reasons: Vec<String> = failed.iter().filter_map(|d| d.failure()).collect();
        out.insert("error".into(), reasons.join("; ").into());
        out.insert("failed".into(), json!(failed.iter().map(|d| d.name).collect::<Vec<_>>()));
    }
    for dependency in dependencies {
        out.insert(dependency.name.into(), dependency.to_json());
    }
    (status, Value::Object(out))
}

/// Calls both dependencies at once with booking's query and headers and builds the answer.
pub async fn book(
    client: &Client,
    inventory: &HttpUrl,
    shipping: &HttpUrl,
    query: &str,
    incoming: &HeaderMap,
    identity: Map<String, Value>,
) -> (StatusCode, Value) {
    let (inventory_query, shipping_query) = split_query(query);
    let forwarded = crate::headers::propagated(incoming);
    let inventory_path = inventory.path_with_query(&inventory_query);
    let shipping_path = shipping.path_with_query(&shipping_query);
    let (inventory_result, shipping_result) = tokio::join!(
        client.get(inventory, &inventory_path, &forwarded),
        client.get(shipping, &shipping_path, &forwarded),
    );
    let dependencies = [
        Dependency::from_result("inventory", inventory.absolute(&inventory_path), inventory_result),
        Dependency::from_result("shipping", shipping.absolute(&shipping_path), shipping_result),
    ];
    answer(identity, &dependencies)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderValue;

    use super::*;

    fn answer_with(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        Answer {
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: map,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn identity() -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("service".into(), "booking".into());
        map
    }

    #[test]
    fn prefixed_parameters_go_to_their_dependency_without_the_prefix() {
        let (inventory, shipping) = split_query("inventory_delay_ms=500&item=7&shipping_fail=1&inventory_fail=1");
        assert_eq!(inventory, "delay_ms=500&fail=1");
        assert_eq!(shipping, "fail=1");
        assert_eq!(split_query(""), (String::new(), String::new()));
    }

    #[test]
    fn the_version_comes_from_the_header_else_from_the_body() {
        let from_header = answered(&answer_with(200, &[("x-ordering-version", "v2")], r#"{"version":"v1"}"#));
        assert!(matches!(from_header, Outcome::Answered { version: Some(v), .. } if v == "v2"));
        let from_body = answered(&answer_with(200, &[], r#"{"version":"v1"}"#));
        assert!(matches!(from_body, Outcome::Answered { version: Some(v), .. } if v == "v1"));
        let text = answered(&answer_with(503, &[], "upstream connect error"));
        assert!(matches!(text, Outcome::Answered { version: None, body: Value::String(_), .. }));
    }

    #[test]
    fn both_dependencies_answering_2xx_make_a_200() {
        let deps = [
            Dependency::from_result(
                "inventory",
                "u1".into(),
                Ok(answer_with(200, &[("x-ordering-version", "v1")], "{}")),
            ),
            Dependency::from_result(
                "shipping",
                "u2".into(),
                Ok(answer_with(200, &[("x-ordering-version", "v2")], "{}")),
            ),
        ];
        let (status, body) = answer(identity(), &deps);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["service"], "booking");
        assert_eq!(body["inventory"]["version"], "v1");
        assert_eq!(body["shipping"]["version"], "v2");
        assert_eq!(body["shipping"]["status"], 200);
        assert!(body.get("failed").is_none());
    }

    #[test]
    fn a_failing_dependency_makes_a_503_that_names_it() {
        let deps = [
            Dependency::from_result(
                "inventory",
                "u1".into(),
                Ok(answer_with(503, &[("x-trellis-error", "circuit breaker open")], "")),
            ),
            Dependency::from_result("shipping", "u2".into(), Ok(answer_with(200, &[], "{}"))),
        ];
        let (status, body) = answer(identity(), &deps);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["failed"], json!(["inventory"]));
        assert_eq!(body["inventory"]["proxyError"], "circuit breaker open");
        let error = body["error"].as_str().expect("error text");
        assert!(error.contains("inventory answered 503 from the mesh proxy"), "{error}");
    }

    #[test]
    fn an_unreachable_dependency_is_reported_with_its_error() {
        let deps = [
            Dependency::from_result("inventory", "u1".into(), Ok(answer_with(200, &[], "{}"))),
            Dependency::from_result(
                "shipping",
                "u2".into(),
                Err(CallError::Timeout(std::time::Duration::from_millis(100))),
            ),
        ];
        let (status, body) = answer(identity(), &deps);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["failed"], json!(["shipping"]));
        assert_eq!(body["shipping"]["status"], Value::Null);
        assert!(body["error"].as_str().expect("error").starts_with("shipping unreachable: no answer within"));
    }
}
