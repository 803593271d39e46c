//! Fault injection (VirtualService `fault`): a fixed delay and an abort, each for a share of requests,
//! decided per request from a route's compiled [`Faults`]. Deciding is pure (the caller passes the
//! random draws), so shares are tested without sockets; answering is Envoy's: an HTTP abort is a local
//! reply with the status and body `fault filter abort`, a gRPC abort a trailers-only gRPC response
//! with `grpc-status`. Injected faults are counted in `trellis_faults_injected_total{kind}`; an abort
//! carries the response flag `FI` to the access log.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use trellis_api::proxy_config::{Fault, GRPC_STATUS_NAMES};

use super::{Body, full};
use crate::access_log;
use crate::metrics::ResponseFlag;

/// Body of an aborted request, as Envoy's fault filter writes it.
pub const ABORT_BODY: &str = "fault filter abort";
/// Draws are in millionths: a percentage of 0.0001 still counts.
pub const SHARE_SCALE: u32 = 1_000_000;

/// A route's faults, ready to use.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    delay: Option<(Duration, u32)>,
    abort: Option<(Abort, u32)>,
}

/// What an abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status code (0-16).
    Grpc(u8),
}

/// The faults one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
}

impl Faults {
    /// Compiles a route's `fault`; an unknown status is an error naming it.
    pub fn compile(fault: &Fault) -> Result<Self, String> {
        let share = share_of;
        let delay = fault.delay.as_ref().map(|d| (d.fixed_delay, share(d.percentage)));
        let abort = match &fault.abort {
            None => None,
            Some(abort) => {
                let answer =
                    match (abort.http_status, abort.grpc_status.as_deref()) {
                        (_, Some(grpc)) => Abort::Grpc(grpc_code(grpc).ok_or_else(|| {
                            format!("fault.abort.grpcStatus {grpc:?} is not a gRPC status name or code")
                        })?),
                        (Some(status), None) => Abort::Http(
                            StatusCode::from_u16(status)
                                .map_err(|_| format!("fault.abort.httpStatus {status} is not an HTTP status"))?,
                        ),
                        (None, None) => return Err("fault.abort has neither httpStatus nor grpcStatus".to_owned()),
                    };
                Some((answer, share(abort.percentage)))
            }
        };
        Ok(Self { delay, abort })
    }

    /// The faults for a request given two uniform draws in `0..SHARE_SCALE`, one per fault.
    pub fn decide(&self, delay_draw: u32, abort_draw: u32) -> Injected {
        Injected {
            delay: self.delay.filter(|(_, share)| delay_draw < *share).map(|(delay, _)| delay),
            abort: self.abort.filter(|(_, share)| abort_draw < *share).map(|(abort, _)| abort),
        }
    }

    /// [`Faults::decide`] with random draws.
    pub fn draw(&self) -> Injected {
        self.decide(fastrand::u32(..SHARE_SCALE), fastrand::u32(..SHARE_SCALE))
    }
}

impl Abort {
    /// The local reply of an aborted request.
    pub fn response(self) -> Response<Body> {
        match self {
            Abort::Http(status) => {
                let mut response = Response::new(full(ABORT_BODY));
                *response.status_mut() = status;
                response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                access_log::flag(&mut response, ResponseFlag::FI, access_log::details::FAULT_ABORT);
                response
            }
            Abort::Grpc(code) => {
                // Trailers-only: the status travels in the headers of an empty 200 response.
                let mut response = Response::new(full(Vec::new()));
                let headers = response.headers_mut();
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
                headers.insert("grpc-message", HeaderValue::from_static(ABORT_BODY));
                access_log::flag(&mut response, ResponseFlag::FI, access_log::details::FAULT_ABORT);
                response
            }
        }
    }

    /// The status a metric records for it.
    pub fn status(self) -> u16 {
        match self {
            Abort::Http(status) => status.as_u16(),
            Abort::Grpc(_) => StatusCode::OK.as_u16(),
        }
    }
}

/// A percentage (0-100, clamped) as a share in millionths, compared with draws in `0..SHARE_SCALE`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn share_of(percentage: f64) -> u32 {
    // Clamped to 0..=100 percent, so the product is within 0..=SHARE_SCALE.
    (percentage.clamp(0.0, 100.0) / 100.0 * f64::from(SHARE_SCALE)).round() as u32
}

/// The code of a gRPC status given by name (`UNAVAILABLE`, any case) or number.
pub fn grpc_code(text: &str) -> Option<u8> {
    let text = text.trim();
    if let Ok(code) = text.parse::<u8>() {
        return (usize::from(code) < GRPC_STATUS_NAMES.len()).then_some(code);
    }
    GRPC_STATUS_NAMES.iter().position(|name| name.eq_ignore_ascii_case(text)).and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use trellis_api::proxy_config::{FaultAbort, FaultDelay};

    use super::*;

    fn fault(delay: Option<f64>, abort: Option<(Option<u16>, Option<&str>, f64)>) -> Fault {
        Fault {
            delay: delay.map(|percentage| FaultDelay { fixed_delay: Duration::from_secs(2), percentage }),
            abort: abort.map(|(http_status, grpc, percentage)| FaultAbort {
                http_status,
                grpc_status: grpc.map(str::to_owned),
                percentage,
            }),
        }
    }

    #[test]
    fn a_share_of_requests_gets_each_fault_by_its_own_draw() {
        let faults = Faults::compile(&fault(Some(50.0), Some((Some(503), None, 10.0)))).expect("valid");
        let half = SHARE_SCALE / 2;
        let tenth = SHARE_SCALE / 10;
        assert_eq!(faults.decide(half - 1, tenth).delay, Some(Duration::from_secs(2)));
        assert_eq!(faults.decide(half, tenth).delay, None);
        assert_eq!(faults.decide(0, tenth - 1).abort, Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE)));
        assert_eq!(faults.decide(0, tenth).abort, None);
        let none = Faults::compile(&fault(Some(0.0), Some((Some(500), None, 0.0)))).expect("valid");
        assert_eq!(none.decide(0, 0), Injected::default(), "0% never fires");
        let all = Faults::compile(&fault(Some(100.0), None)).expect("valid");
        assert!(all.decide(SHARE_SCALE - 1, 0).delay.is_some(), "100% always fires");
    }

    #[test]
    fn grpc_statuses_are_read_by_name_or_number_and_unknown_ones_are_refused() {
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("unavailable"), Some(14));
        assert_eq!(grpc_code("4"), Some(4));
        assert_eq!(grpc_code("17"), None);
        assert_eq!(grpc_code("NOPE"), None);
        let err = Faults::compile(&fault(None, Some((None, Some("NOPE"), 10.0)))).expect_err("unknown");
        assert!(err.contains("grpcStatus \"NOPE\""), "{err}");
        let err = Faults::compile(&fault(None, Some((Some(42), None, 10.0)))).expect_err("not a status");
        assert!(err.contains("httpStatus 42"), "{err}");
    }

    #[test]
    fn a_grpc_abort_is_a_trailers_only_response_with_the_status() {
        let response = Abort::Grpc(14).response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let response = Abort::Http(StatusCode::SERVICE_UNAVAILABLE).response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
