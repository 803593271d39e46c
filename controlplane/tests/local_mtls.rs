//! Mutual TLS in local mode, end to end with real processes: `trellisd`'s CA issues each sidecar a
//! short-lived certificate against a bootstrap token, a mesh-wide STRICT PeerAuthentication makes the
//! backend's sidecar refuse plain text, and requests under steady load keep succeeding while every
//! certificate is renewed several times.

mod local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use local::*;
use trellis_controlplane::ca::{DEFAULT_CA_DIR_NAME, Identity, mint_token};

const BACKEND: &str = "backend.shop.svc.cluster.local";
const WORKLOAD_PORT: u16 = 8080;
const APPLICATION_PORT: u16 = 18080;
/// Lifetime the sidecars ask for: renewed every 2 s.
const CERT_TTL: &str = "4s";

fn mesh_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend, namespace: shop}}\n\
         spec:\n  hosts: [{BACKEND}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {WORKLOAD_PORT}}}]\n\
         \x20 workloadSelector: {{labels: {{app: backend}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: client, namespace: shop}}\n\
         spec: {{address: {}, serviceAccount: client, labels: {{app: client}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: backend, namespace: shop}}\n\
         spec: {{address: {}, serviceAccount: backend, labels: {{app: backend}}}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\n\
         spec: {{mtls: {{mode: STRICT}}}}\n",
        loopback(2),
        loopback(3)
    )
}

/// The serial of the certificate a sidecar holds, from its admin `/certs`.
async fn serial(admin: SocketAddr) -> Result<String, String> {
    let (status, body) = get(admin, "/certs").await.ok_or("admin does not answer")?;
    let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    match value["serial"].as_str() {
        Some(serial) if status == 200 => Ok(serial.to_owned()),
        _ => Err(format!("{status}: {body}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_get_certificates_from_trellisd_speak_mtls_under_strict_and_renew_without_a_failed_request() {
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("mesh.yaml"), mesh_yaml()).expect("write the mesh");
    let control_plane = SocketAddr::new(loopback(1), 15012);
    let _trellisd = start_trellisd(folder.path(), control_plane);
    let ca_dir = folder.path().join(DEFAULT_CA_DIR_NAME);
    let token = |sa: &str| {
        let identity = Identity::new("shop", sa).expect("valid names");
        mint_token(&ca_dir, &identity).expect("mint a bootstrap token").display().to_string()
    };
    let (client_token, backend_token) = (token("client"), token("backend"));
    let application = SocketAddr::new(loopback(3), APPLICATION_PORT);
    let _upstream = start_upstream(application, "backend").await;
    let _backend = start_sidecar_with(
        "backend",
        "app=backend",
        loopback(3),
        control_plane,
        Some((WORKLOAD_PORT, application)),
        &["--ca-token-file", &backend_token, "--cert-ttl", CERT_TTL],
    );
    let _client = start_sidecar_with(
        "client",
        "app=client",
        loopback(2),
        control_plane,
        None,
        &["--ca-token-file", &client_token, "--cert-ttl", CERT_TTL],
    );
    let explicit = SocketAddr::new(loopback(2), 15080);
    let (backend_admin, client_admin) = (SocketAddr::new(loopback(3), 15000), SocketAddr::new(loopback(2), 15000));
    let first = eventually("the backend sidecar holds a certificate", || serial(backend_admin)).await;
    eventually("the client sidecar holds a certificate", || serial(client_admin)).await;
    eventually("a request through both sidecars succeeds", || async {
        match get(explicit, &format!("http://{BACKEND}/")).await {
            Some((200, body)) if body == "backend" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Plain text straight to the backend's inbound listener is refused under STRICT.
    let plain = get(SocketAddr::new(loopback(3), WORKLOAD_PORT), "/").await;
    assert_eq!(plain, None, "STRICT refuses plain text");

    let stop = Arc::new(AtomicBool::new(false));
    let (answers, tasks) = start_load(explicit, BACKEND, 4, Duration::from_millis(5), stop.clone());
    tokio::time::sleep(Duration::from_secs(9)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a load task");
    }
    assert!(answers.len() > 200, "the load ran: {} answers", answers.len());
    assert_eq!(answers.failures(), Vec::<String>::new(), "no failed request while certificates renewed");
    let now = serial(backend_admin).await.expect("the backend still holds a certificate");
    assert_ne!(now, first, "the backend's certificate was renewed");
    let (_, metrics) = get(SocketAddr::new(loopback(3), 15090), "/stats/prometheus").await.expect("metrics");
    assert!(metrics.contains("trellis_protocol_detections_total{protocol=\"mtls\""), "{metrics}");
    assert!(metrics.contains("trellis_inbound_mtls_refused_total{reason=\"plaintext\"} 1"), "{metrics}");
}
