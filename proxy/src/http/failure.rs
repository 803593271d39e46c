//! Why an upstream request ended without a response. The proxy's own error response carries the
//! reason as a response extension, so retries (`retryOn: connect-failure,reset,refused-stream`),
//! outlier detection (local-origin failures) and metrics tell a refused connection from a reset one
//! without parsing error text.

use http::Response;

use crate::Error;

/// How an exchange with an upstream failed before a response head arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection: refused, unreachable, timed out, or the TLS or HTTP/2 handshake failed.
    Connect,
    /// The connection or stream broke after it was made, before a complete response head.
    Reset,
    /// The upstream refused the HTTP/2 stream (`REFUSED_STREAM`) without processing the request.
    RefusedStream,
    /// The attempt's per-try timeout passed before a response head arrived.
    Timeout,
}

impl UpstreamFailure {
    /// The failure an error of the connection pools stands for: errors while connecting are
    /// connect failures, HTTP errors on an open connection are resets (HTTP/2 streams the upstream
    /// did not process apart; HTTP/1.1 has no such answer).
    pub fn of(err: &Error) -> Self {
        match err {
            Error::Http { .. } => Self::Reset,
            Error::H2 { source, .. } if unprocessed(source) => Self::RefusedStream,
            Error::H2 { .. } => Self::Reset,
            _ => Self::Connect,
        }
    }

    /// The failure recorded on a response, if the proxy made it after a failed exchange.
    pub fn on<B>(response: &Response<B>) -> Option<Self> {
        response.extensions().get::<Self>().copied()
    }
}

/// Whether an HTTP/2 stream error says the upstream did not process the request: its
/// `REFUSED_STREAM` reset, or a graceful `GOAWAY` whose last stream id came before the stream.
fn unprocessed(err: &h2::Error) -> bool {
    err.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (err.is_go_away() && err.is_remote() && err.reason() == Some(h2::Reason::NO_ERROR))
}
