//! The Kubernetes side against `tower_test`'s scripted API server behind a real `kube::Client`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use super::*;
use crate::ca::auth::TokenReviewer;
use crate::ca::root::{self, SECRET_NAME};

/// How long each expected call may take to arrive.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews?";
const SECRETS: &str = "/api/v1/namespaces/trellis-system/secrets";

type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<Full<Bytes>>>;

fn api_server() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Full<Bytes>>>();
    (kube::Client::new(service, "default"), handle)
}

/// Expects one `method uri` call within [`CALL_TIMEOUT`], answers `status` with `answer`, and returns
/// the request's JSON body (`Null` when empty).
async fn expect(handle: &mut Handle, method: Method, uri: &str, status: StatusCode, answer: &Value) -> Value {
    let (request, send) = tokio::time::timeout(CALL_TIMEOUT, handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no call within {CALL_TIMEOUT:?}; expected {method} {uri}"))
        .expect("the client is alive");
    assert_eq!((request.method(), request.uri().to_string().as_str()), (&method, uri));
    let bytes = request.into_body().collect().await.expect("a body").to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
    let answer = Bytes::from(serde_json::to_vec(answer).expect("JSON"));
    send.send_response(Response::builder().status(status).body(Full::new(answer)).expect("a response"));
    body
}

fn review_answer(status: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status})
}

async fn review(status: Value) -> (Result<Identity, Error>, Value) {
    let (client, mut handle) = api_server();
    let authenticator = Authenticator::TokenReview(TokenReviewer::new(client, trellis_api::ca::AUDIENCE));
    let answering = tokio::spawn(async move {
        expect(&mut handle, Method::POST, TOKEN_REVIEWS, StatusCode::CREATED, &review_answer(status)).await
    });
    let result = authenticator.authenticate("projected-token").await;
    (result, answering.await.expect("the API server answered"))
}

#[tokio::test]
async fn a_service_account_token_for_the_ca_audience_gives_its_namespace_and_service_account() {
    let (result, sent) = review(json!({
        "authenticated": true, "audiences": ["trellis-ca"],
        "user": {"username": "system:serviceaccount:shop:inventory", "uid": "1"},
    }))
    .await;
    assert_eq!(result.expect("authenticated"), shop_inventory());
    assert_eq!(sent["spec"], json!({"token": "projected-token", "audiences": ["trellis-ca"]}));
}

#[tokio::test]
async fn a_token_the_api_server_does_not_authenticate_is_refused_with_its_reason() {
    let (result, _) = review(json!({"authenticated": false, "error": "token has expired"})).await;
    let err = result.expect_err("not authenticated");
    assert!(matches!(&err, Error::Unauthenticated(m) if m.contains("token has expired")), "{err}");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (result, _) = review(json!({
        "authenticated": true, "audiences": ["https://kubernetes.default.svc"],
        "user": {"username": "system:serviceaccount:shop:inventory"},
    }))
    .await;
    let err = result.expect_err("wrong audience");
    assert!(matches!(&err, Error::Unauthenticated(m) if m.contains("not for audience \"trellis-ca\"")), "{err}");
}

#[tokio::test]
async fn an_api_server_that_fails_is_a_ca_error_not_a_refusal() {
    let (client, mut handle) = api_server();
    let authenticator = Authenticator::TokenReview(TokenReviewer::new(client, trellis_api::ca::AUDIENCE));
    let failure = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is down", "reason": "InternalError", "code": 500});
    let answering = tokio::spawn(async move {
        expect(&mut handle, Method::POST, TOKEN_REVIEWS, StatusCode::INTERNAL_SERVER_ERROR, &failure).await
    });
    let err = authenticator.authenticate("projected-token").await.expect_err("no answer");
    answering.await.expect("answered");
    assert!(matches!(&err, Error::Ca { what, .. } if what == "TokenReview"), "{err}");
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": "secrets \"trellis-ca\" not found"})
}

#[tokio::test]
async fn a_missing_ca_secret_is_created_with_a_new_root() {
    let (client, mut handle) = api_server();
    let loading = tokio::spawn(async move {
        root::load_or_create_secret(client, "trellis-system", TRUST_DOMAIN, SystemTime::now()).await
    });
    let get = format!("{SECRETS}/{SECRET_NAME}");
    expect(&mut handle, Method::GET, &get, StatusCode::NOT_FOUND, &not_found()).await;
    let (request, send) =
        tokio::time::timeout(CALL_TIMEOUT, handle.next_request()).await.expect("a create").expect("alive");
    assert_eq!((request.method(), request.uri().to_string()), (&Method::POST, format!("{SECRETS}?")));
    let bytes = request.into_body().collect().await.expect("a body").to_bytes();
    let created: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(created["metadata"]["name"], SECRET_NAME);
    assert_eq!(created["type"], "kubernetes.io/tls");
    assert_eq!(created["metadata"]["labels"]["app.kubernetes.io/managed-by"], "trellisd");
    send.send_response(Response::builder().status(StatusCode::CREATED).body(Full::new(bytes)).expect("a response"));
    let material = loading.await.expect("finished").expect("made");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(created).expect("a Secret");
    let data = secret.data.expect("data");
    assert_eq!(data["tls.crt"].0, material.cert_pem.as_bytes());
    assert_eq!(data["tls.key"].0, material.key_pem.as_bytes());
    Authority::new(&material, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, SystemTime::now()).expect("a usable CA");
}

#[tokio::test]
async fn a_ca_secret_written_by_cert_manager_is_used_with_its_root_as_the_trust_bundle() {
    let (client, mut handle) = api_server();
    let mine = CaMaterial::generate("example.org", SystemTime::now()).expect("a root");
    let encode = |text: &str| serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).expect("base64");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": SECRET_NAME, "namespace": "trellis-system"},
        "data": {"tls.crt": encode(&mine.cert_pem), "tls.key": encode(&mine.key_pem), "ca.crt": encode(&mine.cert_pem)},
    });
    let loading = tokio::spawn(async move {
        root::load_or_create_secret(client, "trellis-system", TRUST_DOMAIN, SystemTime::now()).await
    });
    expect(&mut handle, Method::GET, &format!("{SECRETS}/{SECRET_NAME}"), StatusCode::OK, &secret).await;
    let material = loading.await.expect("finished").expect("read");
    assert_eq!(material, CaMaterial { roots_pem: None, ..mine }, "a ca.crt equal to tls.crt is the root itself");
}

#[tokio::test]
async fn a_ca_secret_another_trellisd_created_first_is_read() {
    let (client, mut handle) = api_server();
    let theirs = CaMaterial::generate(TRUST_DOMAIN, SystemTime::now()).expect("a root");
    let encode = |text: &str| serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).expect("base64");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME, "namespace": "trellis-system"},
        "data": {"ca-cert.pem": encode(&theirs.cert_pem), "ca-key.pem": encode(&theirs.key_pem)},
    });
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409,
                          "message": "secrets \"trellis-ca\" already exists"});
    let loading = tokio::spawn(async move {
        root::load_or_create_secret(client, "trellis-system", TRUST_DOMAIN, SystemTime::now()).await
    });
    let get = format!("{SECRETS}/{SECRET_NAME}");
    expect(&mut handle, Method::GET, &get, StatusCode::NOT_FOUND, &not_found()).await;
    expect(&mut handle, Method::POST, &format!("{SECRETS}?"), StatusCode::CONFLICT, &conflict).await;
    expect(&mut handle, Method::GET, &get, StatusCode::OK, &secret).await;
    assert_eq!(loading.await.expect("finished").expect("read"), theirs);
}

#[tokio::test]
async fn the_trust_bundle_is_applied_as_a_configmap_in_a_namespace() {
    let (client, mut handle) = api_server();
    let applying = tokio::spawn(async move { crate::ca::bundle::apply(client, "shop", "ROOTS PEM").await });
    let (request, send) =
        tokio::time::timeout(CALL_TIMEOUT, handle.next_request()).await.expect("a call").expect("alive");
    assert_eq!(request.method(), Method::PATCH);
    assert_eq!(request.uri().path(), "/api/v1/namespaces/shop/configmaps/trellis-ca-root-cert");
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert!(query.contains("fieldManager=trellisd-ca") && query.contains("force=true"), "{query}");
    let bytes = request.into_body().collect().await.expect("a body").to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["metadata"]["name"], "trellis-ca-root-cert");
    assert_eq!(body["data"], json!({"root-cert.pem": "ROOTS PEM"}));
    send.send_response(Response::builder().status(StatusCode::OK).body(Full::new(bytes)).expect("a response"));
    applying.await.expect("finished").expect("applied");
}
