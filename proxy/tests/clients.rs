//! Real clients against the proxy: curl (HTTP/1.1, HTTP/2 prior knowledge, through the explicit
//! proxy) and h2load. CI installs both (`curl`, `nghttp2-client`).

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::upstream::http_echo;
use support::*;

const PORT: u16 = 8080;

async fn gateway() -> Proxy {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let config = gateway_config(
        PORT,
        vec![vhost("web", PORT, &["web"], vec![route("all", vec![], forward(vec![to("app", 1)]))])],
        vec![cluster("app", &[app])],
    );
    Proxy::start("gateway", &config, &[])
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_answers_over_http1_and_http2_prior_knowledge() {
    require("curl", "curl");
    let proxy = gateway().await;
    let url = format!("http://{}/hello", proxy.addr(PORT));
    let h1 = tokio::task::spawn_blocking({
        let url = url.clone();
        move || curl(&["-H", "Host: web", &url])
    })
    .await
    .expect("curl");
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(h1.to_ascii_lowercase().contains("x-upstream: app"), "{h1}");
    let h2 = tokio::task::spawn_blocking(move || curl(&["--http2-prior-knowledge", "-H", "Host: web", &url]))
        .await
        .expect("curl");
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_explicit_proxy_reaches_a_mesh_service_by_name() {
    require("curl", "curl");
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "reviews-app").await;
    let config = sidecar_config(
        "productpage",
        vec![vhost("reviews", 9080, &["reviews"], vec![route("all", vec![], forward(vec![to("reviews", 1)]))])],
        vec![cluster("reviews", &[app])],
    );
    let explicit = SocketAddr::new(unique_ip(), 15080);
    let _proxy = Proxy::start("sidecar", &config, &["--explicit-proxy-addr", &explicit.to_string()]);
    let out = tokio::task::spawn_blocking(move || {
        curl(&["--proxy", &format!("http://{explicit}"), "http://reviews:9080/ratings"])
    })
    .await
    .expect("curl");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-upstream: reviews-app"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_completes_every_request_over_multiplexed_streams() {
    require("h2load", "nghttp2-client");
    let proxy = gateway().await;
    let url = format!("http://{}/load", proxy.addr(PORT));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("h2load")
            .args(["-n", "2000", "-c", "4", "-m", "10", "-H", ":authority: web", &url])
            .output()
            .expect("run h2load")
    })
    .await
    .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"), "{text}");
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
}
