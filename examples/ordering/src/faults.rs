//! Faults a request can ask inventory or shipping for, read from its query parameters, so resilience
//! demos (timeouts, retries, circuit breaking, outlier detection) have something to act on:
//!
//! - `delay_ms=N`: wait N milliseconds (at most [`MAX_DELAY_MS`]) before answering;
//! - `fail=1` (or `true`): answer with the failure status; `fail=0` turns every failure off;
//! - `status=S`: the failure status, 400 to 599 (default [`DEFAULT_FAILURE_STATUS`]); given alone, it
//!   makes every request fail with it;
//! - `fail_percent=P`: fail P percent of requests (0 to 100), at random.
//!
//! Other parameters are ignored; a parameter given twice counts once, with its last value. A delay also
//! applies to a request that then fails.

use std::time::Duration;

use http::StatusCode;
use thiserror::Error;

/// The longest delay a request may ask for, so a typo cannot park a connection for hours.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The status of an injected failure when `status` is not given.
pub const DEFAULT_FAILURE_STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// A fault parameter with a value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("query parameter `{name}`: expected {expected}, got `{value}`")]
pub struct FaultError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// What a request asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    pub delay: Option<Duration>,
    pub failure: Option<Failure>,
}

/// An injected failure: answer `status` for `percent` percent of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    /// 1 to 100.
    pub percent: u8,
}

impl Faults {
    /// Reads the fault parameters of a raw query string (without the `?`).
    pub fn parse(query: &str) -> Result<Self, FaultError> {
        let (mut delay, mut fail, mut status, mut percent) = (None, None, None, None);
        for (name, value) in query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))) {
            match name {
                "delay_ms" => delay = Some(parse_delay(value)?),
                "fail" => fail = Some(parse_flag(value)?),
                "status" => status = Some(parse_status(value)?),
                "fail_percent" => percent = Some(parse_percent(value)?),
                _ => {}
            }
        }
        let percent = match (fail, percent, status) {
            (Some(true), _, _) => 100,
            (Some(false), _, _) => 0,
            (None, Some(percent), _) => percent,
            (None, None, Some(_)) => 100,
            (None, None, None) => 0,
        };
        let status = status.unwrap_or(DEFAULT_FAILURE_STATUS);
        let failure = (percent > 0).then_some(Failure { status, percent });
        Ok(Faults { delay: delay.filter(|d| !d.is_zero()), failure })
    }

    /// The status to fail with for a request whose random roll (0 to 99) is `roll`, if it fails.
    pub fn failure_for(&self, roll: u8) -> Option<StatusCode> {
        self.failure.filter(|f| roll < f.percent).map(|f| f.status)
    }
}

fn parse_delay(value: &str) -> Result<Duration, FaultError> {
    let error = || FaultError {
        name: "delay_ms",
        value: value.to_owned(),
        expected: "a whole number of milliseconds from 0 to 60000",
    };
    let ms: u64 = value.parse().map_err(|_| error())?;
    if ms > MAX_DELAY_MS {
        return Err(error());
    }
    Ok(Duration::from_millis(ms))
}

fn parse_flag(value: &str) -> Result<bool, FaultError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(FaultError { name: "fail", value: value.to_owned(), expected: "1, true, 0 or false" }),
    }
}

fn parse_status(value: &str) -> Result<StatusCode, FaultError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|code| (400..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| FaultError {
            name: "status",
            value: value.to_owned(),
            expected: "an HTTP status from 400 to 599",
        })
}

fn parse_percent(value: &str) -> Result<u8, FaultError> {
    value.parse::<u8>().ok().filter(|p| *p <= 100).ok_or_else(|| FaultError {
        name: "fail_percent",
        value: value.to_owned(),
        expected: "a whole number from 0 to 100",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_parameters_mean_no_faults() {
        assert_eq!(Faults::parse("").expect("valid"), Faults::default());
        assert_eq!(Faults::parse("item=book&delay_ms=0").expect("valid"), Faults::default());
    }

    #[test]
    fn a_delay_is_read_in_milliseconds_and_capped() {
        let faults = Faults::parse("delay_ms=250").expect("valid");
        assert_eq!(faults.delay, Some(Duration::from_millis(250)));
        assert_eq!(faults.failure, None);
        let err = Faults::parse("delay_ms=60001").expect_err("over the cap");
        assert_eq!(err.name, "delay_ms");
        assert!(Faults::parse("delay_ms=-5").is_err());
        assert!(Faults::parse("delay_ms=1.5").is_err());
    }

    #[test]
    fn fail_answers_503_unless_a_status_is_given() {
        let faults = Faults::parse("fail=1").expect("valid");
        assert_eq!(faults.failure_for(99), Some(StatusCode::SERVICE_UNAVAILABLE));
        let faults = Faults::parse("fail=true&status=500").expect("valid");
        assert_eq!(faults.failure_for(0), Some(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn a_status_alone_fails_every_request_with_it() {
        let faults = Faults::parse("status=429").expect("valid");
        assert_eq!(faults.failure, Some(Failure { status: StatusCode::TOO_MANY_REQUESTS, percent: 100 }));
    }

    #[test]
    fn fail_zero_turns_failures_off() {
        assert_eq!(Faults::parse("status=500&fail=0").expect("valid").failure, None);
        assert_eq!(Faults::parse("fail_percent=50&fail=false").expect("valid").failure, None);
    }

    #[test]
    fn fail_percent_fails_only_rolls_below_it() {
        let faults = Faults::parse("fail_percent=30&status=502").expect("valid");
        assert_eq!(faults.failure_for(29), Some(StatusCode::BAD_GATEWAY));
        assert_eq!(faults.failure_for(30), None);
        assert_eq!(Faults::parse("fail_percent=0").expect("valid").failure, None);
        assert_eq!(
            Faults::parse("fail_percent=100").expect("valid").failure_for(99),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (query, name) in [
            ("fail=yes", "fail"),
            ("status=200", "status"),
            ("status=abc", "status"),
            ("fail_percent=101", "fail_percent"),
        ] {
            let err = Faults::parse(query).expect_err(query);
            assert_eq!(err.name, name, "{query}");
            assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
        }
    }

    #[test]
    fn the_last_value_of_a_repeated_parameter_counts() {
        assert_eq!(Faults::parse("delay_ms=5&delay_ms=7").expect("valid").delay, Some(Duration::from_millis(7)));
    }
}
