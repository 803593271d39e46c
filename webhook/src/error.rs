//! The crate's one error type: what can go wrong deciding an injection and serving the webhook.

use std::path::PathBuf;

/// Why an injection could not be decided, or the webhook server could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod itself cannot be injected as written (named field and reason).
    #[error("pod {pod}: {field}: {reason}")]
    InvalidPod { pod: String, field: String, reason: String },
    /// An injection annotation has a value that cannot be used.
    #[error("pod {pod}: annotation {key}={value:?}: {reason}")]
    Annotation { pod: String, key: String, value: String, reason: String },
    /// A JSON value could not be built or read.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}
