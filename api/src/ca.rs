//! The certificate protocol between `trellis-proxy` and the mesh CA in `trellisd`: a proxy sends a
//! certificate signing request for a key it made, authenticated by a bearer token, and gets back a
//! workload certificate and the mesh's trust bundle.
//!
//! `POST` [`CERTIFICATES_PATH`] on the push port (15012), `content-type: application/json`, header
//! `Authorization: Bearer <token>`, body a [`CertificateRequest`]. `200` carries a
//! [`CertificateResponse`]; a refusal carries an [`ErrorResponse`] with `400` (the request is malformed),
//! `401` (the token is missing or not accepted), `404` (this `trellisd` runs no CA) or `500`. The token is
//! a Kubernetes ServiceAccount token projected with audience [`AUDIENCE`] (checked with the TokenReview
//! API), or in local mode the workload's bootstrap token written by `trellis run`. The CA ignores every
//! name in the CSR: the certificate's only SAN is the URI `spiffe://<trustDomain>/ns/<ns>/sa/<sa>` of
//! the authenticated caller. `docs/ca.md` describes the protocol for people.

use serde::{Deserialize, Serialize};

/// Path of certificate requests: `POST`, JSON both ways.
pub const CERTIFICATES_PATH: &str = "/v1/certificates";
/// Audience of the ServiceAccount tokens the CA accepts (and of the projected token the injector mounts).
pub const AUDIENCE: &str = "trellis-ca";
/// Where an injected pod's projected ServiceAccount token (audience [`AUDIENCE`]) is mounted.
pub const KUBERNETES_TOKEN_PATH: &str = "/var/run/secrets/tokens/trellis-ca";
/// Content type of requests and responses.
pub const CONTENT_TYPE: &str = "application/json";
/// Largest request body the CA reads (a CSR is well under 2 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A proxy's request for a workload certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRequest {
    /// PKCS#10 certificate signing request, PEM (`-----BEGIN CERTIFICATE REQUEST-----`). Its subject
    /// and names are ignored; only its public key and signature matter.
    pub csr: String,
    /// Lifetime asked for, in seconds; the CA grants at most its own maximum (24 h by default), which
    /// is also what it grants when this is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The CA's answer: the signed certificate and what to trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    /// PEM certificates, the workload's certificate first, then any intermediates up to (not
    /// including) a root.
    pub certificate_chain: String,
    /// PEM root certificates of the mesh: peers' chains must end at one of these.
    pub trust_bundle: String,
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What was wrong, for people.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_camel_case_and_refuses_unknown_fields() {
        let request: CertificateRequest =
            serde_json::from_str(r#"{"csr": "PEM", "ttlSeconds": 60}"#).expect("a request");
        assert_eq!(request, CertificateRequest { csr: "PEM".into(), ttl_seconds: Some(60) });
        let without_ttl = serde_json::to_string(&CertificateRequest { csr: "PEM".into(), ttl_seconds: None });
        assert_eq!(without_ttl.expect("JSON"), r#"{"csr":"PEM"}"#);
        let err = serde_json::from_str::<CertificateRequest>(r#"{"csr": "PEM", "sans": ["x"]}"#).expect_err("unknown");
        assert!(err.to_string().contains("unknown field `sans`"), "{err}");
    }

    #[test]
    fn a_response_writes_camel_case() {
        let response = CertificateResponse { certificate_chain: "A".into(), trust_bundle: "B".into() };
        let json = serde_json::to_value(&response).expect("JSON");
        assert_eq!(json, serde_json::json!({"certificateChain": "A", "trustBundle": "B"}));
    }
}
