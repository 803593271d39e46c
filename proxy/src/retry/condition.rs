//! `retryOn`: which outcomes of an attempt are worth another one, compiled once per route from
//! Envoy's condition names (as Istio passes them through) and bare status codes.

use http::{HeaderMap, Response, StatusCode};

use crate::http::headers::find_by_scan;
use crate::http::{PROXY_ERROR, UpstreamFailure};

/// Status `retriable-4xx` retries: 409 Conflict, as Envoy.
pub const RETRIABLE_4XX: StatusCode = StatusCode::CONFLICT;

/// gRPC status codes the gRPC conditions name.
mod grpc {
    pub const CANCELLED: u32 = 1;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

const FIVE_XX: u16 = 1;
const GATEWAY_ERROR: u16 = 1 << 1;
const RESET: u16 = 1 << 2;
const CONNECT_FAILURE: u16 = 1 << 3;
const REFUSED_STREAM: u16 = 1 << 4;
const RETRIABLE_4XX_BIT: u16 = 1 << 5;
const RESET_BEFORE_REQUEST: u16 = 1 << 6;
const RATELIMITED: u16 = 1 << 7;
const GRPC_CANCELLED: u16 = 1 << 8;
const GRPC_DEADLINE_EXCEEDED: u16 = 1 << 9;
const GRPC_INTERNAL: u16 = 1 << 10;
const GRPC_RESOURCE_EXHAUSTED: u16 = 1 << 11;
const GRPC_UNAVAILABLE: u16 = 1 << 12;
const ANY_GRPC: u16 =
    GRPC_CANCELLED | GRPC_DEADLINE_EXCEEDED | GRPC_INTERNAL | GRPC_RESOURCE_EXHAUSTED | GRPC_UNAVAILABLE;

/// Condition names and the bit each sets. `retriable-status-codes` sets none: the codes listed
/// beside it do the work. `retriable-headers` and `http3-post-connect-failure` are accepted and
/// never match (Istio cannot configure retriable headers; the proxy speaks no HTTP/3).
const NAMES: &[(&str, u16)] = &[
    ("5xx", FIVE_XX),
    ("gateway-error", GATEWAY_ERROR),
    ("reset", RESET),
    ("reset-before-request", RESET_BEFORE_REQUEST),
    ("connect-failure", CONNECT_FAILURE),
    ("refused-stream", REFUSED_STREAM),
    ("retriable-4xx", RETRIABLE_4XX_BIT),
    ("retriable-status-codes", 0),
    ("retriable-headers", 0),
    ("envoy-ratelimited", RATELIMITED),
    ("http3-post-connect-failure", 0),
    ("cancelled", GRPC_CANCELLED),
    ("deadline-exceeded", GRPC_DEADLINE_EXCEEDED),
    ("internal", GRPC_INTERNAL),
    ("resource-exhausted", GRPC_RESOURCE_EXHAUSTED),
    ("unavailable", GRPC_UNAVAILABLE),
];

/// Compiled `retryOn` conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    bits: u16,
    /// `retriable-status-codes`: bare codes in the list.
    codes: Vec<StatusCode>,
}

impl Conditions {
    /// Parses Envoy's condition names and status codes; an unknown one is an error naming it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut conditions = Conditions::default();
        for name in names {
            let name = name.as_ref().trim();
            if let Some((_, bit)) = NAMES.iter().find(|(n, _)| *n == name) {
                conditions.bits |= bit;
            } else if let Some(code) = name.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                conditions.codes.push(code);
            } else {
                return Err(format!("retryOn {name:?} is neither a retry condition nor an HTTP status code"));
            }
        }
        Ok(conditions)
    }

    /// Whether an attempt that ended with `response` (the upstream's, or the proxy's own after a
    /// failed exchange, carrying an [`UpstreamFailure`]) may be retried.
    pub fn retriable<B>(&self, response: &Response<B>) -> bool {
        let failure = UpstreamFailure::on(response);
        // The proxy's own refusals (no endpoint, overload, no certificate) are not upstream failures.
        if failure.is_none() && find_by_scan(response.headers(), &PROXY_ERROR).is_some() {
            return false;
        }
        self.matches(response.status(), response.headers(), failure)
    }

    /// The pure decision: status, response headers, and how the exchange failed if it did.
    pub fn matches(&self, status: StatusCode, headers: &HeaderMap, failure: Option<UpstreamFailure>) -> bool {
        let bits = self.bits;
        if let Some(failure) = failure {
            let by_kind = match failure {
                UpstreamFailure::Connect => CONNECT_FAILURE | RESET | RESET_BEFORE_REQUEST,
                UpstreamFailure::RefusedStream => REFUSED_STREAM | RESET | RESET_BEFORE_REQUEST,
                UpstreamFailure::Reset | UpstreamFailure::Timeout => RESET,
            };
            // A failed exchange had no response: only the failure conditions and 5xx/gateway-error
            // (Envoy counts failures as 5xx) apply, not the status codes of the proxy's own answer.
            return bits & (by_kind | FIVE_XX | GATEWAY_ERROR) != 0;
        }
        let code = status.as_u16();
        if bits & FIVE_XX != 0 && code >= 500 {
            return true;
        }
        if bits & GATEWAY_ERROR != 0 && matches!(code, 502..=504) {
            return true;
        }
        if bits & RETRIABLE_4XX_BIT != 0 && status == RETRIABLE_4XX {
            return true;
        }
        if bits & RATELIMITED != 0 && headers.contains_key(crate::ratelimit::RATELIMITED_HEADER) {
            return true;
        }
        if self.codes.contains(&status) {
            return true;
        }
        bits & ANY_GRPC != 0 && self.grpc_retriable(headers)
    }

    /// Whether a trailers-only gRPC response's `grpc-status` (in the head) is one the gRPC conditions name.
    fn grpc_retriable(&self, headers: &HeaderMap) -> bool {
        let Some(status) = headers.get(super::deadline::GRPC_STATUS).and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        else {
            return false;
        };
        let bit = match status {
            grpc::CANCELLED => GRPC_CANCELLED,
            grpc::DEADLINE_EXCEEDED => GRPC_DEADLINE_EXCEEDED,
            grpc::RESOURCE_EXHAUSTED => GRPC_RESOURCE_EXHAUSTED,
            grpc::INTERNAL => GRPC_INTERNAL,
            grpc::UNAVAILABLE => GRPC_UNAVAILABLE,
            _ => return false,
        };
        self.bits & bit != 0
    }
}
