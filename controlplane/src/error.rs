//! The control plane's errors: input that cannot become part of the index, and what the mesh CA
//! refuses or cannot do.

use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Invalid Istio policy is not an error here: it is kept in the index with its validation findings and
/// reported by translate as a [`crate::Skipped`] entry, so one bad object never stops the others.
#[derive(Debug, Error)]
pub enum Error {
    /// Text that is not valid YAML.
    #[error("{source_name}: line {line}: invalid YAML: {message}")]
    Yaml { source_name: String, line: usize, message: String },
    /// A Kubernetes object (Service, Pod, EndpointSlice, Namespace) that cannot be read.
    /// `object` reads `Kind namespace/name`.
    #[error("{source_name}: {object}: {field}: {message}")]
    Kubernetes { source_name: String, object: String, field: String, message: String },
    /// A document that is not an object with a kind and a name.
    #[error("{source_name}: line {line}: {message}")]
    Document { source_name: String, line: usize, message: String },
    /// The mesh CA cannot start or issue: its key material, storage or the Kubernetes API failed.
    /// `what` names the file, Secret or step.
    #[error("mesh CA: {what}: {message}")]
    Ca { what: String, message: String },
    /// A certificate request whose token is missing or not accepted (HTTP 401).
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// A certificate request that cannot be served as sent (HTTP 400); `what` names the part.
    #[error("{what}: {message}")]
    BadRequest { what: String, message: String },
}

impl Error {
    /// A [`Error::Ca`] about `what`.
    pub(crate) fn ca(what: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::Ca { what: what.into(), message: message.to_string() }
    }

    /// A [`Error::BadRequest`] about `what`.
    pub(crate) fn bad_request(what: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::BadRequest { what: what.into(), message: message.to_string() }
    }
}
