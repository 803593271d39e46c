//! `trellisd`, the Trellis control plane (like istiod): sources (Kubernetes watches or a folder of YAML)
//! feed one [`index::Index`]; the pure [`translate::translate`] function turns (index, proxy identity)
//! into a `ProxyConfig` (`trellis_api::proxy_config`), holding every Istio semantic the proxy does not
//! (scope and precedence, `exportTo`, host matching, subsets, the root namespace); push streams each
//! proxy its slice, versioned and acknowledged; the mesh CA issues workload certificates.
//!
//! Sources feed the index through [`index::Change`]s, built from Kubernetes objects
//! ([`index::kubernetes`]) or from YAML text ([`index::load`]); invalid Istio objects are kept in the index
//! with their errors so translate can name them and skip them. [`translated::TranslatedSource`] is what
//! the `trellisd` binary serves: translate over the shared index, as a push config source.
//! `docs/controlplane.md` lists the Istio rules translate implements and what is left.

pub mod ca;
mod error;
pub mod index;
pub mod jwks;
pub mod push;
pub mod sources;
pub mod translate;
pub mod translated;

pub use error::Error;
pub use index::{Change, Index};
pub use translate::{ProxyIdentity, Skipped, Translation, translate};
