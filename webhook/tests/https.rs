//! The webhook over real HTTPS with a test CA: AdmissionReview fixtures in, the patch out (applied
//! to the fixture's pod, it yields a valid pod with the sidecar); non-Pod and skipped requests
//! allowed untouched; garbage, empty, oversized and request-less bodies answered with a clear
//! status; the Mesh's failure policy; metrics by result; and the `trellis-webhook` binary serving a
//! replaced certificate without a restart.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use support::{Client, TestCa};
use tokio::net::TcpListener;
use trellis_api::mesh::MeshSpec;
use trellis_webhook::review::StaticContext;
use trellis_webhook::server::{MAX_REVIEW_BYTES, Webhook, serve_tls};
use trellis_webhook::tls::ReloadingCert;

const BINARY: &str = env!("CARGO_BIN_EXE_trellis-webhook");
/// Generous bound for a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("a fixture")).expect("fixture JSON")
}

fn mesh(spec: Value) -> MeshSpec {
    serde_json::from_value(spec).expect("a Mesh spec")
}

/// An in-process webhook on 127.0.0.1 with a certificate of `ca`; its address and the folder of
/// its certificate files (kept for the test's life).
async fn start(ca: &TestCa, mesh: MeshSpec) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    ca.serving("webhook").write(dir.path());
    let cert = ReloadingCert::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).expect("loads");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let webhook = Webhook::new(Arc::new(StaticContext(Arc::new(mesh))));
    tokio::spawn(serve_tls(listener, cert, webhook.router(), std::future::pending()));
    (addr, dir)
}

async fn review(client: &mut Client, body: &Value) -> Value {
    let (status, answer) = client.request("POST", "/inject", serde_json::to_vec(body).expect("json")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).expect("a JSON review");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], body["request"]["uid"], "the answer carries the request's uid");
    answer["response"].clone()
}

#[tokio::test]
async fn a_pod_review_is_answered_with_the_patch_that_adds_the_sidecar() {
    let ca = TestCa::new();
    let (addr, _dir) = start(&ca, mesh(json!({}))).await;
    let mut client = Client::connect(&ca, addr).await;
    let request = fixture("pod-create.json");
    let response = review(&mut client, &request).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = BASE64_STANDARD.decode(response["patch"].as_str().expect("a base64 patch")).expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the request's pod");
    let pod: Pod = serde_json::from_value(pod).expect("a valid Pod");
    let spec = pod.spec.expect("a spec");
    let init: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, ["trellis-init", "trellis-proxy"]);
    let probe = spec.containers[0].readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("a probe");
    assert_eq!(probe.path.as_deref(), Some("/app-health/shop/readyz"));
    let annotations = pod.metadata.annotations.expect("annotations");
    assert_eq!(annotations["kubernetes.io/config.seen"], "2026-11-26T08:00:00Z");
    assert!(annotations.contains_key("trellis.dev/sidecar-status"));
}

#[tokio::test]
async fn non_pod_updates_and_opted_out_pods_are_allowed_without_a_patch() {
    let ca = TestCa::new();
    let (addr, _dir) = start(&ca, mesh(json!({}))).await;
    let mut client = Client::connect(&ca, addr).await;
    let mut update = fixture("pod-create.json");
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = update["request"]["object"].clone();
    let mut opted_out = fixture("pod-create.json");
    opted_out["request"]["object"]["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    for (case, body) in
        [("a Deployment", fixture("deployment-create.json")), ("a pod update", update), ("an opted-out pod", opted_out)]
    {
        let response = review(&mut client, &body).await;
        assert_eq!(response["allowed"], true, "{case}");
        assert!(response.get("patch").is_none() && response.get("patchType").is_none(), "{case}: {response}");
    }
}

#[tokio::test]
async fn garbage_empty_oversized_and_request_less_bodies_get_a_clear_status_and_are_counted() {
    let ca = TestCa::new();
    let (addr, _dir) = start(&ca, mesh(json!({}))).await;
    let mut client = Client::connect(&ca, addr).await;
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        ("empty", Vec::new(), 400, "empty body"),
        ("garbage", b"\x00\xffnot json{".to_vec(), 400, "not an AdmissionReview"),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "has no request",
        ),
        ("oversized", vec![b' '; MAX_REVIEW_BYTES + 1], 413, "larger than"),
    ];
    for (case, body, status, message) in cases {
        // A new connection each time: the server may close one after refusing a large body.
        let mut fresh = Client::connect(&ca, addr).await;
        let (got, answer) = fresh.request("POST", "/inject", body).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(got, status, "{case}: {answer}");
        assert!(answer.contains(message), "{case}: {answer:?} lacks {message:?}");
    }
    review(&mut client, &fixture("pod-create.json")).await;
    let (status, health) = client.request("GET", "/healthz", Vec::new()).await;
    assert_eq!((status, health.as_slice()), (200, &b"ok\n"[..]));
    let (status, metrics) = client.request("GET", "/metrics", Vec::new()).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(status, 200);
    assert!(metrics.contains("trellis_webhook_admissions_total{result=\"invalid\"} 4"), "{metrics}");
    assert!(metrics.contains("trellis_webhook_admissions_total{result=\"injected\"} 1"), "{metrics}");
    assert!(metrics.contains("trellis_webhook_admission_duration_seconds_count 5"), "{metrics}");
}

#[tokio::test]
async fn a_pod_that_cannot_be_injected_is_denied_under_fail_and_admitted_with_a_warning_under_ignore() {
    let ca = TestCa::new();
    let mut broken = fixture("pod-create.json");
    broken["request"]["object"]["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
        json!("80,web");
    let (fail, _a) = start(&ca, mesh(json!({"injection": {"failurePolicy": "Fail"}}))).await;
    let response = review(&mut Client::connect(&ca, fail).await, &broken).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(
        message.contains("traffic.sidecar.istio.io/excludeInboundPorts") && message.contains("\"web\""),
        "{message}"
    );

    let (ignore, _b) = start(&ca, mesh(json!({"injection": {"failurePolicy": "Ignore"}}))).await;
    let response = review(&mut Client::connect(&ca, ignore).await, &broken).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("sidecar cannot be injected") && warning.contains("excludeInboundPorts"), "{warning}");
}

/// The `trellis-webhook` binary, stopped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_a_replaced_certificate_without_a_restart() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca.serving("first");
    first.write(dir.path());
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--reload-poll", "100ms"])
        .arg("--cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--key")
        .arg(dir.path().join("key.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start trellis-webhook");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a line");
        line
    })
    .await
    .expect("read the listening line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("trellis-webhook listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");

    let mut client = Client::connect(&ca, addr).await;
    assert_eq!(client.served, first.der(), "the first certificate is served");
    assert_eq!(review(&mut client, &fixture("pod-create.json")).await["allowed"], true);

    let second = ca.serving("second");
    second.write(dir.path());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut fresh = Client::connect(&ca, addr).await;
        if fresh.served == second.der() {
            assert_eq!(review(&mut fresh, &fixture("pod-create.json")).await["allowed"], true);
            break;
        }
        assert_eq!(fresh.served, first.der(), "neither the first nor the second certificate was served");
        assert!(Instant::now() < deadline, "the replaced certificate was not served within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the change still works.
    let (status, _) = client.request("GET", "/healthz", Vec::new()).await;
    assert_eq!(status, 200);
    drop(running);
}
