use thiserror::Error;

/// Everything that can go wrong in the proxy library. The variant name doubles as a metric label.
#[derive(Debug, Error)]
pub enum Error {
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A `ProxyConfig` could not be read or was refused; the last good config stays in force.
    #[error("config {origin}: {message}")]
    Config { origin: String, message: String },
    /// A flag or environment variable has a bad value.
    #[error("invalid value for {flag}: {message}")]
    Flag { flag: &'static str, message: String },
    /// An HTTP exchange with an upstream failed; `context` says which and with whom.
    #[error("{context}: {source}")]
    Http { context: String, source: hyper::Error },
    /// An HTTP/2 exchange with an upstream failed; `context` says which and with whom.
    #[error("{context}: {source}")]
    H2 { context: String, source: h2::Error },
    /// A certificate, key or TLS setting is unusable; the message names which and why.
    #[error("tls: {0}")]
    Tls(String),
    /// An authorization policy could not be compiled; `message` names the field and why.
    #[error("policy {policy}: {message}")]
    Authorization { policy: String, message: String },
    /// Writing or reading interception rules failed.
    #[error("iptables: {0}")]
    Iptables(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
