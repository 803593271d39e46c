//! `POST /v1/certificates` on the push server, over a real socket with HTTP/2 prior knowledge (as
//! proxies connect).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use trellis_api::ca::{CERTIFICATES_PATH, CertificateResponse};

use super::*;
use crate::ca::auth::TOKENS_DIR;
use crate::push::{self, FnSource, PushServer};

/// A push server on a loopback port, with `ca`.
async fn serve(ca: Option<CaService>) -> (std::net::SocketAddr, PushServer) {
    let (_generations, receiver) = tokio::sync::watch::channel(0);
    let source = FnSource::new(receiver, |_: &trellis_api::push::Hello| Err("no configs here".to_owned()));
    let options = push::Options { ca: ca.map(Arc::new), ..push::Options::default() };
    let server = PushServer::new(Arc::new(source), options);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (addr, server)
}

/// Posts `body` with `authorization` over HTTP/2 and returns the status and the JSON answer.
async fn post(addr: std::net::SocketAddr, authorization: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let tcp = TcpStream::connect(addr).await.expect("connected");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut request = Request::post(format!("http://{addr}{CERTIFICATES_PATH}"))
        .header(hyper::header::CONTENT_TYPE, trellis_api::ca::CONTENT_TYPE);
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON"));
    let response = sender.send_request(request.body(Full::new(bytes)).expect("a request")).await.expect("an answer");
    let status = response.status();
    assert_eq!(response.headers()[hyper::header::CONTENT_TYPE], "application/json");
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON answer"))
}

/// A local-mode CA in a temp folder, and the bootstrap token of shop/inventory.
fn local_ca(dir: &std::path::Path) -> (CaService, String) {
    let ca = CaService::local(dir, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL).expect("a CA");
    let path = mint_token(dir, &shop_inventory()).expect("minted");
    assert!(path.starts_with(dir.join(TOKENS_DIR)));
    (ca, std::fs::read_to_string(path).expect("readable"))
}

#[tokio::test]
async fn a_good_token_gets_a_certificate_for_its_identity_and_the_trust_bundle() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, token) = local_ca(dir.path());
    let roots = ca.authority().roots_pem().to_owned();
    let (addr, server) = serve(Some(ca)).await;
    let (csr, _) = csr(&["spiffe://cluster.local/ns/kube-system/sa/admin"]);
    let body = json!({"csr": csr, "ttlSeconds": 600});
    let (status, answer) = post(addr, Some(&format!("Bearer {token}")), &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer: CertificateResponse = serde_json::from_value(answer).expect("a certificate response");
    assert_eq!(answer.trust_bundle, roots);
    assert_eq!(names_of(&answer.certificate_chain).0, ["URI:spiffe://cluster.local/ns/shop/sa/inventory"]);
    rustls_accepts(&answer.certificate_chain, &answer.trust_bundle).expect("verifies");
    server.shutdown();
}

#[tokio::test]
async fn a_missing_or_unknown_token_gets_401_with_a_json_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, _) = local_ca(dir.path());
    let (addr, server) = serve(Some(ca)).await;
    let body = json!({"csr": csr(&[]).0});
    for (authorization, expected) in [
        (None, "no Authorization header"),
        (Some("Basic dXNlcjpwYXNz"), "not Bearer"),
        (Some("Bearer 0123456789abcdef"), "not known"),
    ] {
        let (status, answer) = post(addr, authorization, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        let error = answer["error"].as_str().expect("an error message");
        assert!(error.starts_with("not authenticated: ") && error.contains(expected), "{error}");
    }
    server.shutdown();
}

#[tokio::test]
async fn a_malformed_request_or_csr_gets_400_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, token) = local_ca(dir.path());
    let (addr, server) = serve(Some(ca)).await;
    let bearer = format!("Bearer {token}");
    for (body, expected) in [
        (json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}), "csr: "),
        (json!({"certificate": "x"}), "body: not a certificate request"),
        (json!({"csr": csr(&[]).0, "ttlSeconds": 0}), "ttlSeconds: must be at least 1"),
    ] {
        let (status, answer) = post(addr, Some(&bearer), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = answer["error"].as_str().expect("an error message");
        assert!(error.starts_with(expected), "{error}");
    }
    server.shutdown();
}

#[tokio::test]
async fn a_server_without_a_ca_answers_404_there() {
    let (addr, server) = serve(None).await;
    let (status, answer) = post(addr, Some("Bearer x"), &json!({"csr": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["error"].as_str().expect("a message").contains("runs no CA"));
    server.shutdown();
}
