//! The control plane's errors: input that cannot become part of the index.

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
}
