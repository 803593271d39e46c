use std::convert::Infallible;

use axum::routing::get as route_get;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::net::TcpListener;

use super::*;

/// The shape the injector writes (copied from its test of the realistic pod).
const INJECTED: &str = r#"{
  "/app-health/shop/livez": {"httpGet": {"port": 8080, "path": "/live", "httpHeaders": {"X-Probe": "1"}}, "timeoutSeconds": 2},
  "/app-health/shop/readyz": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
  "/app-health/shop/startupz": {"grpc": {"port": 9090, "service": "shop"}, "timeoutSeconds": 1}
}"#;

fn prober(json: serde_json::Value) -> Arc<Prober> {
    Arc::new(serde_json::from_value(json).expect("a prober"))
}

async fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind((APP_HOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// An HTTP app: `/live` answers 200 only with the probe's header, `/broken` answers 500.
async fn http_app() -> u16 {
    let (listener, port) = listener().await;
    let app = Router::new()
        .route(
            "/live",
            route_get(|headers: axum::http::HeaderMap| async move {
                if headers.get("x-probe").is_some_and(|v| v == "1") { StatusCode::OK } else { StatusCode::BAD_REQUEST }
            }),
        )
        .route("/broken", route_get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A gRPC health server answering SERVING for the service `shop`, NOT_SERVING otherwise.
async fn grpc_app() -> u16 {
    let (listener, port) = listener().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                let path_ok = request.uri().path() == GRPC_HEALTH_PATH;
                let body = request.into_body().collect().await.expect("request body").to_bytes();
                let serving = path_ok && body == grpc_frame(&health_request("shop"));
                let message: &[u8] = if serving { &[0x08, 0x01] } else { &[0x08, 0x02] };
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().expect("a header value"));
                let frames = vec![Ok::<_, Infallible>(Frame::data(grpc_frame(message))), Ok(Frame::trailers(trailers))];
                let response = hyper::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(StreamBody::new(futures_util::stream::iter(frames)))
                    .expect("a response");
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

#[test]
fn the_injectors_probers_parse_and_bad_ones_are_refused_naming_the_variable() {
    let probers = parse(INJECTED).expect("the injector's format");
    assert_eq!(probers.len(), 3);
    let live = probers["/app-health/shop/livez"].http_get.as_ref().expect("httpGet");
    assert_eq!((live.port, live.path.as_deref(), live.http_headers["X-Probe"].as_str()), (8080, Some("/live"), "1"));
    assert_eq!(probers["/app-health/shop/startupz"].grpc, Some(Grpc { port: 9090, service: "shop".to_owned() }));
    for bad in [
        r#"{"/elsewhere": {"tcpSocket": {"port": 1}}}"#,
        r#"{"/app-health/a/livez": {}}"#,
        r#"{"/app-health/a/livez": {"tcpSocket": {"port": 1}, "grpc": {"port": 2}}}"#,
        "not json",
    ] {
        let err = parse(bad).expect_err("refused").to_string();
        assert!(err.contains(APP_PROBERS_ENV), "{err}");
    }
}

#[tokio::test]
async fn http_probes_pass_on_2xx_with_their_headers_and_fail_otherwise() {
    let port = http_app().await;
    let live =
        json_prober("httpGet", serde_json::json!({"port": port, "path": "/live", "httpHeaders": {"X-Probe": "1"}}));
    assert_eq!(probe(live).await, StatusCode::OK);
    let no_header = json_prober("httpGet", serde_json::json!({"port": port, "path": "/live"}));
    assert_eq!(probe(no_header).await, StatusCode::SERVICE_UNAVAILABLE);
    let broken = json_prober("httpGet", serde_json::json!({"port": port, "path": "/broken"}));
    assert_eq!(probe(broken).await, StatusCode::SERVICE_UNAVAILABLE);
}

fn json_prober(kind: &str, value: serde_json::Value) -> Arc<Prober> {
    prober(serde_json::json!({ kind: value, "timeoutSeconds": 5 }))
}

#[tokio::test]
async fn tcp_probes_pass_when_the_port_accepts_and_fail_when_it_is_closed() {
    let (open, port) = listener().await;
    assert_eq!(probe(json_prober("tcpSocket", serde_json::json!({"port": port}))).await, StatusCode::OK);
    drop(open);
    assert_eq!(
        probe(json_prober("tcpSocket", serde_json::json!({"port": port}))).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn grpc_probes_pass_only_when_the_service_is_serving() {
    let port = grpc_app().await;
    let shop = json_prober("grpc", serde_json::json!({"port": port, "service": "shop"}));
    assert_eq!(probe(shop).await, StatusCode::OK);
    let other = json_prober("grpc", serde_json::json!({"port": port, "service": "other"}));
    assert_eq!(probe(other).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_readiness_port_routes_each_injected_path_to_its_probe() {
    let app = http_app().await;
    let (closed, closed_port) = listener().await;
    drop(closed);
    let probers = parse(&format!(
        r#"{{"/app-health/shop/livez": {{"httpGet": {{"port": {app}, "path": "/live", "httpHeaders": {{"X-Probe": "1"}}}}}},
            "/app-health/shop/readyz": {{"tcpSocket": {{"port": {closed_port}}}}}}}"#
    ))
    .expect("probers");
    let (readiness, port) = listener().await;
    tokio::spawn(async move { axum::serve(readiness, router(probers)).await });
    let get = |path: &str| HttpGet { port, path: Some(path.to_owned()), host: None, http_headers: BTreeMap::new() };
    assert_eq!(http_probe(&get("/app-health/shop/livez")).await, Ok(()));
    assert_eq!(http_probe(&get("/app-health/shop/readyz")).await, Err("HTTP status 503".to_owned()));
    assert_eq!(http_probe(&get("/app-health/other/livez")).await, Err("HTTP status 404".to_owned()));
}
