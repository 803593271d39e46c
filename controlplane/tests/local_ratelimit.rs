//! Local mode with a RateLimitPolicy: a policy file written into `trellisd`'s folder reaches the
//! selected workload's sidecar, which then answers requests beyond the bucket with 429; a changed file
//! changes the limit and a removed one lifts it, with no restart.

mod local;

use std::net::SocketAddr;
use std::path::Path;

use local::*;

/// Port the backend's sidecar serves inbound traffic on (the ServiceEntry's target port).
const WORKLOAD_PORT: u16 = 8080;
/// Port the backend application listens on, behind its sidecar.
const APPLICATION_PORT: u16 = 18080;

fn mesh_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend, namespace: shop}}\n\
         spec:\n  hosts: [backend.shop.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {WORKLOAD_PORT}}}]\n\
         \x20 workloadSelector: {{labels: {{app: backend}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: backend, namespace: shop}}\n\
         spec: {{address: {}, serviceAccount: backend, labels: {{app: backend}}}}\n",
        loopback(3)
    )
}

/// A policy giving the backend a bucket of `burst` that refills once a minute.
fn limit_yaml(burst: u32) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: backend-limit, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: backend}}}}\n  rules:\n\
         \x20   - tokenBucket: {{maxTokens: {burst}, tokensPerFill: 1, fillInterval: 1m}}\n"
    )
}

/// Replaces a file of the folder at once, as an editor saves.
fn write(folder: &Path, name: &str, text: &str) {
    let partial = folder.join(format!(".{name}.partial"));
    std::fs::write(&partial, text).expect("write the file");
    std::fs::rename(&partial, folder.join(name)).expect("rename the file");
}

/// Waits until the backend's sidecar serves a bucket of `burst` (`None`: no limit at all).
async fn sidecar_serves(admin: SocketAddr, burst: Option<u32>) {
    eventually(&format!("the sidecar serves a limit of {burst:?}"), || async {
        let config = served_config(admin).await?;
        let buckets: Vec<u32> = config.inbound.iter().flat_map(|l| &l.rate_limits).map(|l| l.max_tokens).collect();
        let policies: Vec<&str> =
            config.inbound.iter().flat_map(|l| &l.rate_limits).map(|l| l.policy.as_str()).collect();
        let wanted = match burst {
            Some(burst) => {
                !buckets.is_empty()
                    && buckets.iter().all(|b| *b == burst)
                    && policies.iter().all(|p| *p == "shop/backend-limit")
            }
            None => buckets.is_empty(),
        };
        if wanted { Ok(()) } else { Err(format!("version {}: buckets {buckets:?}", config.version)) }
    })
    .await;
}

/// The statuses of `n` requests to the backend's sidecar.
async fn statuses(inbound: SocketAddr, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, body) = get(inbound, "/items").await.expect("the sidecar answers");
        if status == 429 {
            assert_eq!(body, "local_rate_limited");
        }
        out.push(status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_policy_in_the_folder_reaches_the_selected_sidecar_and_follows_its_file() {
    let folder = tempfile::tempdir().expect("tempdir");
    write(folder.path(), "mesh.yaml", &mesh_yaml());
    write(folder.path(), "limit.yaml", &limit_yaml(3));
    let control_plane = SocketAddr::new(loopback(1), 15012);
    let _trellisd = start_trellisd(folder.path(), control_plane);
    let _upstream = start_upstream(SocketAddr::new(loopback(3), APPLICATION_PORT), "backend").await;
    let application = Some((WORKLOAD_PORT, SocketAddr::new(loopback(3), APPLICATION_PORT)));
    let _sidecar = start_sidecar("backend", "app=backend", loopback(3), control_plane, application);
    let admin = SocketAddr::new(loopback(3), 15000);
    let inbound = SocketAddr::new(loopback(3), WORKLOAD_PORT);

    sidecar_serves(admin, Some(3)).await;
    assert_eq!(statuses(inbound, 5).await, [200, 200, 200, 429, 429]);

    write(folder.path(), "limit.yaml", &limit_yaml(6));
    sidecar_serves(admin, Some(6)).await;
    assert_eq!(statuses(inbound, 8).await, [200, 200, 200, 200, 200, 200, 429, 429], "a changed rule, a new bucket");

    std::fs::remove_file(folder.path().join("limit.yaml")).expect("remove the policy");
    sidecar_serves(admin, None).await;
    assert_eq!(statuses(inbound, 10).await, [200; 10], "no policy, no limit");
}
