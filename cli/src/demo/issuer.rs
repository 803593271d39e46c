//! The demo's own JWT issuer, so step 06 works offline: an ECDSA P-256 key made at start, its JSON Web
//! Key Set (what the tutorial's `jwksUri` on GitHub serves for Istio's sample key) served over HTTP on
//! a loopback address of the demo's subnet, and ES256 tokens of the tutorial's issuer signed with it.
//! `trellisd` fetches the key set from that URL once step 06 names it, as it would fetch GitHub's.
//!
//! Signing is ring's (JWS wants ECDSA signatures as fixed-size `r || s`, which is ring's
//! `ECDSA_P256_SHA256_FIXED_SIGNING`); the key set and claims are pure functions of their inputs.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

/// The tutorial's issuer (`06-require-jwt.yaml`); its tokens' `iss` and `sub`.
pub const TUTORIAL_ISSUER: &str = "testing@secure.istio.io";
/// How long a token the demo signs is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The `kid` of the demo's key.
pub const KEY_ID: &str = "trellis-demo";
/// The path the key set is served at.
pub const JWKS_PATH: &str = "/jwks.json";
/// Length of one P-256 coordinate in bytes.
const COORDINATE_BYTES: usize = 32;

/// A signing key of the tutorial's issuer, made for this run of the demo.
#[derive(Debug)]
pub struct Issuer {
    key: EcdsaKeyPair,
    random: SystemRandom,
}

impl Issuer {
    /// A new random P-256 key.
    pub fn generate() -> Result<Issuer, String> {
        let random = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .map_err(|_| "the demo's JWT key: the system's random source failed".to_owned())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
            .map_err(|e| format!("the demo's JWT key: {e}"))?;
        Ok(Issuer { key, random })
    }

    /// The key set with this key's public half, as JSON text.
    pub fn jwks(&self) -> Result<String, String> {
        jwks(self.key.public_key().as_ref(), KEY_ID)
    }

    /// A token of the tutorial's issuer (`iss` = `sub` = [`TUTORIAL_ISSUER`]) valid for
    /// [`TOKEN_LIFETIME`] from `now`.
    pub fn token(&self, now: SystemTime) -> Result<String, String> {
        let signing_input = signing_input(KEY_ID, &claims(TUTORIAL_ISSUER, now, TOKEN_LIFETIME));
        let signature = self
            .key
            .sign(&self.random, signing_input.as_bytes())
            .map_err(|_| "signing the demo's JWT failed".to_owned())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
    }
}

/// A key set holding one ES256 key whose public point is `point` (SEC1 uncompressed: `04 || x || y`).
pub fn jwks(point: &[u8], kid: &str) -> Result<String, String> {
    let coordinates = match point.split_first() {
        Some((4, xy)) if xy.len() == 2 * COORDINATE_BYTES => xy,
        _ => return Err(format!("not an uncompressed P-256 point ({} bytes)", point.len())),
    };
    let (x, y) = coordinates.split_at(COORDINATE_BYTES);
    let set = serde_json::json!({"keys": [{
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    }]});
    Ok(set.to_string())
}

/// The claims of a token of `issuer` about itself, issued at `now` and valid for `lifetime`.
pub fn claims(issuer: &str, now: SystemTime, lifetime: Duration) -> serde_json::Value {
    let issued = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    serde_json::json!({"iss": issuer, "sub": issuer, "iat": issued, "exp": issued + lifetime.as_secs()})
}

/// `base64url(header).base64url(claims)` of an ES256 token with key id `kid`.
pub fn signing_input(kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// Aborts the server task when dropped, so the key set goes away with the demo.
#[derive(Debug)]
pub struct JwksServer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `jwks` at `http://<addr>/jwks.json` (any other path is a 404) until the result is dropped.
pub async fn serve_jwks(addr: SocketAddr, jwks: String) -> Result<JwksServer, String> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("the demo's key set needs {addr}: {e}"))?;
    let body = Bytes::from(jwks);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let found = request.uri().path() == JWKS_PATH;
                    let body = if found { body.clone() } else { Bytes::from_static(b"not found\n") };
                    let response = hyper::Response::builder()
                        .status(if found { 200 } else { 404 })
                        .header(hyper::header::CONTENT_TYPE, if found { "application/json" } else { "text/plain" })
                        .body(Full::new(body));
                    async move { response }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(JwksServer { url: format!("http://{addr}{JWKS_PATH}"), task })
}

#[cfg(test)]
mod tests;
