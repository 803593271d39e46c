use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use trellis_api::proxy_config::RetryBudget;

use super::backoff::{Backoff, DEFAULT_BASE, MAX_FACTOR};
use super::budget::{RetryLimits, UNLIMITED_RETRIES, budget_cap};
use super::condition::Conditions;
use super::deadline::{format_grpc_timeout, parse_grpc_timeout};
use super::*;
use crate::http::{PROXY_ERROR_HEADER, UpstreamFailure, local_response};

fn conditions(names: &[&str]) -> Conditions {
    Conditions::parse(names).expect("valid conditions")
}

fn grpc(status: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from_str(status).expect("value"));
    headers
}

fn failed(failure: UpstreamFailure) -> Response<crate::http::Body> {
    let mut response = local_response(StatusCode::SERVICE_UNAVAILABLE, "upstream connect error or disconnect");
    response.extensions_mut().insert(failure);
    response
}

#[test]
fn five_xx_retries_every_server_error_and_every_failed_exchange() {
    let c = conditions(&["5xx"]);
    let none = HeaderMap::new();
    for code in [500, 501, 502, 503, 504, 599] {
        assert!(c.matches(StatusCode::from_u16(code).expect("code"), &none, None), "{code}");
    }
    assert!(!c.matches(StatusCode::CONFLICT, &none, None));
    assert!(!c.matches(StatusCode::OK, &none, None));
    for failure in [UpstreamFailure::Connect, UpstreamFailure::Reset, UpstreamFailure::RefusedStream] {
        assert!(c.retriable(&failed(failure)), "{failure:?}");
    }
}

#[test]
fn gateway_error_retries_only_502_503_and_504() {
    let c = conditions(&["gateway-error"]);
    let none = HeaderMap::new();
    assert!(!c.matches(StatusCode::INTERNAL_SERVER_ERROR, &none, None));
    for code in [502, 503, 504] {
        assert!(c.matches(StatusCode::from_u16(code).expect("code"), &none, None));
    }
    assert!(c.retriable(&deadline::attempt_timed_out()), "a per-try timeout is a gateway error");
}

#[test]
fn failures_match_their_own_conditions_and_not_the_status_codes_of_the_proxys_answer() {
    let connect = conditions(&["connect-failure"]);
    assert!(connect.retriable(&failed(UpstreamFailure::Connect)));
    assert!(!connect.retriable(&failed(UpstreamFailure::Reset)));
    let refused = conditions(&["refused-stream"]);
    assert!(refused.retriable(&failed(UpstreamFailure::RefusedStream)));
    assert!(!refused.retriable(&failed(UpstreamFailure::Reset)));
    let reset = conditions(&["reset"]);
    for failure in [UpstreamFailure::Connect, UpstreamFailure::Reset, UpstreamFailure::Timeout] {
        assert!(reset.matches(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), Some(failure)), "{failure:?}");
    }
    // Istio's default lists 503, but a reset is not a 503 from the upstream.
    let istio_default = conditions(&["connect-failure", "refused-stream", "unavailable", "cancelled", "503"]);
    assert!(!istio_default.retriable(&failed(UpstreamFailure::Reset)));
    assert!(istio_default.retriable(&failed(UpstreamFailure::Connect)));
    assert!(istio_default.matches(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), None));
    assert!(!istio_default.matches(StatusCode::BAD_GATEWAY, &HeaderMap::new(), None));
}

#[test]
fn the_proxys_own_refusals_are_never_retried() {
    let c = conditions(&["5xx", "gateway-error", "reset", "connect-failure"]);
    let no_endpoint = local_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    assert!(no_endpoint.headers().contains_key(PROXY_ERROR_HEADER));
    assert!(!c.retriable(&no_endpoint));
}

#[test]
fn retriable_4xx_is_409_and_listed_codes_retry_exactly_themselves() {
    let c = conditions(&["retriable-4xx", "retriable-status-codes", "429", "418"]);
    let none = HeaderMap::new();
    assert!(c.matches(StatusCode::CONFLICT, &none, None));
    assert!(c.matches(StatusCode::TOO_MANY_REQUESTS, &none, None));
    assert!(c.matches(StatusCode::IM_A_TEAPOT, &none, None));
    assert!(!c.matches(StatusCode::NOT_FOUND, &none, None));
    assert!(!c.matches(StatusCode::SERVICE_UNAVAILABLE, &none, None));
}

#[test]
fn grpc_conditions_read_the_status_of_a_trailers_only_response() {
    let c = conditions(&["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"]);
    for status in ["1", "4", "8", "13", "14"] {
        assert!(c.matches(StatusCode::OK, &grpc(status), None), "grpc-status {status}");
    }
    for status in ["0", "2", "3", "5", "7", "16", "x"] {
        assert!(!c.matches(StatusCode::OK, &grpc(status), None), "grpc-status {status}");
    }
    let only_unavailable = conditions(&["unavailable"]);
    assert!(only_unavailable.matches(StatusCode::OK, &grpc("14"), None));
    assert!(!only_unavailable.matches(StatusCode::OK, &grpc("13"), None));
    assert!(!only_unavailable.matches(StatusCode::OK, &HeaderMap::new(), None));
}

#[test]
fn an_unknown_condition_is_refused_with_its_name() {
    let err = Conditions::parse(&["5xx", "sometimes"]).expect_err("unknown condition");
    assert!(err.contains("\"sometimes\""), "{err}");
    assert!(Conditions::parse(&["reset-before-request", "retriable-headers", "envoy-ratelimited"]).is_ok());
}

#[test]
fn backoff_grows_exponentially_with_full_jitter_and_caps_at_ten_times_the_base() {
    let b = Backoff::default();
    assert_eq!(b.ceiling(1), DEFAULT_BASE);
    assert_eq!(b.ceiling(2), DEFAULT_BASE * 3);
    assert_eq!(b.ceiling(3), DEFAULT_BASE * 7);
    assert_eq!(b.ceiling(4), DEFAULT_BASE * MAX_FACTOR, "15 x base is capped");
    assert_eq!(b.ceiling(40), DEFAULT_BASE * MAX_FACTOR);
    assert_eq!(b.delay(3, 0.0), Duration::ZERO, "full jitter starts at zero");
    assert!(b.delay(3, 0.999_999) < b.ceiling(3));
    for _ in 0..1000 {
        let delay = b.delay(2, fastrand::f64());
        assert!(delay < DEFAULT_BASE * 3, "{delay:?}");
    }
    let custom = Backoff::new(Some(Duration::from_millis(100)));
    assert_eq!(custom.ceiling(1), Duration::from_millis(100));
    assert_eq!(custom.ceiling(9), Duration::from_secs(1));
}

#[test]
fn a_budget_allows_its_percent_of_active_requests_but_never_fewer_than_its_minimum() {
    let budget = RetryBudget { percent: 20.0, min_retry_concurrency: 3 };
    assert_eq!(budget_cap(&budget, 0), 3);
    assert_eq!(budget_cap(&budget, 10), 3);
    assert_eq!(budget_cap(&budget, 20), 4);
    assert_eq!(budget_cap(&budget, 1000), 200);
    assert_eq!(budget_cap(&budget, 24), 4, "rounded down");
    let none = RetryBudget { percent: 0.0, min_retry_concurrency: 0 };
    assert_eq!(budget_cap(&none, 1000), 0);
    let all = RetryBudget { percent: 100.0, min_retry_concurrency: 0 };
    assert_eq!(budget_cap(&all, u32::MAX), u32::MAX);
}

#[test]
fn retry_permits_stop_at_the_cap_and_come_back_when_dropped() {
    let limits = RetryLimits::with(UNLIMITED_RETRIES, Some(RetryBudget { percent: 50.0, min_retry_concurrency: 1 }));
    let requests: Vec<_> = (0..4).map(|_| limits.request()).collect();
    assert_eq!(limits.cap(), 2);
    let first = limits.try_retry().expect("first retry");
    let second = limits.try_retry().expect("second retry");
    assert!(limits.try_retry().is_none(), "50% of 4 active requests is 2 retries");
    drop(first);
    let third = limits.try_retry().expect("a permit came back");
    drop((second, third));
    assert_eq!(limits.active_retries(), 0);
    drop(requests);
    assert_eq!(limits.cap(), 1, "the minimum once nothing is active");
}

#[test]
fn max_retries_caps_retries_when_there_is_no_budget() {
    let limits = RetryLimits::with(1, None);
    let held = limits.try_retry().expect("one retry");
    assert!(limits.try_retry().is_none());
    drop(held);
    assert!(limits.try_retry().is_some());
    let zero = RetryLimits::with(0, None);
    assert!(zero.try_retry().is_none(), "maxRetries 0 allows none");
}

#[test]
fn grpc_timeouts_parse_in_every_unit_and_refuse_malformed_values() {
    assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
    assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
    assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
    assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
    assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
    for bad in [&b""[..], b"m", b"10", b"10x", b"-1S", b"123456789S", b"1.5S"] {
        assert_eq!(parse_grpc_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn a_propagated_grpc_timeout_rounds_up_and_round_trips() {
    for left in [
        Duration::from_nanos(1),
        Duration::from_millis(1500),
        Duration::from_secs(7200),
        Duration::from_secs(86_400 * 365),
    ] {
        let value = format_grpc_timeout(left);
        let parsed = parse_grpc_timeout(value.as_bytes()).expect("parses");
        assert!(parsed >= left, "{value:?} for {left:?}");
        assert!(value.len() <= 9, "{value:?}");
    }
    assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500000u");
    assert_eq!(format_grpc_timeout(Duration::ZERO), "0n");
}

#[test]
fn a_timed_out_grpc_request_gets_deadline_exceeded_trailers_only() {
    let response = deadline::timed_out(true);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let plain = deadline::timed_out(false);
    assert_eq!(plain.status(), StatusCode::GATEWAY_TIMEOUT);
}

/// A body of the given chunks, of unknown size.
type Chunks = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>>;

fn chunks(parts: &[&'static [u8]]) -> Chunks {
    let frames: Vec<_> = parts.iter().map(|p| Ok(http_body::Frame::data(Bytes::from_static(p)))).collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test]
async fn a_small_body_streams_to_the_first_attempt_and_replays_whole_to_the_next() {
    let (replay, first) = Replay::new(chunks(&[b"hello ", b"retried ", b"world"])).expect("replayable");
    let sent = first.collect().await.expect("first attempt").to_bytes();
    assert_eq!(sent, "hello retried world");
    let again = replay.next().expect("replay").collect().await.expect("second attempt").to_bytes();
    assert_eq!(again, "hello retried world");
    let third = replay.next().expect("replay again").collect().await.expect("third attempt").to_bytes();
    assert_eq!(third, "hello retried world");
}

#[tokio::test]
async fn a_body_dropped_half_read_replays_what_was_read_then_the_rest() {
    let (replay, mut first) = Replay::new(chunks(&[b"one,", b"two,", b"three"])).expect("replayable");
    let frame = first.frame().await.expect("frame").expect("ok");
    assert_eq!(frame.into_data().expect("data"), "one,");
    drop(first);
    let again = replay.next().expect("replay").collect().await.expect("second attempt").to_bytes();
    assert_eq!(again, "one,two,three");
}

#[tokio::test]
async fn a_body_over_the_bound_streams_whole_and_cannot_be_replayed() {
    static BIG: [u8; MAX_REPLAY_BYTES] = [7; MAX_REPLAY_BYTES];
    let (replay, first) = Replay::new(chunks(&[&BIG, b"one byte too many"])).expect("size unknown up front");
    let sent = first.collect().await.expect("first attempt").to_bytes();
    assert_eq!(sent.len(), MAX_REPLAY_BYTES + 17);
    assert!(replay.next().is_none());
    let announced = Full::new(Bytes::from(vec![0u8; MAX_REPLAY_BYTES + 1]));
    assert!(Replay::new(announced).is_err(), "an announced size over the bound is not wrapped");
}

#[tokio::test]
async fn trailers_are_kept_and_replayed() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = vec![
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"payload"))),
        Ok(http_body::Frame::trailers(trailers.clone())),
    ];
    let (replay, first) = Replay::new(StreamBody::new(futures_util::stream::iter(frames))).expect("replayable");
    let collected = first.collect().await.expect("first");
    assert_eq!(collected.trailers(), Some(&trailers));
    let again = replay.next().expect("replay").collect().await.expect("second");
    assert_eq!(again.trailers(), Some(&trailers));
    assert_eq!(again.to_bytes(), "payload");
}

#[test]
fn a_retry_prefers_an_endpoint_not_tried_yet() {
    use trellis_api::proxy_config::{Endpoint, LoadBalancer};
    let endpoint = |port| Endpoint {
        address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        labels: Default::default(),
        identity: String::new(),
        weight: 1,
        meshed: false,
    };
    let balancer = Balancer::new(&LoadBalancer::Random, &[endpoint(1), endpoint(2), endpoint(3)]);
    for _ in 0..200 {
        let mut tried = Tried::avoiding(true);
        let picks: Vec<_> = (0..3).map(|_| tried.pick(&balancer, None).expect("pick").addr).collect();
        let mut distinct = picks.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{picks:?}");
        assert_eq!(tried.endpoints().collect::<Vec<_>>(), picks);
        assert!(tried.pick(&balancer, None).is_some(), "every endpoint tried: any one again");
    }
}
