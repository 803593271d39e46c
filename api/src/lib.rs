//! The Trellis API: the vocabulary every other Trellis component speaks.
//!
//! This crate owns the `Mesh` and `RateLimitPolicy` custom resources (group `trellis.dev`), the eight Istio-compatible policy
//! kinds served under Istio's own groups and field names (`networking.istio.io`, `security.istio.io`),
//! the validation that applies to them whether they come from the API server or from a folder of YAML,
//! the generation of their CustomResourceDefinitions, and the `ProxyConfig` model that is the contract
//! between the control plane and the proxy. It does no I/O beyond parsing text it is handed.

pub mod analyze;
pub mod ca;
mod cel;
pub mod crd;
pub mod crosscheck;
pub mod document;
pub mod duration;
mod error;
pub mod istio;
pub mod mesh;
pub mod object;
pub mod path;
pub mod ports;
pub mod proxy_config;
pub mod push;
pub mod rate_limit;
pub mod status;
pub mod support;
pub mod validate;

pub use error::Error;
pub use path::FieldPath;
pub use validate::{Issue, Issues, Severity, Validate};
