//! Local mode end to end, with real processes: `trellisd` on a folder of YAML, three `trellis-proxy`
//! sidecars following it, two upstream versions behind their sidecars, and a client sending steady
//! load through its sidecar's explicit proxy. A policy change written into the folder reaches every
//! proxy with no failed request; stopping `trellisd` leaves traffic flowing; restarting it
//! resynchronises every proxy, with a change made while it was away.

mod local;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use local::*;
use trellis_api::proxy_config::RouteAction;

/// The service the client calls, as its virtual host is named.
const BACKEND: &str = "backend.shop.svc.cluster.local";
/// Port each backend sidecar's inbound listener serves (the ServiceEntry's target port).
const WORKLOAD_PORT: u16 = 8080;
/// Port each backend application listens on, behind its sidecar.
const APPLICATION_PORT: u16 = 18080;
/// Node ids of the three sidecars.
const PROXIES: [&str; 3] = ["backend-v1.shop", "backend-v2.shop", "client.shop"];

/// The services, workloads and subsets of the mesh; the routes are in their own file.
fn mesh_yaml() -> String {
    let workload = |name: &str, host: u8, labels: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{address: {}, serviceAccount: {name}, labels: {{{labels}}}}}\n---\n",
            loopback(host)
        )
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend, namespace: shop}}\n\
         spec:\n  hosts: [{BACKEND}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {WORKLOAD_PORT}}}]\n\
         \x20 workloadSelector: {{labels: {{app: backend}}}}\n---\n{}{}{}\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: backend, namespace: shop}}\n\
         spec:\n  host: backend\n  subsets:\n    - {{name: v1, labels: {{version: v1}}}}\n\
         \x20   - {{name: v2, labels: {{version: v2}}}}\n",
        workload("client", 2, "app: client"),
        workload("backend-v1", 3, "app: backend, version: v1"),
        workload("backend-v2", 4, "app: backend, version: v2"),
    )
}

/// A VirtualService sending `v1` percent of the backend's traffic to v1 and the rest to v2.
fn routes_yaml(v1: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: backend, namespace: shop}}\n\
         spec:\n  hosts: [backend]\n  http:\n    - route:\n\
         \x20       - {{destination: {{host: backend, subset: v1}}, weight: {v1}}}\n\
         \x20       - {{destination: {{host: backend, subset: v2}}, weight: {}}}\n",
        100 - v1
    )
}

/// Replaces a file of the folder at once (a new file renamed over the old one), as an editor saves.
fn write(folder: &Path, name: &str, text: &str) {
    let partial = folder.join(format!(".{name}.partial"));
    std::fs::write(&partial, text).expect("write the file");
    std::fs::rename(&partial, folder.join(name)).expect("rename the file");
}

/// The weights of the backend's route in a proxy's config, by subset.
fn backend_weights(config: &trellis_api::proxy_config::ProxyConfig) -> Result<Vec<(String, u32)>, String> {
    let vhost = config
        .outbound
        .virtual_hosts
        .iter()
        .find(|v| v.name == BACKEND)
        .ok_or_else(|| format!("no virtual host {BACKEND} in version {}", config.version))?;
    let route = vhost.routes.first().ok_or("the backend has no route")?;
    let RouteAction::Forward { clusters, .. } = &route.action else { return Err("the route does not forward".into()) };
    let subset = |cluster: &str| cluster.split('|').nth(2).unwrap_or_default().to_owned();
    Ok(clusters.iter().filter(|c| c.weight > 0).map(|c| (subset(&c.cluster), c.weight)).collect())
}

/// Waits until every sidecar is listed in sync and serves `weights` for the backend.
async fn every_proxy_serves(control_plane: SocketAddr, weights: &[(&str, u32)]) {
    let wanted: Vec<(String, u32)> = weights.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect();
    eventually("every proxy is listed in sync", || async {
        let listed = proxy_status(control_plane).await?;
        let ids: Vec<&str> = listed.proxies.iter().map(|p| p.id.as_str()).collect();
        let synced = listed.proxies.iter().all(|p| p.in_sync && p.last_error.is_none());
        if ids == PROXIES && synced { Ok(()) } else { Err(format!("{listed:?}")) }
    })
    .await;
    for host in [2, 3, 4] {
        let admin = SocketAddr::new(loopback(host), 15000);
        eventually(&format!("the proxy on {admin} serves {wanted:?}"), || async {
            let served = backend_weights(&served_config(admin).await?)?;
            if served == wanted { Ok(()) } else { Err(format!("{served:?}")) }
        })
        .await;
    }
}

/// Waits for `count` more answers after answer `from` and returns them.
async fn answers_after(answers: &Answers, from: usize, count: usize) -> Vec<Answer> {
    eventually(&format!("{count} more answers"), || async {
        let len = answers.len();
        if len >= from + count { Ok(()) } else { Err(format!("{} answers", len - from)) }
    })
    .await;
    answers.since(from)
}

fn assert_all(answers: &[Answer], body: &str, when: &str) {
    let other: Vec<&Answer> = answers.iter().filter(|a| **a != Answer::Ok(body.to_owned())).collect();
    assert!(other.is_empty(), "{when}: answers other than {body}: {other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_mesh_follows_changes_without_a_failed_request_and_outlives_its_control_plane() {
    let folder = tempfile::tempdir().expect("tempdir");
    write(folder.path(), "mesh.yaml", &mesh_yaml());
    write(folder.path(), "routes.yaml", &routes_yaml(100));
    let control_plane = SocketAddr::new(loopback(1), 15012);
    let mut trellisd = start_trellisd(folder.path(), control_plane);
    let _upstreams = [
        start_upstream(SocketAddr::new(loopback(3), APPLICATION_PORT), "v1").await,
        start_upstream(SocketAddr::new(loopback(4), APPLICATION_PORT), "v2").await,
    ];
    let application = |host| Some((WORKLOAD_PORT, SocketAddr::new(loopback(host), APPLICATION_PORT)));
    let mut sidecars = [
        start_sidecar("client", "app=client", loopback(2), control_plane, None),
        start_sidecar("backend-v1", "app=backend,version=v1", loopback(3), control_plane, application(3)),
        start_sidecar("backend-v2", "app=backend,version=v2", loopback(4), control_plane, application(4)),
    ];
    for host in [2, 3, 4] {
        let readiness = SocketAddr::new(loopback(host), 15021);
        eventually(&format!("the sidecar on {readiness} is ready"), || async {
            match get(readiness, "/healthz/ready").await {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    every_proxy_serves(control_plane, &[("v1", 100)]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let explicit_proxy = SocketAddr::new(loopback(2), 15080);
    let (answers, load) = start_load(explicit_proxy, "backend", 2, Duration::from_millis(3), stop.clone());
    assert_all(&answers_after(&answers, 0, 100).await, "v1", "before any change");

    // (a) A weight change written into the folder reaches every proxy, with no failed request.
    write(folder.path(), "routes.yaml", &routes_yaml(0));
    every_proxy_serves(control_plane, &[("v2", 100)]).await;
    let switched = answers.len();
    assert_all(&answers_after(&answers, switched, 100).await[..100], "v2", "after the change");
    assert_eq!(answers.failures(), Vec::<String>::new(), "no request failed during the change");

    // (b) Without trellisd, the proxies keep their configs and traffic keeps flowing.
    let status = trellisd.terminate();
    assert!(status.success(), "trellisd stops cleanly on SIGTERM: {status}");
    let stopped = answers.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_all(&answers_after(&answers, stopped, 100).await, "v2", "while trellisd is away");
    for sidecar in &mut sidecars {
        sidecar.assert_running();
    }
    for host in [2, 3, 4] {
        let ready = get(SocketAddr::new(loopback(host), 15021), "/healthz/ready").await;
        assert_eq!(ready.map(|r| r.0), Some(200), "the sidecar on {} stays ready", loopback(host));
    }

    // (c) A change made while trellisd was away reaches every proxy once it is back.
    write(folder.path(), "routes.yaml", &routes_yaml(100));
    let _trellisd = start_trellisd(folder.path(), control_plane);
    every_proxy_serves(control_plane, &[("v1", 100)]).await;
    let resynced = answers.len();
    assert_all(&answers_after(&answers, resynced, 100).await[..100], "v1", "after the restart");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a load worker");
    }
    assert_eq!(answers.failures(), Vec::<String>::new(), "no request failed at any point");
    assert!(answers.len() >= 400, "steady load: {} answers", answers.len());
}
