//! The Istio-compatible kinds, with Istio's groups, versions and field names.
//!
//! Each kind is one Rust struct whose schema is served under every version Istio serves it
//! (`networking.istio.io` v1alpha3, v1beta1, v1; `security.istio.io` v1beta1, v1), stored as v1.

pub mod authorization_policy;
pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod peer_authentication;
pub mod request_authentication;
pub mod service_entry;
pub mod virtual_service;
pub mod workload_entry;

pub use authorization_policy::{AuthorizationPolicy, AuthorizationPolicySpec};
pub use destination_rule::{DestinationRule, DestinationRuleSpec};
pub use gateway::{Gateway, GatewaySpec};
pub use peer_authentication::{PeerAuthentication, PeerAuthenticationSpec};
pub use request_authentication::{RequestAuthentication, RequestAuthenticationSpec};
pub use service_entry::{ServiceEntry, ServiceEntrySpec};
pub use virtual_service::{VirtualService, VirtualServiceSpec};
pub use workload_entry::{WorkloadEntry, WorkloadEntrySpec};
