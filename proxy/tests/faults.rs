//! Fault injection and mirroring through the real `trellis-proxy` binary: shares of aborted and
//! delayed requests measured over many requests, gRPC aborts, copies reaching mirrors with the
//! `-shadow` host and whole bodies, and a hung or slow mirror never slowing the main request.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::upstream::{Body, body, client, http_echo};
use support::*;
use tokio::net::TcpListener;
use trellis_api::proxy_config::{Fault, FaultAbort, FaultDelay, Mirror, Route};

const PORT: u16 = 8080;

async fn send(client: &Client<HttpConnector, Body>, req: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = client.request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.expect("body").to_bytes())
}

fn get(proxy: &Proxy) -> Request<Body> {
    Request::get(format!("http://{}/items", proxy.addr(PORT))).header("host", "shop").body(body("")).expect("request")
}

/// A gateway with one route to an echo server, changed by `edit`; more clusters by name.
async fn gateway(edit: impl FnOnce(&mut Route), more: Vec<trellis_api::proxy_config::Cluster>) -> Proxy {
    let echo = http_echo(SocketAddr::new(unique_ip(), 0), "main").await;
    let mut only = route("shop", Vec::new(), forward(vec![to("main", 100)]));
    edit(&mut only);
    let mut clusters = vec![cluster("main", &[echo])];
    clusters.extend(more);
    let config = gateway_config(PORT, vec![vhost("shop", PORT, &["shop"], vec![only])], clusters);
    Proxy::start("gateway", &config, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_ten_percent_answers_ten_percent_of_two_thousand_requests_within_three_points() {
    let proxy = gateway(
        |r| {
            let abort = FaultAbort { http_status: Some(503), grpc_status: None, percentage: 10.0 };
            r.fault = Some(Fault { delay: None, abort: Some(abort) });
        },
        Vec::new(),
    )
    .await;
    let client = client();
    let mut aborted = 0;
    for _ in 0..2000 {
        let (status, _, body) = send(&client, get(&proxy)).await;
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body, "fault filter abort");
                aborted += 1;
            }
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    let share = f64::from(aborted) / 2000.0 * 100.0;
    assert!((7.0..=13.0).contains(&share), "{share}% aborted");
    let metrics = proxy.metrics();
    assert_eq!(metric(&metrics, "trellis_faults_injected_total{kind=\"Abort\"}"), Some(f64::from(aborted)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_delay_on_half_the_requests_shows_in_the_latency_distribution() {
    let proxy = gateway(
        |r| {
            let delay = FaultDelay { fixed_delay: Duration::from_secs(2), percentage: 50.0 };
            r.fault = Some(Fault { delay: Some(delay), abort: None });
        },
        Vec::new(),
    )
    .await;
    let client = client();
    let requests = (0..60).map(|_| {
        let (client, req) = (client.clone(), get(&proxy));
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, _, _) = send(&client, req).await;
            (status, started.elapsed())
        })
    });
    let mut slow = 0;
    for request in requests.collect::<Vec<_>>() {
        let (status, took) = request.await.expect("a request");
        assert_eq!(status, StatusCode::OK);
        if took >= Duration::from_secs(2) {
            assert!(took < Duration::from_secs(4), "delayed by the fault, not more: {took:?}");
            slow += 1;
        } else {
            assert!(took < Duration::from_secs(1), "an undelayed request is fast: {took:?}");
        }
    }
    assert!((15..=45).contains(&slow), "{slow} of 60 delayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_abort_answers_a_trailers_only_response_with_the_status() {
    let proxy = gateway(
        |r| {
            let abort = FaultAbort { http_status: None, grpc_status: Some("UNAVAILABLE".into()), percentage: 100.0 };
            r.fault = Some(Fault { delay: None, abort: Some(abort) });
        },
        Vec::new(),
    )
    .await;
    let (status, headers, _) = send(&client(), get(&proxy)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "14");
    assert_eq!(headers["content-type"], "application/grpc");
}

/// What a mirror server saw: the host and body length of every complete request.
#[derive(Default)]
struct Seen {
    complete: Mutex<Vec<(String, usize)>>,
}

/// How the mirror server behaves.
#[derive(Clone, Copy)]
enum Mirroring {
    /// Reads the request and answers at once.
    Answers,
    /// Reads the request, then never answers.
    Hangs,
    /// Takes the request head, then never reads the body.
    Stalls,
}

async fn mirror_server(behaviour: Mirroring) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind(SocketAddr::new(unique_ip(), 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let seen = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
                        if let Mirroring::Stalls = behaviour {
                            std::future::pending::<()>().await;
                        }
                        let mut body = req.into_body();
                        let mut length = 0;
                        while let Some(frame) = body.frame().await {
                            let Ok(frame) = frame else { return Ok::<_, Infallible>(Response::new(body_of(""))) };
                            if let Ok(data) = frame.into_data() {
                                length += data.len();
                            }
                        }
                        seen.complete.lock().expect("lock").push((host, length));
                        if let Mirroring::Hangs = behaviour {
                            std::future::pending::<()>().await;
                        }
                        Ok(Response::new(body_of("mirror")))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn body_of(text: &'static str) -> Full<Bytes> {
    Full::new(Bytes::from_static(text.as_bytes()))
}

fn mirrored(percentage: f64) -> impl FnOnce(&mut Route) {
    move |r| r.mirrors = vec![Mirror { cluster: "mirror".into(), percentage }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_receive_whole_copies_with_the_shadow_host_and_the_client_gets_the_main_answer() {
    let (mirror, seen) = mirror_server(Mirroring::Answers).await;
    let proxy = gateway(mirrored(100.0), vec![cluster("mirror", &[mirror])]).await;
    let client = client();
    let payload = vec![b'x'; 200_000];
    for _ in 0..20 {
        let req = Request::post(format!("http://{}/orders", proxy.addr(PORT)))
            .header("host", "shop:8080")
            .body(body(payload.clone()))
            .expect("request");
        let (status, headers, echoed) = send(&client, req).await;
        assert_eq!((status, headers["x-upstream"].to_str().expect("text")), (StatusCode::OK, "main"));
        assert_eq!(echoed.len(), payload.len(), "the main upstream got the whole body");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.complete.lock().expect("lock").len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copies = seen.complete.lock().expect("lock").clone();
    assert_eq!(copies.len(), 20, "every request was copied");
    assert!(copies.iter().all(|(host, length)| host == "shop-shadow:8080" && *length == payload.len()), "{copies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_percentage_copies_about_that_share() {
    let (mirror, seen) = mirror_server(Mirroring::Answers).await;
    let proxy = gateway(mirrored(25.0), vec![cluster("mirror", &[mirror])]).await;
    let client = client();
    for _ in 0..400 {
        assert_eq!(send(&client, get(&proxy)).await.0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copies = seen.complete.lock().expect("lock").len();
    assert!((60..=140).contains(&copies), "{copies} of 400 copied at 25%: {}", proxy.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_slow_mirror_never_slows_the_main_request_and_never_sees_a_cut_off_body_as_whole() {
    for behaviour in [Mirroring::Hangs, Mirroring::Stalls] {
        let (mirror, seen) = mirror_server(behaviour).await;
        let proxy = gateway(mirrored(100.0), vec![cluster("mirror", &[mirror])]).await;
        let client = client();
        // Bodies larger than what socket buffers hold: a mirror that stops reading falls behind and
        // its copy is abandoned.
        let payload = vec![b'y'; 16 * 1024 * 1024];
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let req = Request::post(format!("http://{}/orders", proxy.addr(PORT)))
                .header("host", "shop")
                .body(body(payload.clone()))
                .expect("request");
            let started = Instant::now();
            let (status, _, echoed) = send(&client, req).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!((status, echoed.len()), (StatusCode::OK, payload.len()));
        }
        assert!(slowest < Duration::from_secs(3), "the main path is not held by the mirror: {slowest:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let copies = seen.complete.lock().expect("lock").clone();
        assert!(copies.iter().all(|(_, length)| *length == payload.len()), "never a cut-off body as whole: {copies:?}");
        if let Mirroring::Stalls = behaviour {
            let metrics = proxy.metrics();
            let abandoned = metric(&metrics, "trellis_mirrored_requests_total{result=\"Abandoned\"}").unwrap_or(0.0);
            assert!(abandoned >= 1.0, "the slow mirror's copies were abandoned: {metrics}");
        }
    }
}
