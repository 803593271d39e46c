//! Sidecar injection: a pure `inject` function that adds the `trellis-proxy` sidecar and the
//! `trellis-init` iptables container to a pod of a labelled namespace (as typed JSON-patch
//! operations, so the webhook and `trellis inject` cannot drift), and the HTTPS admission webhook
//! that serves it (`AdmissionReview` v1 on `/inject`, `/healthz`, `/metrics`), with its serving
//! certificate reloaded from files when they change.

mod error;
pub mod inject;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;

pub use error::Error;
pub use inject::{Decision, Injection, Namespace, Skip, inject};
