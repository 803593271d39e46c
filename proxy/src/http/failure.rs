//! Why an upstream request ended without a response. The proxy's own error response carries the
//! reason as a response extension, so retries (`retryOn: connect-failure,reset`), outlier detection
//! (local-origin failures) and metrics tell a refused connection from a reset one without parsing
//! error text.

use http::Response;

use crate::Error;

/// How an exchange with an upstream failed before a response head arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection: refused, unreachable, timed out, or the TLS or HTTP/2 handshake failed.
    Connect,
    /// The connection or stream broke after it was made, before a complete response head.
    Reset,
}

impl UpstreamFailure {
    /// The failure an error of the connection pools stands for: errors while connecting are
    /// connect failures, HTTP errors on an open connection are resets.
    pub fn of(err: &Error) -> Self {
        match err {
            Error::Http { .. } => Self::Reset,
            _ => Self::Connect,
        }
    }

    /// The failure of an error of hyper's pooled HTTP/1 client.
    pub fn of_client(err: &hyper_util::client::legacy::Error) -> Self {
        if err.is_connect() { Self::Connect } else { Self::Reset }
    }

    /// The failure recorded on a response, if the proxy made it after a failed exchange.
    pub fn on<B>(response: &Response<B>) -> Option<Self> {
        response.extensions().get::<Self>().copied()
    }
}
