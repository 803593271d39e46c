//! RequestAuthentication and AuthorizationPolicy on a real sidecar: a request without a token is
//! judged by authorization (403 when a principal is required), a bad token is a 401 before any
//! policy, and a valid token reaches the app without its `Authorization` header, its claims in the
//! header the provider names.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use support::upstream::http_echo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_api::istio::authorization_policy::Rule;
use trellis_api::proxy_config::*;

const ISSUER: &str = "testing@secure.istio.io";
const JWKS: &str = include_str!("../src/jwt/testdata/jwks.json");
const RSA_KEY: &str = include_str!("../src/jwt/testdata/rsa.pem");

fn token(issuer: &str, expires_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let claims = serde_json::json!({"iss": issuer, "sub": ISSUER, "exp": now + expires_in, "groups": ["group1"]});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".to_owned());
    encode(&header, &claims, &EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("key")).expect("signed")
}

fn booking_with_jwt() -> ProxyConfig {
    let mut config = sidecar_config("booking", Vec::new(), Vec::new());
    let rules: Vec<Rule> = serde_saphyr::from_str(
        "- from: [{source: {requestPrincipals: [testing@secure.istio.io/testing@secure.istio.io]}}]",
    )
    .expect("rules");
    config.inbound = vec![InboundListener {
        port: INBOUND_CATCH_ALL_PORT,
        protocol: Protocol::Detect,
        mtls: InboundMtls::Permissive,
        authorization: vec![AuthorizationRule {
            policy: "default/require-jwt".into(),
            action: AuthorizationAction::Allow,
            rules,
        }],
        jwt: vec![JwtProvider {
            issuer: ISSUER.into(),
            audiences: Vec::new(),
            jwks: Some(JWKS.into()),
            jwks_uri: None,
            from_headers: vec![JwtHeader { name: "authorization".into(), prefix: "Bearer ".into() }],
            from_params: Vec::new(),
            from_cookies: Vec::new(),
            forward_original_token: false,
            output_payload_to_header: None,
            output_claim_to_headers: vec![JwtClaimToHeader { header: "x-added".into(), claim: "groups".into() }],
            space_delimited_claims: Vec::new(),
        }],
        rate_limits: Vec::new(),
    }];
    config
}

async fn get(addr: SocketAddr, authorization: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    let head = format!("GET /api/v1/booking HTTP/1.1\r\nHost: booking\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    (text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_jwt_is_required_bad_ones_get_401_and_the_app_sees_claims_not_the_token() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let app_text = app.to_string();
    let proxy = Proxy::start("sidecar", &booking_with_jwt(), &["--inbound-target", &app_text]);
    let inbound = proxy.addr(15006);

    let (status, text) = get(inbound, None).await;
    assert_eq!(status, 403, "no token: authorization requires a principal: {text}");
    assert!(text.ends_with("RBAC: access denied"), "{text}");

    for (bad, why) in [
        ("Bearer not-a-jwt".to_owned(), "malformed"),
        (format!("Bearer {}", token(ISSUER, -3600)), "expired"),
        (format!("Bearer {}", token("someone@else", 3600)), "another issuer"),
    ] {
        let (status, text) = get(inbound, Some(&bad)).await;
        assert_eq!(status, 401, "{why}: {text}");
        let challenge = "www-authenticate: Bearer realm=\"http://booking/api/v1/booking\", error=\"invalid_token\"";
        assert!(text.to_ascii_lowercase().contains(&challenge.to_ascii_lowercase()), "{why}: {text}");
    }

    let (status, text) = get(inbound, Some(&format!("Bearer {}", token(ISSUER, 3600)))).await;
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("x-seen-x-added: group1"), "the claim reaches the app as a header: {text}");
    assert!(!lower.contains("x-seen-authorization"), "the token itself is not forwarded: {text}");
}
