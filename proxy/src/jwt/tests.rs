//! Real keys (testdata/, made by testdata/generate.sh with openssl) sign real tokens; each refused case
//! of Istio's RequestAuthentication has its own test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Request;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use trellis_api::proxy_config::{JwtClaimToHeader, JwtHeader};

use super::*;

const ISSUER: &str = "https://issuer.example.com";
const JWKS: &str = include_str!("testdata/jwks.json");
const RSA: &str = include_str!("testdata/rsa.pem");
const RSA_PUBLIC: &str = include_str!("testdata/rsa.pub.pem");
const EC256: &str = include_str!("testdata/ec256.pem");
const EC384: &str = include_str!("testdata/ec384.pem");
const ED25519: &str = include_str!("testdata/ed25519.pem");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A provider as translate makes it for a rule without a location: `Authorization: Bearer` and
/// `access_token`.
fn provider() -> JwtProvider {
    JwtProvider {
        issuer: ISSUER.to_owned(),
        audiences: Vec::new(),
        jwks: Some(JWKS.to_owned()),
        jwks_uri: None,
        from_headers: vec![JwtHeader { name: "authorization".into(), prefix: "Bearer ".into() }],
        from_params: vec!["access_token".into()],
        from_cookies: Vec::new(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        space_delimited_claims: Vec::new(),
    }
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": ["shop", "pricing"], "azp": "web", "exp": now() + 600,
           "scope": "read write", "org": {"tenant": "acme", "level": 3}, "groups": ["a", "b"]})
}

fn key(alg: Algorithm) -> (EncodingKey, &'static str) {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC256.as_bytes()).map(|k| (k, "ec256")),
        Algorithm::ES384 => EncodingKey::from_ec_pem(EC384.as_bytes()).map(|k| (k, "ec384")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519.as_bytes()).map(|k| (k, "ed25519")),
        _ => EncodingKey::from_rsa_pem(RSA.as_bytes()).map(|k| (k, "rsa")),
    };
    key.expect("a test key")
}

/// A token signed with the test key for `alg`, with that key's `kid`.
fn sign(alg: Algorithm, claims: &Value) -> String {
    let (key, kid) = key(alg);
    let header = Header { kid: Some(kid.to_owned()), ..Header::new(alg) };
    encode(&header, claims, &key).expect("signed")
}

fn b64(json: &Value) -> String {
    BASE64URL.encode(json.to_string()).trim_end_matches('=').to_owned()
}

fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("a request").into_parts().0
}

fn bearer(token: &str) -> http::request::Parts {
    request("/", &[("authorization", &format!("Bearer {token}"))])
}

fn authenticator(providers: &[JwtProvider]) -> JwtAuthenticator {
    JwtAuthenticator::compile(providers).expect("compiles")
}

fn judge(providers: &[JwtProvider], parts: &http::request::Parts) -> Result<Option<VerifiedJwt>, JwtError> {
    authenticator(providers).authenticate(parts)
}

fn refused(token: &str) -> JwtError {
    judge(&[provider()], &bearer(token)).expect_err("refused")
}

#[test]
fn every_supported_algorithm_verifies() {
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let verified = judge(&[provider()], &bearer(&sign(alg, &claims())));
        let verified = verified.unwrap_or_else(|e| panic!("{alg:?}: {e}")).expect("a token");
        assert_eq!(verified.principal.as_deref(), Some("https://issuer.example.com/alice"), "{alg:?}");
    }
}

#[test]
fn a_verified_token_gives_principal_claims_audiences_and_presenter() {
    let verified = judge(&[provider()], &bearer(&sign(Algorithm::RS256, &claims()))).expect("valid").expect("a token");
    assert_eq!(verified.provider, 0);
    assert_eq!(verified.issuer, ISSUER);
    assert_eq!(verified.principal.as_deref(), Some("https://issuer.example.com/alice"));
    assert_eq!(verified.audiences, ["shop", "pricing"]);
    assert_eq!(verified.presenter.as_deref(), Some("web"));
    assert_eq!(verified.claim(&["org", "tenant"]), Some(&json!("acme")));
    assert_eq!(verified.claim_values(&["scope"]), ["read", "write"], "scope is space-delimited");
    assert_eq!(verified.claim_values(&["groups"]), ["a", "b"]);
}

#[test]
fn a_configured_space_delimited_claim_is_split() {
    let p = JwtProvider { space_delimited_claims: vec!["roles".into()], ..provider() };
    let mut c = claims();
    c["roles"] = json!("admin  viewer");
    let verified = judge(&[p], &bearer(&sign(Algorithm::ES256, &c))).expect("valid").expect("a token");
    assert_eq!(verified.claim_values(&["roles"]), ["admin", "viewer"]);
}

#[test]
fn a_token_without_sub_verifies_without_a_principal() {
    let mut c = claims();
    c.as_object_mut().expect("object").remove("sub");
    let verified = judge(&[provider()], &bearer(&sign(Algorithm::RS256, &c))).expect("valid").expect("a token");
    assert_eq!(verified.principal, None);
}

#[test]
fn a_request_without_a_token_passes_authentication() {
    assert_eq!(judge(&[provider()], &request("/", &[])), Ok(None));
    let basic = request("/", &[("authorization", "Basic YWxpY2U6c2VjcmV0")]);
    assert_eq!(judge(&[provider()], &basic), Ok(None), "another scheme is no bearer token");
}

#[test]
fn alg_none_is_refused() {
    let token = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims()));
    let err = refused(&token);
    assert_eq!(err, JwtError::Algorithm("none".into()));
    assert_eq!(err.body(), "Jwt header [alg] is not supported");
}

#[test]
fn hs256_signed_with_the_public_key_as_secret_is_refused() {
    let header = Header { kid: Some("rsa".into()), ..Header::new(Algorithm::HS256) };
    let token = encode(&header, &claims(), &EncodingKey::from_secret(RSA_PUBLIC.as_bytes())).expect("signed");
    assert_eq!(refused(&token), JwtError::Algorithm("HS256".into()));
}

#[test]
fn an_expired_token_is_refused() {
    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    let err = refused(&sign(Algorithm::RS256, &c));
    assert!(matches!(err, JwtError::Expired { .. }), "{err}");
    assert_eq!(err.body(), "Jwt is expired");
}

#[test]
fn a_token_expired_within_the_clock_skew_is_accepted() {
    let mut c = claims();
    c["exp"] = json!(now() - CLOCK_SKEW_SECONDS / 2);
    assert!(judge(&[provider()], &bearer(&sign(Algorithm::RS256, &c))).expect("valid").is_some());
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let mut c = claims();
    c["nbf"] = json!(now() + 3600);
    let err = refused(&sign(Algorithm::ES256, &c));
    assert!(matches!(err, JwtError::NotYetValid { .. }), "{err}");
    assert_eq!(err.body(), "Jwt not yet valid");
}

#[test]
fn expiry_is_judged_at_the_given_time() {
    let parts = bearer(&sign(Algorithm::RS256, &claims()));
    let later = SystemTime::now() + Duration::from_secs(600 + CLOCK_SKEW_SECONDS + 5);
    let err = authenticator(&[provider()]).authenticate_at(&parts.headers, &parts.uri, later);
    assert!(matches!(err, Err(JwtError::Expired { .. })), "{err:?}");
}

#[test]
fn a_token_of_another_issuer_is_refused() {
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    let err = refused(&sign(Algorithm::RS256, &c));
    assert_eq!(err, JwtError::UnknownIssuer("https://evil.example.com".into()));
    assert_eq!(err.body(), "Jwt issuer is not configured");
}

#[test]
fn a_token_for_another_audience_is_refused() {
    let p = JwtProvider { audiences: vec!["billing".into()], ..provider() };
    let err = judge(std::slice::from_ref(&p), &bearer(&sign(Algorithm::RS256, &claims()))).expect_err("refused");
    assert_eq!(err, JwtError::Audience(vec!["shop".into(), "pricing".into()]));
    assert_eq!(err.body(), "Audiences in Jwt are not allowed");
    let mut c = claims();
    c["aud"] = json!("billing");
    assert!(judge(&[p], &bearer(&sign(Algorithm::RS256, &c))).expect("a single aud string matches").is_some());
}

#[test]
fn a_token_with_an_unknown_kid_is_refused() {
    let (key, _) = key(Algorithm::RS256);
    let header = Header { kid: Some("rotated-away".into()), ..Header::new(Algorithm::RS256) };
    let err = refused(&encode(&header, &claims(), &key).expect("signed"));
    assert!(matches!(err, JwtError::NoMatchingKey { .. }), "{err}");
    assert_eq!(err.body(), "Jwks doesn't have key to match kid or alg from Jwt");
}

#[test]
fn a_token_without_kid_tries_every_key_of_its_type() {
    let (key, _) = key(Algorithm::ES384);
    let token = encode(&Header::new(Algorithm::ES384), &claims(), &key).expect("signed");
    assert!(judge(&[provider()], &bearer(&token)).expect("valid").is_some());
}

#[test]
fn a_token_with_a_bad_signature_is_refused() {
    let token = sign(Algorithm::RS256, &claims());
    let mut forged = claims();
    forged["sub"] = json!("admin");
    let mut parts: Vec<&str> = token.split('.').collect();
    let payload = b64(&forged);
    parts[1] = &payload;
    let err = refused(&parts.join("."));
    assert_eq!(err, JwtError::BadSignature);
    assert_eq!(err.body(), "Jwt verification fails");
    let (ed_key, _) = key(Algorithm::EdDSA);
    let wrong_key = encode(&Header { kid: Some("ec256".into()), ..Header::new(Algorithm::EdDSA) }, &claims(), &ed_key);
    let err = refused(&wrong_key.expect("signed"));
    assert!(matches!(err, JwtError::NoMatchingKey { .. }), "an EdDSA token cannot name an EC key: {err}");
}

#[test]
fn a_malformed_token_is_refused() {
    for token in [
        "garbage".to_owned(),
        "a.b".to_owned(),
        "e3=0.e30.sig".to_owned(),
        format!("{}.{}.sig.extra", b64(&json!({"alg": "RS256"})), b64(&claims())),
        format!("{}.bm90IGpzb24.sig", b64(&json!({"alg": "RS256"}))),
        format!("{}.{}.sig", b64(&json!("a string")), b64(&claims())),
    ] {
        let err = refused(&token);
        assert!(matches!(err, JwtError::Malformed(_)), "{token}: {err}");
    }
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert!(matches!(refused(&sign(Algorithm::RS256, &c)), JwtError::Malformed(_)), "exp must be a number");
}

#[test]
fn a_provider_whose_keys_are_not_fetched_yet_refuses_its_tokens() {
    let p = JwtProvider { jwks: None, jwks_uri: Some("https://issuer.example.com/jwks".into()), ..provider() };
    let err = judge(&[p], &bearer(&sign(Algorithm::RS256, &claims()))).expect_err("refused");
    assert_eq!(err, JwtError::JwksUnavailable(ISSUER.into()));
    assert_eq!(err.body(), "Jwks remote fetch is failed");
}

#[test]
fn a_jwks_that_is_not_a_key_set_does_not_compile_and_names_the_issuer() {
    let err = JwtAuthenticator::compile(&[JwtProvider { jwks: Some("{\"kid\": 1}".into()), ..provider() }]);
    let message = err.expect_err("refused").to_string();
    assert!(message.contains(ISSUER) && message.contains("jwks"), "{message}");
}

#[test]
fn keys_that_cannot_verify_are_left_out_of_the_key_set() {
    let jwks = json!({"keys": [
        {"kty": "oct", "kid": "rsa", "k": BASE64URL.encode(RSA_PUBLIC)},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "rsa", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "kid": "x", "crv": "X25519", "x": "AA"}
    ]});
    let a = authenticator(&[JwtProvider { jwks: Some(jwks.to_string()), ..provider() }]);
    let err = a.authenticate(&bearer(&sign(Algorithm::RS256, &claims()))).expect_err("no usable key");
    assert!(matches!(err, JwtError::NoMatchingKey { .. }), "{err}");
}

#[test]
fn a_token_is_read_from_a_header_with_its_prefix() {
    let p = JwtProvider {
        from_headers: vec![JwtHeader { name: "x-jwt-assertion".into(), prefix: "Token ".into() }],
        from_params: Vec::new(),
        ..provider()
    };
    let token = sign(Algorithm::ES256, &claims());
    let parts = request("/", &[("x-jwt-assertion", &format!("Token {token}"))]);
    assert!(judge(std::slice::from_ref(&p), &parts).expect("valid").is_some());
    assert_eq!(judge(&[p], &bearer(&token)), Ok(None), "the default location is not read when one is named");
}

#[test]
fn a_token_is_read_from_a_query_parameter_and_removed_from_it() {
    let token = sign(Algorithm::RS256, &claims());
    let mut parts = request(&format!("/items?page=2&access_token={token}&sort=asc"), &[]);
    let a = authenticator(&[provider()]);
    let verified = a.authenticate(&parts).expect("valid").expect("a token");
    a.apply(&mut parts, Some(&verified));
    assert_eq!(parts.uri, "/items?page=2&sort=asc");
}

#[test]
fn a_token_is_read_from_a_cookie_and_removed_from_it() {
    let p = JwtProvider {
        from_headers: Vec::new(),
        from_params: Vec::new(),
        from_cookies: vec!["session".into()],
        ..provider()
    };
    let token = sign(Algorithm::EdDSA, &claims());
    let mut parts = request("/", &[("cookie", &format!("theme=dark; session={token}; lang=en"))]);
    let a = authenticator(&[p]);
    let verified = a.authenticate(&parts).expect("valid").expect("a token");
    a.apply(&mut parts, Some(&verified));
    assert_eq!(parts.headers["cookie"], "theme=dark; lang=en");
}

#[test]
fn the_token_header_is_removed_unless_forward_original_token() {
    let token = sign(Algorithm::RS256, &claims());
    for forward in [false, true] {
        let a = authenticator(&[JwtProvider { forward_original_token: forward, ..provider() }]);
        let mut parts = bearer(&token);
        let verified = a.authenticate(&parts).expect("valid").expect("a token");
        a.apply(&mut parts, Some(&verified));
        assert_eq!(parts.headers.contains_key("authorization"), forward, "forwardOriginalToken {forward}");
    }
}

#[test]
fn the_payload_and_claims_are_written_to_the_output_headers() {
    let p = JwtProvider {
        output_payload_to_header: Some("x-jwt-payload".into()),
        output_claim_to_headers: vec![
            JwtClaimToHeader { header: "x-sub".into(), claim: "sub".into() },
            JwtClaimToHeader { header: "x-tenant".into(), claim: "org.tenant".into() },
            JwtClaimToHeader { header: "x-level".into(), claim: "org.level".into() },
            JwtClaimToHeader { header: "x-groups".into(), claim: "groups".into() },
            JwtClaimToHeader { header: "x-org".into(), claim: "org".into() },
            JwtClaimToHeader { header: "x-missing".into(), claim: "nope".into() },
        ],
        ..provider()
    };
    let c = claims();
    let token = sign(Algorithm::RS256, &c);
    let a = authenticator(&[p]);
    let mut parts = bearer(&token);
    let verified = a.authenticate(&parts).expect("valid").expect("a token");
    a.apply(&mut parts, Some(&verified));
    let payload = parts.headers["x-jwt-payload"].to_str().expect("ascii");
    assert_eq!(payload, token.split('.').nth(1).expect("a payload"), "the payload as it came, base64url");
    let decoded: Value = serde_json::from_slice(&BASE64URL.decode(payload).expect("base64url")).expect("JSON");
    assert_eq!(decoded, c);
    assert_eq!(parts.headers["x-sub"], "alice");
    assert_eq!(parts.headers["x-tenant"], "acme");
    assert_eq!(parts.headers["x-level"], "3");
    assert_eq!(parts.headers["x-groups"], "a,b");
    assert!(!parts.headers.contains_key("x-org") && !parts.headers.contains_key("x-missing"));
}

#[test]
fn output_headers_sent_by_the_client_are_removed() {
    let p = JwtProvider {
        output_payload_to_header: Some("x-jwt-payload".into()),
        output_claim_to_headers: vec![JwtClaimToHeader { header: "x-sub".into(), claim: "sub".into() }],
        ..provider()
    };
    let a = authenticator(&[p]);
    let mut parts = request("/", &[("x-jwt-payload", "e30"), ("x-sub", "admin")]);
    assert_eq!(a.authenticate(&parts), Ok(None));
    a.apply(&mut parts, None);
    assert!(!parts.headers.contains_key("x-jwt-payload") && !parts.headers.contains_key("x-sub"));
}

#[test]
fn a_bad_token_beside_a_good_one_is_refused() {
    let good = sign(Algorithm::RS256, &claims());
    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    let expired = sign(Algorithm::RS256, &c);
    let parts = request(&format!("/?access_token={expired}"), &[("authorization", &format!("Bearer {good}"))]);
    assert!(matches!(judge(&[provider()], &parts), Err(JwtError::Expired { .. })));
}

#[test]
fn the_issuer_in_the_token_chooses_among_several_providers() {
    let other = JwtProvider { issuer: "https://other.example.com".into(), ..provider() };
    let mut c = claims();
    c["iss"] = json!("https://other.example.com");
    let verified = judge(&[provider(), other], &bearer(&sign(Algorithm::ES256, &c))).expect("valid").expect("a token");
    assert_eq!(verified.provider, 1);
    assert_eq!(verified.principal.as_deref(), Some("https://other.example.com/alice"));
}

#[test]
fn any_provider_of_the_issuer_may_validate_the_token() {
    let unfetched = JwtProvider { jwks: None, ..provider() };
    let verified = judge(&[unfetched, provider()], &bearer(&sign(Algorithm::RS256, &claims())));
    assert_eq!(verified.expect("valid").expect("a token").provider, 1);
}

#[test]
fn a_token_is_checked_only_by_providers_reading_where_it_was_found() {
    let header_only = JwtProvider { from_params: Vec::new(), ..provider() };
    let parts = request(&format!("/?token={}", sign(Algorithm::RS256, &claims())), &[]);
    let other = JwtProvider {
        issuer: "https://other.example.com".into(),
        from_headers: Vec::new(),
        from_params: vec!["token".into()],
        ..provider()
    };
    let err = judge(&[header_only, other], &parts).expect_err("refused");
    assert_eq!(err, JwtError::UnknownIssuer(ISSUER.into()));
}
