//! The mesh CA: issues each proxy a short-lived certificate for its workload's SPIFFE identity
//! (protocol in `trellis_api::ca` and `docs/ca.md`).
//!
//! Its own key material ([`root`]) is a self-signed root it makes on first start, or a CA the user
//! provides, kept in a folder (local mode) or in the Secret `trellis-ca` of the root namespace
//! (Kubernetes mode). A proxy sends a CSR with a bearer token; the [`auth`] module turns the token into
//! an identity (TokenReview in Kubernetes, bootstrap tokens written by `trellis run` locally); the
//! [`authority`] signs the CSR's public key for that identity only, ignoring every name the CSR asks
//! for, for 24 hours by default. [`CaService::handle`] is the HTTP side, served by the push server on
//! 15012 at `POST /v1/certificates`; each answer carries the trust bundle, and in Kubernetes [`bundle`]
//! also keeps it in the ConfigMap `trellis-ca-root-cert` of every namespace.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode, header};
use trellis_api::ca::{CONTENT_TYPE, CertificateRequest, CertificateResponse, ErrorResponse, MAX_REQUEST_BYTES};

pub mod auth;
pub mod authority;
pub mod bundle;
pub mod root;

pub use auth::{Authenticator, Identity, TokenReviewer, mint_token, token_path};
pub use authority::{Authority, DEFAULT_WORKLOAD_CERT_TTL, Issued};
pub use root::CaMaterial;

use crate::Error;

/// The CA folder in local mode unless `trellisd --ca-dir` names another, inside the mesh folder: hidden
/// (the folder source skips hidden entries), and the CA writes a `.gitignore` there when it makes it.
pub const DEFAULT_CA_DIR_NAME: &str = ".trellis-ca";

/// Body of the CA's responses (the push server sends it as its own body type).
pub type Body = BoxBody<Bytes, Infallible>;

/// What serves certificate requests: a signing [`Authority`] and how callers are authenticated.
#[derive(Debug)]
pub struct CaService {
    authority: Authority,
    authenticator: Authenticator,
}

impl CaService {
    /// A CA that signs with `authority` for callers `authenticator` accepts.
    pub fn new(authority: Authority, authenticator: Authenticator) -> Self {
        Self { authority, authenticator }
    }

    /// Local mode: the CA kept in folder `ca_dir` (made there on first start), accepting the
    /// bootstrap tokens in its `tokens/` folder.
    pub fn local(ca_dir: &std::path::Path, trust_domain: &str, max_ttl: Duration) -> Result<Self, Error> {
        let now = SystemTime::now();
        let material = root::load_or_create_dir(ca_dir, trust_domain, now)?;
        let authority = Authority::new(&material, trust_domain, max_ttl, now)?;
        Ok(Self::new(authority, Authenticator::LocalTokens(ca_dir.join(auth::TOKENS_DIR))))
    }

    /// Kubernetes mode: the CA kept in the Secret `trellis-ca` of `namespace` (made there on first
    /// start), accepting ServiceAccount tokens for audience `trellis-ca` (TokenReview).
    pub async fn kubernetes(
        client: kube::Client,
        namespace: &str,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> Result<Self, Error> {
        let now = SystemTime::now();
        let material = root::load_or_create_secret(client.clone(), namespace, trust_domain, now).await?;
        let authority = Authority::new(&material, trust_domain, max_ttl, now)?;
        let reviewer = TokenReviewer::new(client, trellis_api::ca::AUDIENCE);
        Ok(Self::new(authority, Authenticator::TokenReview(reviewer)))
    }

    /// The signing authority (trust bundle, trust domain).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Serves one `POST /v1/certificates`: authenticates the bearer token, reads the JSON request and
    /// answers with the certificate, or with a JSON error and 400, 401 or 500.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.issue(request).await {
            Ok((issued, identity)) => {
                tracing::info!(%identity, spiffe_id = %issued.spiffe_id, not_after = ?issued.not_after, "issued a workload certificate");
                let body = CertificateResponse { certificate_chain: issued.chain_pem, trust_bundle: issued.roots_pem };
                json(StatusCode::OK, &body)
            }
            Err(err) => {
                let status = match &err {
                    Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                    Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(error = %err, "cannot issue a certificate");
                    "the CA could not issue a certificate; trellisd's log says why".to_owned()
                } else {
                    tracing::info!(error = %err, "refused a certificate request");
                    err.to_string()
                };
                json(status, &ErrorResponse { error: message })
            }
        }
    }

    async fn issue<B>(&self, request: Request<B>) -> Result<(Issued, Identity), Error>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let token = bearer_token(request.headers())?;
        let identity = self.authenticator.authenticate(token).await?;
        let body = Limited::new(request.into_body(), MAX_REQUEST_BYTES)
            .collect()
            .await
            .map_err(|e| {
                Error::bad_request("body", format!("cannot be read (at most {MAX_REQUEST_BYTES} bytes): {e}"))
            })?
            .to_bytes();
        let request: CertificateRequest = serde_json::from_slice(&body)
            .map_err(|e| Error::bad_request("body", format!("not a certificate request: {e}")))?;
        let ttl = request.ttl_seconds.map(Duration::from_secs);
        let issued = self.authority.sign(&request.csr, &identity, ttl, SystemTime::now())?;
        Ok((issued, identity))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &hyper::HeaderMap) -> Result<&str, Error> {
    let unauthenticated = |message: &str| Error::Unauthenticated(message.to_owned());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("no Authorization header (expected Authorization: Bearer <token>)"))?;
    let value = value.to_str().map_err(|_| unauthenticated("the Authorization header is not text"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated("the Authorization header is not Bearer <token>"));
    }
    Ok(token.trim())
}

/// `value` as a JSON response with `status`.
fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"error\":\"cannot encode the answer\"}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The answer of a server without a CA.
pub fn not_served() -> Response<Body> {
    let error = "this trellisd runs no CA (start it with the CA on, or give proxies --tls-cert files)".to_owned();
    json(StatusCode::NOT_FOUND, &ErrorResponse { error })
}

#[cfg(test)]
mod tests;
