//! Request deadlines: the route's `timeout` capped by a gRPC client's `grpc-timeout`, the value of
//! `grpc-timeout` sent upstream (the time left), and the answers when time runs out: Envoy's 504
//! `upstream request timeout`, or for gRPC a trailers-only `DEADLINE_EXCEEDED`.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::access_log;
use crate::http::headers::find_by_scan;
use crate::http::{Body, PROXY_ERROR, UpstreamFailure, full, local_response};
use crate::metrics::ResponseFlag;

/// The gRPC deadline header.
pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
/// The gRPC status header (in trailers, or in the head of a trailers-only response).
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
/// The gRPC status message header.
pub const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
/// gRPC's `DEADLINE_EXCEEDED` status code.
pub const GRPC_DEADLINE_EXCEEDED: &str = "4";
/// What a timed-out request is told (Envoy's words).
pub const TIMEOUT_MESSAGE: &str = "upstream request timeout";
/// The same, percent-encoded for `grpc-message`.
const TIMEOUT_GRPC_MESSAGE: &str = "upstream%20request%20timeout";
/// gRPC allows at most 8 digits in a `grpc-timeout` value.
const GRPC_TIMEOUT_MAX_DIGITS: usize = 8;
/// The largest value 8 digits hold.
const GRPC_TIMEOUT_MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > GRPC_TIMEOUT_MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.checked_mul(3600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `left`, in the finest unit whose 8 digits hold it (rounded up, so a
/// server never sees a zero deadline while time is left).
pub fn format_grpc_timeout(left: Duration) -> HeaderValue {
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = left.as_nanos();
    for (per, unit) in units {
        let amount = nanos.div_ceil(per);
        if amount <= u128::from(GRPC_TIMEOUT_MAX_VALUE) {
            return HeaderValue::from_str(&format!("{amount}{unit}")).unwrap_or(HeaderValue::from_static("1n"));
        }
    }
    HeaderValue::from_static("99999999H")
}

/// The deadline a client asks for in `grpc-timeout`, if it asks for one (most requests have none:
/// looked for along the names, [`find_by_scan`]).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(find_by_scan(headers, &GRPC_TIMEOUT)?.as_bytes())
}

/// Whether a request is gRPC (its content type is `application/grpc` or a `+suffix` of it).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The route timeout's answer: 504 `upstream request timeout`, or for gRPC a trailers-only response
/// with `grpc-status: 4` (`DEADLINE_EXCEEDED`).
pub fn timed_out(grpc: bool) -> Response<Body> {
    if !grpc {
        let mut response = local_response(StatusCode::GATEWAY_TIMEOUT, TIMEOUT_MESSAGE);
        access_log::flag(&mut response, ResponseFlag::UT, access_log::details::RESPONSE_TIMEOUT);
        return response;
    }
    let mut response = Response::new(full(bytes::Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from_static(GRPC_DEADLINE_EXCEEDED));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(TIMEOUT_GRPC_MESSAGE));
    headers.insert(PROXY_ERROR, HeaderValue::from_static(TIMEOUT_MESSAGE));
    access_log::flag(&mut response, ResponseFlag::UT, access_log::details::RESPONSE_TIMEOUT);
    response
}

/// A per-try timeout's answer to the retry loop: 504 marked as a timed-out exchange, so `5xx`,
/// `gateway-error` and `reset` retry it as Envoy does.
pub fn attempt_timed_out() -> Response<Body> {
    let mut response = local_response(StatusCode::GATEWAY_TIMEOUT, TIMEOUT_MESSAGE);
    response.extensions_mut().insert(UpstreamFailure::Timeout);
    response
}
