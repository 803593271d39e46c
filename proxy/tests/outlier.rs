//! Outlier detection for real: the `trellis-proxy` binary balancing over upstreams that start failing
//! on purpose, with the ejections observed in the traffic and in `/config_dump`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::overload::Misbehaving;
use support::upstream::Body;
use support::*;
use trellis_api::proxy_config::{Cluster, OutlierDetection};

const GATEWAY_PORT: u16 = 8080;
const BASE_EJECTION: Duration = Duration::from_secs(1);

fn detection(consecutive_5xx: u32, max_percent: u32, min_health: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: Some(consecutive_5xx),
        consecutive_gateway_errors: None,
        consecutive_local_origin_failures: None,
        interval: Duration::from_millis(50),
        base_ejection_time: BASE_EJECTION,
        max_ejection_percent: max_percent,
        min_health_percent: min_health,
    }
}

struct Mesh {
    proxy: Proxy,
    upstreams: Vec<Misbehaving>,
    client: Client<HttpConnector, Body>,
}

impl Mesh {
    async fn start(n: usize, detection: OutlierDetection) -> Mesh {
        let mut upstreams = Vec::new();
        for name in ["a", "b", "c", "d"].into_iter().take(n) {
            upstreams.push(Misbehaving::start(SocketAddr::new(unique_ip(), 0), name, 200, Duration::ZERO).await);
        }
        let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
        let cluster = Cluster { outlier_detection: Some(detection), ..cluster("svc", &addrs) };
        let config = gateway_config(
            GATEWAY_PORT,
            vec![vhost("svc", GATEWAY_PORT, &["svc"], vec![route("all", vec![], forward(vec![to("svc", 1)]))])],
            vec![cluster],
        );
        let proxy = Proxy::start("gateway", &config, &[]);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Mesh { proxy, upstreams, client: Client::builder(TokioExecutor::new()).build(connector) }
    }

    /// One request; the upstream that answered (by its `x-upstream` name) and the status.
    async fn call(&self) -> (String, u16) {
        let body = Full::new(Bytes::new()).map_err(|never| match never {}).boxed();
        let addr = self.proxy.addr(GATEWAY_PORT);
        let req = Request::get(format!("http://{addr}/")).header("host", "svc").body(body).expect("request");
        let response = self.client.request(req).await.expect("response");
        let name = response.headers().get("x-upstream").and_then(|v| v.to_str().ok()).unwrap_or("proxy").to_owned();
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("body");
        (name, status)
    }

    /// The ejection mark of each endpoint, in the proxy's `/config_dump`.
    fn ejected(&self) -> Vec<bool> {
        let (_, body) = http_get(self.proxy.addr(15000), "/config_dump").expect("config dump");
        let dump: serde_json::Value = serde_json::from_str(&body).expect("json");
        let endpoints = &dump["clusterState"][0]["endpoints"];
        self.upstreams
            .iter()
            .map(|u| {
                let addr = u.addr.to_string();
                let endpoint = endpoints.as_array().and_then(|e| e.iter().find(|e| e["address"] == addr.as_str()));
                endpoint.is_some_and(|e| e["ejected"] == true)
            })
            .collect()
    }

    /// Endpoints the detector holds ejected (`ejectedForMs` present), whether or not it is enforced.
    fn held_ejected(&self) -> usize {
        let (_, body) = http_get(self.proxy.addr(15000), "/config_dump").expect("config dump");
        let dump: serde_json::Value = serde_json::from_str(&body).expect("json");
        dump["clusterState"][0]["endpoints"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["outlier"]["ejectedForMs"].is_number()).count())
    }
}

/// Sends requests every few milliseconds until `a` answers again; returns how long it was away.
async fn time_away(mesh: &Mesh, name: &str) -> Duration {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "{name} never came back");
        let (answered, _) = mesh.call().await;
        if answered == name {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_for_the_base_time_then_twice_as_long() {
    let mesh = Mesh::start(2, detection(2, 100, 0)).await;
    let failing = &mesh.upstreams[0];
    failing.set_status(500);
    // Round robin: the failing endpoint gets every other request; two 5xx in a row eject it.
    let mut errors = 0;
    while errors < 2 {
        let (name, status) = mesh.call().await;
        if name == "a" {
            assert_eq!(status, 500);
            errors += 1;
        }
    }
    assert_eq!(mesh.ejected(), vec![true, false], "visible in /config_dump");
    let before = failing.requests();
    let first = time_away(&mesh, "a").await;
    assert_eq!(failing.requests(), before + 1, "no traffic while ejected, then one request");
    assert!(first >= BASE_EJECTION - Duration::from_millis(100), "away {first:?}");
    assert!(first < BASE_EJECTION * 3, "back after about the base ejection time: {first:?}");

    // It still fails: one more 5xx makes two in a row (the first came back), and the second ejection
    // lasts twice the base time.
    while mesh.ejected() != vec![true, false] {
        mesh.call().await;
    }
    let second = time_away(&mesh, "a").await;
    assert!(second >= BASE_EJECTION * 2 - Duration::from_millis(100), "away {second:?}");
    assert!(second > first + BASE_EJECTION / 2, "first {first:?}, second {second:?}");
    let ratio = second.as_secs_f64() / first.as_secs_f64();
    assert!((1.4..3.0).contains(&ratio), "twice as long: {first:?} then {second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_keeps_half_of_four_failing_endpoints_in_service() {
    let long = OutlierDetection { base_ejection_time: Duration::from_secs(60), ..detection(1, 50, 0) };
    let mesh = Mesh::start(4, long).await;
    for upstream in &mesh.upstreams {
        upstream.set_status(503);
    }
    for _ in 0..20 {
        mesh.call().await;
    }
    let ejected = mesh.ejected().into_iter().filter(|e| *e).count();
    assert_eq!(ejected, 2, "50% of 4 endpoints");
    // The two left in service take all the traffic.
    let in_service: Vec<&Misbehaving> =
        mesh.upstreams.iter().zip(mesh.ejected()).filter(|(_, e)| !e).map(|(u, _)| u).collect();
    let before: usize = in_service.iter().map(|u| u.requests()).sum();
    for _ in 0..10 {
        mesh.call().await;
    }
    let after: usize = in_service.iter().map(|u| u.requests()).sum();
    assert_eq!(after - before, 10, "ejected endpoints get nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_health_percent_every_endpoint_takes_traffic_again() {
    let long = OutlierDetection { base_ejection_time: Duration::from_secs(60), ..detection(1, 100, 75) };
    let mesh = Mesh::start(4, long).await;
    mesh.upstreams[0].set_status(500);
    while mesh.ejected() != vec![true, false, false, false] {
        mesh.call().await;
    }
    // A second ejection would leave 50% healthy, under 75%: ejection stops being enforced.
    mesh.upstreams[1].set_status(500);
    while mesh.held_ejected() < 2 {
        mesh.call().await;
    }
    assert_eq!(mesh.ejected(), vec![false; 4], "no endpoint is left out");
    let before: Vec<usize> = mesh.upstreams.iter().map(Misbehaving::requests).collect();
    for _ in 0..40 {
        mesh.call().await;
    }
    let got: Vec<usize> = mesh.upstreams.iter().zip(before).map(|(u, b)| u.requests() - b).collect();
    assert!(got.iter().all(|n| *n > 0), "all four take traffic: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_refuses_connections_is_ejected_for_its_local_origin_failures() {
    let live = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "live", 200, Duration::ZERO).await;
    // An address nothing listens on: every connect is refused.
    let refused = {
        let listener = std::net::TcpListener::bind(SocketAddr::new(unique_ip(), 0)).expect("bind");
        listener.local_addr().expect("addr")
    };
    for split in [false, true] {
        let mut rule = detection(0, 100, 0);
        rule.consecutive_5xx_errors = None;
        if split {
            rule.consecutive_local_origin_failures = Some(2);
        } else {
            rule.consecutive_gateway_errors = Some(2);
        }
        let rule = OutlierDetection { base_ejection_time: Duration::from_secs(60), ..rule };
        let cluster = Cluster { outlier_detection: Some(rule), ..cluster("svc", &[live.addr, refused]) };
        let config = gateway_config(
            GATEWAY_PORT,
            vec![vhost("svc", GATEWAY_PORT, &["svc"], vec![route("all", vec![], forward(vec![to("svc", 1)]))])],
            vec![cluster],
        );
        let proxy = Proxy::start("gateway", &config, &[]);
        let mesh = Mesh {
            proxy,
            upstreams: vec![live.clone()],
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        };
        // Round robin: the refused endpoint fails every other request until it is ejected.
        let mut failures = 0;
        for _ in 0..10 {
            if mesh.call().await.1 == 503 {
                failures += 1;
            }
        }
        // (A retry policy may hide some of those failures from the client; the ejection stays.)
        assert!(failures <= 2, "two failed connects in a row eject it (split: {split}): {failures} failures");
        let (_, body) = http_get(mesh.proxy.addr(15000), "/config_dump").expect("config dump");
        let dump: serde_json::Value = serde_json::from_str(&body).expect("json");
        let endpoints = dump["clusterState"][0]["endpoints"].as_array().cloned().unwrap_or_default();
        let shown = endpoints.iter().find(|e| e["address"] == refused.to_string().as_str()).expect("the endpoint");
        assert_eq!(shown["ejected"], true, "{shown}");
        for _ in 0..20 {
            assert_eq!(mesh.call().await, ("live".to_owned(), 200), "only the live endpoint is used");
        }
    }
}
