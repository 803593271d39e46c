//! The Trellis operator: reconciles a `Mesh` (`trellis_api::mesh::Mesh`) by rolling out the control
//! plane, the gateways, the webhook configuration and the CA secret, and writing `status.conditions`.
//! Built in milestone 2; this crate holds no code yet.
