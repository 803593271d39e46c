//! The Kubernetes source against a scripted API server (`tower_test`'s mock service behind a real
//! `kube::Client`): every call the source makes is checked for method, URI and body, and must come within
//! a second of the previous one; watch responses stay open so the scenario can send events into them.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use trellis_controlplane::Index;
use trellis_controlplane::index::{Key, Kind};
use trellis_controlplane::sources::SharedIndex;
use trellis_controlplane::sources::kubernetes::{KubernetesSource, Options};

/// How long each expected call may take to arrive.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;
type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>;

fn full(value: &Value) -> Body {
    let bytes = Bytes::from(serde_json::to_vec(value).expect("JSON"));
    StreamBody::new(futures_util::stream::once(async move { Ok(Frame::data(bytes)) }).boxed())
}

/// An open watch response: each event sent becomes one line of it.
fn watch_stream() -> (mpsc::UnboundedSender<Value>, Body) {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("JSON");
        line.push(b'\n');
        Some((Ok(Frame::data(Bytes::from(line))), rx))
    });
    (tx, StreamBody::new(stream.boxed()))
}

/// One call the source must make, and the answer it gets.
struct Call {
    method: Method,
    uri: String,
    /// The JSON body expected, with every `lastTransitionTime` removed (they are checked to be there).
    body: Option<Value>,
    status: StatusCode,
    response: Body,
}

fn get(uri: &str, response: Body) -> Call {
    Call { method: Method::GET, uri: uri.to_owned(), body: None, status: StatusCode::OK, response }
}

fn apply_status(uri: &str, body: Value, status: StatusCode, response: &Value) -> Call {
    Call { method: Method::PATCH, uri: uri.to_owned(), body: Some(body), status, response: full(response) }
}

struct ApiServer {
    handle: Handle,
}

impl ApiServer {
    fn start(options: Options) -> (Self, SharedIndex, tokio::sync::watch::Receiver<bool>) {
        let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let index = SharedIndex::default();
        let source = KubernetesSource::new(client, index.clone(), options);
        let synced = source.synced();
        tokio::spawn(source.run());
        (Self { handle }, index, synced)
    }

    /// Answers exactly these calls, in any order, each arriving within [`CALL_TIMEOUT`].
    async fn expect(&mut self, calls: Vec<Call>) {
        let mut calls = calls;
        while !calls.is_empty() {
            let waiting: Vec<String> = calls.iter().map(|c| format!("{} {}", c.method, c.uri)).collect();
            let (request, send) = tokio::time::timeout(CALL_TIMEOUT, self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no call within {CALL_TIMEOUT:?}; expected {waiting:?}"))
                .expect("the client is alive");
            let (method, uri) = (request.method().clone(), request.uri().to_string());
            let at = calls
                .iter()
                .position(|c| c.method == method && c.uri == uri)
                .unwrap_or_else(|| panic!("unexpected call {method} {uri}; expected {waiting:?}"));
            let call = calls.remove(at);
            let content_type = request.headers().get(http::header::CONTENT_TYPE).cloned();
            let bytes = request.into_body().collect().await.expect("a request body").to_bytes();
            match &call.body {
                None => assert!(bytes.is_empty(), "{method} {uri} has a body: {bytes:?}"),
                Some(expected) => {
                    assert_eq!(
                        content_type.as_ref().and_then(|v| v.to_str().ok()),
                        Some("application/apply-patch+yaml"),
                        "a server-side apply"
                    );
                    let mut body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
                    without_transition_times(&mut body);
                    assert_eq!(&body, expected, "body of {method} {uri}");
                }
            }
            let response = Response::builder().status(call.status).body(call.response).expect("a response");
            send.send_response(response);
        }
    }

    /// Asserts the source makes no call for a while.
    async fn expect_quiet(&mut self, quiet: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(quiet, self.handle.next_request()).await {
            panic!("unexpected call {} {}", request.method(), request.uri());
        }
    }
}

fn without_transition_times(body: &mut Value) {
    if let Some(conditions) = body.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            let time = condition.as_object_mut().and_then(|c| c.remove("lastTransitionTime"));
            let time = time.as_ref().and_then(Value::as_str).expect("a lastTransitionTime");
            assert!(time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{time}");
        }
    }
}

/// Waits until the index satisfies `check`.
async fn until(index: &SharedIndex, what: &str, check: impl Fn(&Index) -> bool) {
    let mut generations = index.subscribe();
    let waited = tokio::time::timeout(CALL_TIMEOUT, async {
        loop {
            if check(&index.read()) {
                return;
            }
            generations.changed().await.expect("the index lives");
        }
    })
    .await;
    assert!(waited.is_ok(), "the index never got {what}");
}

fn options(kinds: &[Kind]) -> Options {
    Options {
        kinds: kinds.to_vec(),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        status_retry: Duration::from_millis(100),
        ..Options::default()
    }
}

fn list(kind: &str, resource_version: &str, items: Vec<Value>) -> Body {
    full(&json!({
        "apiVersion": "v1", "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": resource_version}, "items": items,
    }))
}

fn list_uri(path: &str) -> String {
    format!("{path}?&limit=500")
}

fn watch_uri(path: &str, resource_version: &str) -> String {
    format!("{path}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={resource_version}")
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn service(name: &str, port: i64, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": resource_version},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    })
}

fn slice(resource_version: &str, addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "reviews-1"}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "reviews-abc", "namespace": "shop", "resourceVersion": resource_version,
            "labels": {"kubernetes.io/service-name": "reviews"}},
        "ports": [{"name": "http", "port": 9080}], "endpoints": endpoints,
    })
}

fn slice_addresses(index: &Index) -> Vec<String> {
    index
        .endpoint_slices("shop", "reviews")
        .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.iter().map(ToString::to_string)))
        .collect()
}

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PODS: &str = "/api/v1/pods";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";

#[tokio::test]
async fn an_initial_list_of_services_endpoint_slices_and_pods_fills_the_index_and_skips_what_cannot_be_read() {
    let (mut api, index, mut synced) = ApiServer::start(options(&[Kind::Service, Kind::EndpointSlice, Kind::Pod]));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reviews-1", "namespace": "shop", "resourceVersion": "7",
            "labels": {"app": "reviews", "security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": "bookinfo-reviews",
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 9080}]}]},
        "status": {"podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    let (_services, services_watch) = watch_stream();
    let (_slices, slices_watch) = watch_stream();
    let (_pods, pods_watch) = watch_stream();
    api.expect(vec![
        get(&list_uri(SERVICES), list("Service", "100", vec![service("reviews", 9080, "5"), service("bad", 0, "6")])),
        get(&list_uri(SLICES), list("EndpointSlice", "101", vec![slice("8", &["10.1.0.5"])])),
        get(&list_uri(PODS), list("Pod", "102", vec![pod])),
    ])
    .await;
    api.expect(vec![
        get(&watch_uri(SERVICES, "100"), services_watch),
        get(&watch_uri(SLICES, "101"), slices_watch),
        get(&watch_uri(PODS, "102"), pods_watch),
    ])
    .await;
    tokio::time::timeout(CALL_TIMEOUT, synced.wait_for(|s| *s)).await.expect("synced in time").expect("alive");

    let index = index.read();
    let hosts: Vec<&str> = index.services().map(|s| s.hostname.as_str()).collect();
    assert_eq!(hosts, ["reviews.shop.svc.cluster.local"], "the Service with port 0 is left out, not the others");
    assert_eq!(slice_addresses(&index), ["10.1.0.5"]);
    let pod = index.workload(&Key::new(Kind::Pod, "shop", "reviews-1")).expect("the pod");
    assert_eq!((pod.address.as_str(), pod.service_account.as_str()), ("10.1.0.5", "bookinfo-reviews"));
    assert!(pod.ready && pod.meshed);
    assert_eq!(index.len(), 3);
}

#[tokio::test]
async fn watch_events_add_and_remove_an_endpoint() {
    let (mut api, index, _synced) = ApiServer::start(options(&[Kind::EndpointSlice]));
    let (events, watch) = watch_stream();
    api.expect(vec![get(&list_uri(SLICES), list("EndpointSlice", "10", vec![slice("8", &["10.1.0.5"])]))]).await;
    api.expect(vec![get(&watch_uri(SLICES, "10"), watch)]).await;
    until(&index, "the listed endpoint", |i| slice_addresses(i) == ["10.1.0.5"]).await;
    let before = index.generation();

    events.send(event("MODIFIED", slice("11", &["10.1.0.5", "10.1.0.6"]))).expect("the watch is open");
    until(&index, "the added endpoint", |i| slice_addresses(i) == ["10.1.0.5", "10.1.0.6"]).await;
    assert_eq!(index.generation(), before + 1, "one event, one generation");

    events.send(event("MODIFIED", slice("12", &["10.1.0.6"]))).expect("the watch is open");
    until(&index, "the endpoint removed", |i| slice_addresses(i) == ["10.1.0.6"]).await;

    events.send(event("DELETED", slice("13", &["10.1.0.6"]))).expect("the watch is open");
    until(&index, "the slice deleted", |i| i.is_empty()).await;
    api.expect_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_object_deleted_between_relists_disappears_from_the_index() {
    let (mut api, index, _synced) = ApiServer::start(options(&[Kind::Service]));
    let (events, watch) = watch_stream();
    let listed = vec![service("reviews", 9080, "5"), service("ratings", 9080, "6")];
    api.expect(vec![get(&list_uri(SERVICES), list("Service", "100", listed))]).await;
    api.expect(vec![get(&watch_uri(SERVICES, "100"), watch)]).await;
    until(&index, "both services", |i| i.services().count() == 2).await;

    let gone = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 100 (150)", "reason": "Expired", "code": 410});
    events.send(event("ERROR", gone)).expect("the watch is open");
    let (_events, watch) = watch_stream();
    api.expect(vec![get(&list_uri(SERVICES), list("Service", "150", vec![service("reviews", 9080, "5")]))]).await;
    api.expect(vec![get(&watch_uri(SERVICES, "150"), watch)]).await;
    until(&index, "ratings gone", |i| i.services().map(|s| s.hostname.as_str()).eq(["reviews.shop.svc.cluster.local"]))
        .await;
}

fn virtual_service(name: &str, host: &str, resource_version: &str, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop", "generation": 2, "resourceVersion": resource_version},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": host}}]}]},
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

/// The status of a rejected object as the source writes it (without its `lastTransitionTime`).
fn rejected(message: &str) -> Value {
    json!({"observedGeneration": 2, "conditions": [{
        "type": "Accepted", "status": "False", "reason": "Invalid", "message": message, "observedGeneration": 2,
    }]})
}

/// The same status as the API server holds it.
fn rejected_on_object(message: &str) -> Value {
    let mut status = rejected(message);
    status["conditions"][0]["lastTransitionTime"] = json!("2024-05-01T10:00:05Z");
    status
}

fn status_uri(name: &str) -> String {
    format!(
        "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/{name}/status?&force=true&fieldManager=trellis"
    )
}

fn status_body(name: &str, status: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop"}, "status": status})
}

#[tokio::test]
async fn an_invalid_virtual_service_gets_a_status_naming_the_field_which_is_cleared_once_it_is_fixed() {
    let (mut api, index, _synced) = ApiServer::start(options(&[Kind::VirtualService]));
    let (events, watch) = watch_stream();
    let broken = virtual_service("broken", "", "5", None);
    let listed = vec![virtual_service("fine", "reviews", "4", None), broken.clone()];
    api.expect(vec![get(&list_uri(VIRTUAL_SERVICES), list("VirtualService", "100", listed))]).await;

    let message = "spec.http[0].route[0].destination.host: destination host is required";
    let mut written = broken.clone();
    written["status"] = rejected_on_object(message);
    api.expect(vec![
        get(&watch_uri(VIRTUAL_SERVICES, "100"), watch),
        apply_status(&status_uri("broken"), status_body("broken", rejected(message)), StatusCode::OK, &written),
    ])
    .await;
    {
        let index = index.read();
        let invalid: Vec<&Key> = index.invalid().map(|(k, _)| k).collect();
        assert_eq!(invalid, [&Key::new(Kind::VirtualService, "shop", "broken")]);
        assert_eq!(index.configs(Kind::VirtualService).count(), 1, "the valid one is served");
    }

    // The status write comes back as a watch event: nothing changes, nothing is written again.
    let generation = index.generation();
    written["metadata"]["resourceVersion"] = json!("6");
    events.send(event("MODIFIED", written.clone())).expect("the watch is open");
    api.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(index.generation(), generation, "a status write is not a change of the object");

    let fixed = virtual_service("broken", "reviews", "7", Some(rejected_on_object(message)));
    events.send(event("MODIFIED", fixed.clone())).expect("the watch is open");
    api.expect(vec![apply_status(&status_uri("broken"), status_body("broken", json!({})), StatusCode::OK, &fixed)])
        .await;
    until(&index, "the fixed object served", |i| i.invalid().count() == 0).await;
    api.expect_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_failed_status_write_is_retried_later_and_an_object_rejected_before_a_restart_is_not_rewritten() {
    let (mut api, _index, _synced) = ApiServer::start(options(&[Kind::VirtualService]));
    let message = "spec.http[0].route[0].destination.host: destination host is required";
    let (_events, watch) = watch_stream();
    let already = virtual_service("already", "", "4", Some(rejected_on_object(message)));
    let broken = virtual_service("broken", "", "5", None);
    api.expect(vec![get(&list_uri(VIRTUAL_SERVICES), list("VirtualService", "100", vec![already, broken.clone()]))])
        .await;
    let failure = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
    let body = status_body("broken", rejected(message));
    api.expect(vec![
        get(&watch_uri(VIRTUAL_SERVICES, "100"), watch),
        apply_status(&status_uri("broken"), body.clone(), StatusCode::INTERNAL_SERVER_ERROR, &failure),
    ])
    .await;
    api.expect(vec![apply_status(&status_uri("broken"), body, StatusCode::OK, &broken)]).await;
    api.expect_quiet(Duration::from_millis(300)).await;
}

const RATE_LIMITS: &str = "/apis/trellis.dev/v1alpha1/ratelimitpolicies";

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404})
}

#[tokio::test]
async fn a_kind_whose_crd_is_not_installed_does_not_hold_back_the_sync_and_is_listed_once_it_appears() {
    let (mut api, index, mut synced) = ApiServer::start(options(&[Kind::Service, Kind::RateLimitPolicy]));
    let (_services, services_watch) = watch_stream();
    let missing = || Call {
        method: Method::GET,
        uri: list_uri(RATE_LIMITS),
        body: None,
        status: StatusCode::NOT_FOUND,
        response: full(&not_found()),
    };
    api.expect(vec![get(&list_uri(SERVICES), list("Service", "100", vec![service("reviews", 9080, "5")])), missing()])
        .await;
    api.expect(vec![get(&watch_uri(SERVICES, "100"), services_watch)]).await;
    tokio::time::timeout(CALL_TIMEOUT, synced.wait_for(|s| *s))
        .await
        .expect("synced although the RateLimitPolicy CRD is missing")
        .expect("alive");
    assert_eq!(index.read().services().count(), 1);

    // The watch keeps trying; once the CRD is installed its objects arrive.
    api.expect(vec![missing()]).await;
    let policy = json!({
        "apiVersion": "trellis.dev/v1alpha1", "kind": "RateLimitPolicy",
        "metadata": {"name": "api", "namespace": "shop", "resourceVersion": "9"},
        "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                 "rules": [{"tokenBucket": {"maxTokens": 100, "tokensPerFill": 10, "fillInterval": "100ms"}}]},
    });
    let (_limits, limits_watch) = watch_stream();
    api.expect(vec![get(&list_uri(RATE_LIMITS), list("RateLimitPolicy", "200", vec![policy]))]).await;
    api.expect(vec![get(&watch_uri(RATE_LIMITS, "200"), limits_watch)]).await;
    until(&index, "the RateLimitPolicy", |index| index.configs(Kind::RateLimitPolicy).count() == 1).await;
}
