//! `trellis-proxy wait`: blocks until the proxy beside it answers `200` on its readiness endpoint
//! (`GET /healthz/ready` on 15021), or fails after a timeout. The injector runs it as the `postStart`
//! hook of the proxy container when native sidecars are off: the kubelet starts the pod's next
//! container only once the hook returns, so the app starts after the proxy is ready (Istio's
//! `pilot-agent wait`). A failure exits non-zero, and the kubelet then kills and restarts the proxy
//! container.
//!
//! The core is pure (where to probe, how long to sleep before the next attempt); the probe itself is
//! one HTTP/1.1 request on a fresh connection, each bounded by [`REQUEST_TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;
use crate::settings::parse_duration;

/// The readiness path the sidecar serves (`crate::admin::readiness_router`) and the injector probes.
pub use trellis_api::ports::READINESS_PATH;
/// Where `wait` probes by default: the sidecar's readiness port (15021) on loopback, inside the pod.
pub const DEFAULT_WAIT_ADDR: &str = "127.0.0.1:15021";
/// Environment variable of `--readiness-addr`: the sidecar's own, so `wait` run in the proxy's
/// container probes the address the sidecar there serves (an unspecified IP is probed on loopback).
pub const READINESS_ADDR_ENV: &str = "TRELLIS_READINESS_ADDR";
/// Time between two attempts (Istio's `pilot-agent wait --periodMillis` default).
pub const DEFAULT_WAIT_PERIOD: &str = "500ms";
/// Environment variable of `--period`.
pub const WAIT_PERIOD_ENV: &str = "TRELLIS_WAIT_PERIOD";
/// How long to wait for readiness in all before failing (Istio's `--timeoutSeconds` default).
pub const DEFAULT_WAIT_TIMEOUT: &str = "60s";
/// Environment variable of `--timeout`.
pub const WAIT_TIMEOUT_ENV: &str = "TRELLIS_WAIT_TIMEOUT";
/// The longest one attempt (connect, request, response head) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Flags of `trellis-proxy wait`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// The proxy's readiness address (`--readiness-addr` of its `sidecar`); 0.0.0.0 or :: mean loopback.
    #[arg(long, env = READINESS_ADDR_ENV, default_value = DEFAULT_WAIT_ADDR, value_name = "ADDR")]
    pub readiness_addr: SocketAddr,
    /// Time between two attempts.
    #[arg(long, env = WAIT_PERIOD_ENV, default_value = DEFAULT_WAIT_PERIOD, value_parser = parse_duration)]
    pub period: Duration,
    /// Give up (and exit non-zero) when the proxy is not ready after this long.
    #[arg(long, env = WAIT_TIMEOUT_ENV, default_value = DEFAULT_WAIT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How a successful wait went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Requests made, the successful one included.
    pub attempts: u32,
    /// Time from the first attempt to the `200`.
    pub elapsed: Duration,
}

/// The address to connect to for `addr`: an unspecified IP (a listener's "all addresses") becomes
/// the loopback of its family.
pub fn probe_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

/// How long to sleep after a failed attempt at `now`: the period, cut short at the deadline; `None`
/// when the deadline has passed and no attempt is left.
pub fn next_sleep(now: Instant, deadline: Instant, period: Duration) -> Option<Duration> {
    let left = deadline.checked_duration_since(now).filter(|left| !left.is_zero())?;
    Some(period.min(left))
}

/// Probes `args.readiness_addr` every `args.period` until it answers 200, for `args.timeout` (and at
/// most one [`REQUEST_TIMEOUT`] more: the attempt under way at the deadline is finished). The error
/// names the URL, the time waited, the attempts and the last answer.
pub async fn wait(args: &WaitArgs) -> Result<Ready, Error> {
    if args.period.is_zero() {
        return Err(Error::Flag {
            flag: "--period",
            message: "must be more than 0 (it is the pause between attempts)".to_owned(),
        });
    }
    let target = probe_target(args.readiness_addr);
    let start = Instant::now();
    let deadline = start + args.timeout;
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        // Never cut short at the deadline: the last attempt's answer is the one the error reports.
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, probe(target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}", trellis_api::duration::format(REQUEST_TIMEOUT))),
        };
        let last = match outcome {
            Ok(()) => return Ok(Ready { attempts, elapsed: start.elapsed() }),
            Err(last) => last,
        };
        tracing::debug!(attempt = attempts, %last, "proxy not ready yet");
        match next_sleep(Instant::now(), deadline, args.period) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => {
                let message = format!(
                    "not ready after {} ({attempts} attempts, every {}; last: {last})",
                    trellis_api::duration::format(args.timeout),
                    trellis_api::duration::format(args.period),
                );
                return Err(Error::Io {
                    context: format!("waiting for the proxy at http://{target}{READINESS_PATH}"),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, message),
                });
            }
        }
    }
}

/// Runs [`wait`] on a small runtime of its own (the `wait` subcommand), saying how it went on stderr.
pub fn run(args: &WaitArgs) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the runtime"))?;
    let ready = runtime.block_on(wait(args))?;
    let elapsed_ms = u64::try_from(ready.elapsed.as_millis()).unwrap_or(u64::MAX);
    eprintln!(
        "trellis-proxy: ready at http://{}{READINESS_PATH} after {} ({} attempts)",
        probe_target(args.readiness_addr),
        trellis_api::duration::format(Duration::from_millis(elapsed_ms)),
        ready.attempts
    );
    Ok(())
}

/// One readiness request: `Ok` on 200, else what was seen.
async fn probe(target: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(target).await.map_err(|err| format!("connecting: {err}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::get(READINESS_PATH)
        .header(hyper::header::HOST, target.to_string())
        .header(hyper::header::USER_AGENT, "trellis-proxy-wait")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender.send_request(request).await.map_err(|err| err.to_string())?;
    match response.status() {
        hyper::StatusCode::OK => Ok(()),
        status => Err(format!("HTTP status {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_readiness_address_is_probed_on_loopback_and_others_as_given() {
        let probe = |text: &str| probe_target(text.parse().expect("an address")).to_string();
        assert_eq!(probe("0.0.0.0:15021"), "127.0.0.1:15021");
        assert_eq!(probe("[::]:15021"), "[::1]:15021");
        assert_eq!(probe("10.1.2.3:15021"), "10.1.2.3:15021");
        assert_eq!(probe("127.77.0.9:16021"), "127.77.0.9:16021");
    }

    #[test]
    fn the_pause_between_attempts_is_the_period_cut_short_at_the_deadline() {
        let now = Instant::now();
        let period = Duration::from_millis(500);
        assert_eq!(next_sleep(now, now + Duration::from_secs(60), period), Some(period));
        assert_eq!(next_sleep(now, now + Duration::from_millis(200), period), Some(Duration::from_millis(200)));
        assert_eq!(next_sleep(now, now, period), None);
        assert_eq!(next_sleep(now + Duration::from_secs(1), now, period), None);
    }
}
