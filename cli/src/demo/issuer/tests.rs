//! The demo's issuer against the proxy's own JWT validation: its key set and tokens must be what
//! `trellis-proxy` accepts for the tutorial's RequestAuthentication, and nothing else.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Uri};
use trellis_api::proxy_config::JwtProvider;
use trellis_proxy::jwt::JwtAuthenticator;

use super::{Issuer, JWKS_PATH, KEY_ID, TOKEN_LIFETIME, TUTORIAL_ISSUER, claims, jwks, serve_jwks};

/// The tutorial's provider with `set` inline, as trellisd pushes it once fetched.
fn authenticator(set: &str) -> JwtAuthenticator {
    let provider: JwtProvider = serde_json::from_value(serde_json::json!({"issuer": TUTORIAL_ISSUER, "jwks": set,
        "fromHeaders": [{"name": "authorization", "prefix": "Bearer "}]}))
    .expect("a provider");
    JwtAuthenticator::compile(&[provider]).expect("the demo's key set compiles")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"));
    headers
}

#[test]
fn a_token_the_demo_signs_is_accepted_by_the_proxy_as_the_tutorials_principal() {
    let issuer = Issuer::generate().expect("a key");
    let now = SystemTime::now();
    let token = issuer.token(now).expect("a token");
    let verified = authenticator(&issuer.jwks().expect("a key set"))
        .authenticate_at(&bearer(&token), &Uri::from_static("/api/v1/booking"), now)
        .expect("the token verifies")
        .expect("a token was found");
    assert_eq!(verified.issuer, TUTORIAL_ISSUER);
    assert_eq!(verified.principal.as_deref(), Some("testing@secure.istio.io/testing@secure.istio.io"));
    let exp = verified.claims.get("exp").and_then(serde_json::Value::as_u64).expect("exp");
    let iat = verified.claims.get("iat").and_then(serde_json::Value::as_u64).expect("iat");
    assert_eq!(exp - iat, TOKEN_LIFETIME.as_secs());
}

#[test]
fn another_runs_key_an_expired_token_or_a_changed_claim_is_refused() {
    let (issuer, other) = (Issuer::generate().expect("a key"), Issuer::generate().expect("a key"));
    let now = SystemTime::now();
    let uri = Uri::from_static("/");
    let token = issuer.token(now).expect("a token");
    let by_other = authenticator(&other.jwks().expect("a key set"));
    assert!(by_other.authenticate_at(&bearer(&token), &uri, now).is_err(), "another key does not verify it");
    let own = authenticator(&issuer.jwks().expect("a key set"));
    let later = now + TOKEN_LIFETIME + Duration::from_secs(3600);
    assert!(own.authenticate_at(&bearer(&token), &uri, later).is_err(), "expired after its lifetime");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims("someone@else", now, TOKEN_LIFETIME).to_string(),
    );
    assert!(own.authenticate_at(&bearer(&parts.join(".")), &uri, now).is_err(), "the signature covers the claims");
}

#[test]
fn the_key_set_is_one_es256_key_with_its_coordinates_and_a_bad_point_is_named() {
    let mut point = vec![4u8];
    point.extend([1u8; 32]);
    point.extend([2u8; 32]);
    let set: serde_json::Value = serde_json::from_str(&jwks(&point, KEY_ID).expect("a key set")).expect("JSON");
    let key = &set["keys"][0];
    assert_eq!(set["keys"].as_array().map(Vec::len), Some(1));
    for (field, value) in [("kty", "EC"), ("crv", "P-256"), ("alg", "ES256"), ("use", "sig"), ("kid", KEY_ID)] {
        assert_eq!(key[field], value, "{field}");
    }
    assert_eq!(key["x"], "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE");
    assert_eq!(key["y"], "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI");
    let error = jwks(&point[..33], KEY_ID).expect_err("a short point");
    assert!(error.contains("uncompressed P-256 point (33 bytes)"), "{error}");
}

#[tokio::test]
async fn the_key_set_is_served_at_its_path_until_the_server_is_dropped() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address");
    let server = serve_jwks(addr, "{\"keys\":[]}".to_owned()).await.expect("serving");
    assert_eq!(server.url, format!("http://{addr}{JWKS_PATH}"));
    let http = crate::demo::client::Http::default();
    let answer = http.get(&server.url, &[]).await.expect("an answer");
    assert_eq!((answer.status, answer.body.as_slice()), (200, b"{\"keys\":[]}".as_slice()));
    assert_eq!(answer.headers.get("content-type").map(String::as_str), Some("application/json"));
    let other = http.get(&format!("http://{addr}/other"), &[]).await.expect("an answer");
    assert_eq!(other.status, 404);
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = crate::demo::client::Http::default();
    assert!(fresh.get(&format!("http://{addr}/again"), &[]).await.is_err(), "nothing serves it any more");
}
