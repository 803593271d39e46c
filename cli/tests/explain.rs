//! `trellis explain` driven as a user runs it: a real process on the tutorial's YAML (with its local-mode
//! workloads, in tests/fixtures), stdout, stderr and exit codes; and against a running control plane
//! (the real push server and a real proxy discovery client, in this process).

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `trellis explain -f <tutorial> ARGS...`.
fn explain(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("explain")
        .arg("-f")
        .arg(fixture("tutorial"))
        .args(args)
        .output()
        .expect("run trellis");
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// Runs of spaces as one, so checks do not depend on column widths.
fn squeeze(text: &str) -> String {
    text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

fn assert_has(run: &Run, needle: &str) {
    let found = squeeze(&run.stdout).contains(&squeeze(needle));
    assert!(found, "{needle:?} not in:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

#[test]
fn the_shipping_split_prints_both_subsets_their_share_and_endpoints_and_exits_0() {
    let run = explain(&["--from", "default/booking-v1", "http://shipping-service/api/v1/shipping"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_has(&run, "virtual host:  shipping-service.default.svc.cluster.local:80 (http)");
    assert_has(&run, "VirtualService default/shipping-service, spec.http[0]");
    assert_has(&run, "90%  outbound|80|v1|shipping-service.default.svc.cluster.local");
    assert_has(&run, "10%  outbound|80|v2|shipping-service.default.svc.cluster.local");
    assert_has(&run, "127.0.1.3:8080  app=shipping-service,version=v1  meshed");
    assert_has(&run, "127.0.1.4:8080  app=shipping-service,version=v2  meshed");
}

#[test]
fn json_output_carries_the_same_verdict() {
    let run = explain(&["-o", "json", "--from", "default/booking-v1", "http://shipping-service/api/v1/shipping"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(json["outcome"], "routed");
    assert_eq!(json["route"]["name"], "default/shipping-service#0");
    let percents: Vec<f64> = json["route"]["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| d["percent"].as_f64().expect("percent"))
        .collect();
    assert_eq!(percents, [90.0, 10.0]);
}

#[test]
fn the_ingress_gateway_sends_the_booking_prefix_to_booking_service() {
    let run = explain(&["--gateway", "istio-system/ingressgateway", "http://shop.example.com/api/v1/booking"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_has(&run, "VirtualService default/booking, spec.http[0]");
    assert_has(&run, "block 1 of 1: uri starts with \"/api/v1/booking\"");
    assert_has(&run, "100%  outbound|8080||booking-service.default.svc.cluster.local");
    assert_has(&run, "127.0.1.1:8080");
}

#[test]
fn a_path_no_gateway_route_matches_prints_404_and_exits_1() {
    let run = explain(&["--gateway", "istio-system/ingressgateway", "http://shop.example.com/admin"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_has(&run, "no route -> 404");
}

#[test]
fn an_unknown_host_says_there_is_no_virtual_host_and_exits_1() {
    let run = explain(&["--from", "default/booking-v1", "http://payments/api"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_has(&run, "no virtual host for payments:80 -> passthrough");
}

#[test]
fn a_header_flag_takes_part_in_routing() {
    let output = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["explain", "-f"])
        .arg(fixture("shop"))
        .args(["--from", "shop/productpage-v1", "-H", "end-user: jason", "http://reviews:9080/"])
        .output()
        .expect("run trellis");
    let stdout = squeeze(&String::from_utf8(output.stdout).expect("utf-8"));
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("route: shop/reviews#jason"), "{stdout}");
    assert!(stdout.contains("100% outbound|9080|v2|reviews.shop.svc.cluster.local"), "{stdout}");
}

#[test]
fn an_unknown_workload_exits_2_naming_the_workloads_there_are() {
    let run = explain(&["--from", "default/payments-v1", "http://shipping-service/"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("no Pod or WorkloadEntry default/payments-v1"), "{}", run.stderr);
    assert!(run.stderr.contains("default/booking-v1 (WorkloadEntry)"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let bad_header = explain(&["--from", "default/booking-v1", "-H", "nocolon", "http://shipping-service/"]);
    assert_eq!(bad_header.code, 2);
    assert!(bad_header.stderr.contains("is not NAME:VALUE"), "{}", bad_header.stderr);
    let no_source = explain(&["http://shipping-service/"]);
    assert_eq!(no_source.code, 2, "neither --from nor --gateway");
    let both = explain(&["--from", "a/b", "--gateway", "c/d", "http://shipping-service/"]);
    assert_eq!(both.code, 2, "--from and --gateway together");
    let missing = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["explain", "-f", "/nonexistent/trellis", "--from", "a/b", "http://x/"])
        .output()
        .expect("run trellis");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/trellis"));
}

/// How long the control-plane test waits for the proxy to connect.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_control_plane_the_config_last_sent_to_the_proxy_is_explained() {
    use std::sync::Arc;

    use trellis_api::push::Hello;
    use trellis_controlplane::push::{FnSource, Options, PushServer};
    use trellis_controlplane::{Index, ProxyIdentity, translate};
    use trellis_proxy::{drain::Drain, metrics::Metrics, state::Store};

    let mut index = Index::new();
    for entry in std::fs::read_dir(fixture("tutorial")).expect("fixtures") {
        let path = entry.expect("entry").path();
        let loaded = trellis_controlplane::index::load::yaml("fixture", &std::fs::read_to_string(&path).expect("read"));
        assert!(loaded.problems.is_empty(), "{}: {:?}", path.display(), loaded.problems);
        index.apply_all(loaded.changes);
    }
    let (_generation, generations) = tokio::sync::watch::channel(1);
    let source = FnSource::new(generations, move |hello: &Hello| {
        let identity = ProxyIdentity {
            id: hello.node.id.clone(),
            mode: hello.mode,
            namespace: hello.node.namespace.clone(),
            service_account: hello.node.service_account.clone(),
            labels: hello.node.labels.clone(),
            addresses: hello.ips.clone(),
        };
        Ok(translate(&index, &identity).config)
    });
    let server = PushServer::new(Arc::new(source), Options::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });

    let hello: Hello = serde_json::from_value(serde_json::json!({
        "node": {"id": "booking-v1.default", "namespace": "default", "serviceAccount": "booking",
                 "identity": "spiffe://cluster.local/ns/default/sa/booking",
                 "labels": {"app": "booking-service", "version": "v1"}},
        "mode": "sidecar", "proxyVersion": "test", "ips": ["127.0.1.1"]
    }))
    .expect("hello");
    let (store, drain) = (Arc::new(Store::default()), Drain::new());
    let client = trellis_proxy::discovery::run(
        trellis_proxy::discovery::Target::parse(&address.to_string()).expect("an address"),
        hello,
        store.clone(),
        Arc::new(Metrics::new()),
        drain.watch(),
    );
    tokio::spawn(client);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !store.is_loaded() {
        assert!(tokio::time::Instant::now() < deadline, "the proxy never got its config");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let explain_via = move |from: &'static str| {
        let address = address.to_string();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_trellis"))
                .args(["explain", "--control-plane", &address, "--from", from, "http://shipping-service/"])
                .output()
                .expect("run trellis")
        })
    };
    let output = explain_via("default/booking-v1").await.expect("explain");
    let stdout = squeeze(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("proxy: sidecar booking-v1.default"), "{stdout}");
    assert!(stdout.contains("90% outbound|80|v1|shipping-service.default.svc.cluster.local"), "{stdout}");
    assert!(stdout.contains("VirtualService default/shipping-service, spec.http[0]"), "{stdout}");

    let output = explain_via("default/order-v1").await.expect("explain");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no connected proxy \"order-v1.default\""), "{stderr}");
    drain.start();
    server.shutdown();
}
