//! Validation of the actions and policies of a `VirtualService` HTTP rule: header changes, CORS, faults,
//! retries, redirects, direct responses and rewrites.

use super::super::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection, HttpFaultInjectionAbort,
    HttpFaultInjectionDelay, HttpRedirect, HttpRetry, HttpRewrite,
};
use super::fields::{Precision, check_duration, check_regex, is_header_token};
use crate::istio::common::Percent;
use crate::{FieldPath, Issues, Validate};

/// Largest direct response body Istio accepts.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Direct response bodies above this size draw a warning.
const LARGE_BODY_BYTES: usize = 100 * 1024;

/// HTTP methods a CORS policy may allow.
const CORS_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"];

/// `retryOn` policies Envoy understands (besides HTTP status codes).
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl Validate for Headers {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(request) = &self.request {
            request.check(&path.key("request"), true, issues);
        }
        if let Some(response) = &self.response {
            response.check(&path.key("response"), false, issues);
        }
    }
}

impl HeaderOperations {
    /// Names must be non-empty and not pseudo-headers; on requests, `set`/`add` may change the authority.
    fn check(&self, path: &FieldPath, request: bool, issues: &mut Issues) {
        for (field, headers) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in headers.iter().flatten() {
                let at = path.key(field).key(name);
                if let Some(problem) = header_operation_problem(name, request) {
                    issues.error(&at, problem);
                }
                if let Some(problem) = header_value_problem(value) {
                    issues.error(&at, problem);
                }
            }
        }
        for (k, name) in self.remove.iter().flatten().enumerate() {
            if let Some(problem) = header_operation_problem(name, false) {
                issues.error(&path.key("remove").index(k), problem);
            }
        }
    }
}

/// `rewrite.authority`, and request headers `:authority`/`host` set or added, may change the authority once.
pub(super) fn check_authority_rewrites(
    path: &FieldPath,
    rewrite: Option<&HttpRewrite>,
    headers: Option<&Headers>,
    issues: &mut Issues,
) {
    let mut count = usize::from(rewrite.and_then(|r| r.authority.as_deref()).is_some_and(|a| !a.is_empty()));
    if let Some(request) = headers.and_then(|h| h.request.as_ref()) {
        for map in [&request.set, &request.add] {
            count += map.iter().flatten().filter(|(name, _)| is_authority_header(name)).count();
        }
    }
    if count > 1 {
        issues.error(
            &path.key("headers").key("request"),
            "the authority is rewritten more than once (rewrite.authority, :authority or host)",
        );
    }
}

impl Validate for CorsPolicy {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        for (k, origin) in self.allow_origins.iter().flatten().enumerate() {
            let at = path.key("allowOrigins").index(k);
            let values: Vec<&String> = [&origin.exact, &origin.prefix, &origin.regex].into_iter().flatten().collect();
            if values.len() > 1 {
                issues.error(&at, "only one of exact, prefix or regex can be set");
            } else if values.first().is_none_or(|v| v.is_empty()) {
                issues.error(&at, "an allowed origin needs a non-empty exact, prefix or regex");
            }
            if let Some(regex) = origin.regex.as_deref().filter(|r| !r.is_empty()) {
                check_regex(&at.key("regex"), regex, issues);
            }
        }
        for (k, method) in self.allow_methods.iter().flatten().enumerate() {
            if !CORS_METHODS.contains(&method.as_str()) {
                issues.error(&path.key("allowMethods").index(k), format!("{method:?} is not a supported HTTP method"));
            }
        }
        for field in ["allowHeaders", "exposeHeaders"] {
            let names = if field == "allowHeaders" { &self.allow_headers } else { &self.expose_headers };
            for (k, name) in names.iter().flatten().enumerate() {
                let at = path.key(field).index(k);
                if name.is_empty() {
                    issues.error(&at, "header name must not be empty");
                } else if name != "*" && !is_header_token(name) {
                    issues.error(&at, format!("{name:?} is not a valid header name"));
                }
            }
        }
        check_duration(&path.key("maxAge"), self.max_age.as_deref(), Precision::Second, issues);
    }
}

impl Validate for HttpFaultInjection {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.delay.is_none() && self.abort.is_none() {
            issues.error(path, "fault needs an abort, a delay or both");
        }
        self.delay.validate(&path.key("delay"), issues);
        self.abort.validate(&path.key("abort"), issues);
    }
}

impl Validate for HttpFaultInjectionDelay {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.fixed_delay.is_some() && self.exponential_delay.is_some() {
            issues.error(path, "only one of fixedDelay or exponentialDelay can be set");
        }
        check_duration(&path.key("fixedDelay"), self.fixed_delay.as_deref(), Precision::Millisecond, issues);
        let exponential = path.key("exponentialDelay");
        check_duration(&exponential, self.exponential_delay.as_deref(), Precision::Millisecond, issues);
        if self.exponential_delay.is_some() {
            issues.error(&exponential, "exponentialDelay is rejected by Istio; use fixedDelay");
        }
        if let Some(percent) = self.percent
            && !(0..=100).contains(&percent)
        {
            issues.error(&path.key("percent"), format!("percent {percent} must be between 0 and 100"));
        }
        if let Some(percentage) = &self.percentage {
            check_fault_percentage(&path.key("percentage"), percentage, issues);
        }
    }
}

impl Validate for HttpFaultInjectionAbort {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let kinds = [self.http_status.is_some(), self.grpc_status.is_some(), self.http2_error.is_some()];
        let set = kinds.iter().filter(|k| **k).count();
        if set > 1 {
            issues.error(path, "only one of httpStatus, grpcStatus or http2Error can be set");
        } else if set == 0 {
            issues.warn(path, "abort sets none of httpStatus, grpcStatus or http2Error, so it aborts nothing");
        }
        if let Some(status) = self.http_status
            && !(200..=599).contains(&status)
        {
            issues.error(&path.key("httpStatus"), format!("http status {status} must be between 200 and 599"));
        }
        if let Some(status) = self.grpc_status.as_deref()
            && !crate::proxy_config::GRPC_STATUS_NAMES.contains(&status)
        {
            issues.error(
                &path.key("grpcStatus"),
                format!("grpc status {status:?} is not a gRPC status name such as UNAVAILABLE or NOT_FOUND"),
            );
        }
        if self.http2_error.is_some() {
            issues.error(
                &path.key("http2Error"),
                "http2Error aborts are rejected by Istio; use httpStatus or grpcStatus",
            );
        }
        if let Some(percentage) = &self.percentage {
            check_fault_percentage(&path.key("percentage"), percentage, issues);
        }
    }
}

/// Fault percentages are 0, or between 0.0001 and 100 (Envoy's resolution).
fn check_fault_percentage(path: &FieldPath, percentage: &Percent, issues: &mut Issues) {
    percentage.validate(path, issues);
    if let Some(value) = percentage.value
        && value > 0.0
        && value < 0.0001
    {
        issues.error(&path.key("value"), format!("percentage {value} must be 0 or at least 0.0001"));
    }
}

impl Validate for HttpRetry {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let attempts = self.attempts.unwrap_or(0);
        if attempts < 0 {
            issues.error(&path.key("attempts"), format!("attempts {attempts} must not be negative"));
        }
        let retry_on = self.retry_on.as_deref().unwrap_or_default();
        if attempts == 0
            && (self.per_try_timeout.is_some() || !retry_on.is_empty() || self.retry_remote_localities.is_some())
        {
            issues.error(
                &path.key("attempts"),
                "retry settings are given but attempts is 0 or unset, which disables retries",
            );
        }
        check_duration(&path.key("perTryTimeout"), self.per_try_timeout.as_deref(), Precision::Millisecond, issues);
        check_duration(&path.key("backoff"), self.backoff.as_deref(), Precision::Millisecond, issues);
        if !retry_on.is_empty() {
            for policy in retry_on.split(',') {
                if !RETRY_ON_POLICIES.contains(&policy) && !is_known_http_status(policy) {
                    issues.error(&path.key("retryOn"), format!("{policy:?} is not a valid retryOn policy"));
                }
            }
        }
    }
}

impl Validate for HttpRedirect {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.port.is_some() && self.derive_port.is_some() {
            issues.error(path, "only one of port or derivePort can be set");
        }
        let uri = is_set(&self.uri);
        let prefix_rewrite = is_set(&self.prefix_rewrite);
        if !(uri || prefix_rewrite || is_set(&self.authority) || is_set(&self.scheme))
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            issues.error(
                path,
                "redirect needs at least one of uri, prefixRewrite, authority, scheme, port or derivePort",
            );
        }
        if uri && prefix_rewrite {
            issues.error(&path.key("prefixRewrite"), "only one of uri or prefixRewrite can be set");
        }
        if let Some(code) = self.redirect_code
            && code != 0
            && !(300..=399).contains(&code)
        {
            issues.error(&path.key("redirectCode"), format!("redirect code {code} must be between 300 and 399"));
        }
        if let Some(scheme) = self.scheme.as_deref()
            && !scheme.is_empty()
            && scheme != "http"
            && scheme != "https"
        {
            issues.error(&path.key("scheme"), format!("redirect scheme {scheme:?} must be http or https"));
        }
        if let Some(port) = self.port
            && port > 0
        {
            issues.port(&path.key("port"), Some(port));
        }
    }
}

impl Validate for HttpDirectResponse {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if !(200..=599).contains(&self.status) {
            issues.error(&path.key("status"), format!("status {} must be between 200 and 599", self.status));
        }
        let Some(body) = &self.body else { return };
        let at = path.key("body");
        if body.string.is_some() && body.bytes.is_some() {
            issues.error(&at, "only one of string or bytes can be set");
        }
        let mut size = body.string.as_ref().map_or(0, String::len);
        if let Some(bytes) = body.bytes.as_deref() {
            match base64_decoded_len(bytes) {
                Some(len) => size = size.max(len),
                None => issues.error(&at.key("bytes"), "bytes must be base64-encoded"),
            }
        }
        if size > MAX_BODY_BYTES {
            issues.error(&at, format!("a direct response body of {size} bytes is too large; the limit is 1MB"));
        } else if size > LARGE_BODY_BYTES {
            issues.warn(&at, format!("a direct response body of {size} bytes may slow down the control plane"));
        }
    }
}

impl Validate for HttpRewrite {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let uri = is_set(&self.uri);
        if uri && self.uri_regex_rewrite.is_some() {
            issues.error(&path.key("uriRegexRewrite"), "only one of uri or uriRegexRewrite can be set");
        }
        if !uri && self.uri_regex_rewrite.is_none() && !is_set(&self.authority) {
            issues.error(path, "rewrite needs at least one of uri, uriRegexRewrite or authority");
        }
        if let Some(regex_rewrite) = &self.uri_regex_rewrite {
            let at = path.key("uriRegexRewrite");
            match regex_rewrite.r#match.as_deref().filter(|m| !m.is_empty()) {
                Some(pattern) => check_regex(&at.key("match"), pattern, issues),
                None => issues.error(&at.key("match"), "uriRegexRewrite needs both match and rewrite"),
            }
            if !is_set(&regex_rewrite.rewrite) {
                issues.error(&at.key("rewrite"), "uriRegexRewrite needs both match and rewrite");
            }
        }
    }
}

/// Which of the proxy's headers a route may set, add or remove.
fn header_operation_problem(name: &str, may_set_authority: bool) -> Option<String> {
    if name.is_empty() {
        return Some("header name must not be empty".to_owned());
    }
    if may_set_authority && is_authority_header(name) {
        return None;
    }
    if name.eq_ignore_ascii_case("host") {
        return Some(format!("header {name:?} cannot be changed here"));
    }
    if name.starts_with(':') {
        return Some(format!("pseudo-header {name:?} cannot be changed"));
    }
    None
}

/// A header value: no control characters but tab, and Envoy's `%VARIABLE%` syntax (`%%` for a literal `%`).
fn header_value_problem(value: &str) -> Option<String> {
    if value.chars().any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}')) {
        return Some(format!("header value {value:?} contains a control character"));
    }
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        if let Some(escaped) = after.strip_prefix('%') {
            rest = escaped;
            continue;
        }
        match after.find('%') {
            Some(end) => rest = &after[end + 1..],
            None => {
                return Some(format!("header value {value:?} has an unterminated %; write a literal percent as %%"));
            }
        }
    }
    None
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A string field that is present and non-empty (protobuf treats `""` as unset).
fn is_set(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

/// Status codes Go's `net/http` knows, which Istio accepts in `retryOn`.
fn is_known_http_status(text: &str) -> bool {
    let Ok(code) = text.parse::<u32>() else { return false };
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

/// Length of the bytes a standard (padded) base64 text decodes to, or `None` when it is not base64.
fn base64_decoded_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return None;
    }
    let body = &bytes[..bytes.len() - padding];
    if !body.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/') {
        return None;
    }
    Some(bytes.len() / 4 * 3 - padding)
}
