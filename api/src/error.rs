use thiserror::Error;

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A duration string that is not of Go's `time.ParseDuration` form (`1s`, `3m`, `1h30m`, `250ms`).
    #[error("invalid duration {value:?}: {reason}")]
    Duration { value: String, reason: &'static str },
    /// Text that is not valid YAML.
    #[error("line {line}: invalid YAML: {message}")]
    Yaml { line: usize, message: String },
    /// A CRD could not be generated or serialised.
    #[error("cannot generate CRD for {kind}: {message}")]
    Crd { kind: &'static str, message: String },
    /// A config-push message that cannot be encoded or decoded, or a delta that does not apply to the
    /// config it names as its base.
    #[error("config push: {0}")]
    Push(String),
}
