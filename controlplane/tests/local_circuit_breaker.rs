//! The tutorial's section 8.2 in local mode, with real processes: `trellisd` on a folder holding
//! `examples/tutorial/04-inventory-circuit-breaker.yaml` as it is, a caller's sidecar and inventory's
//! sidecar in front of an application that answers slowly or fails on request. The file's comment
//! promises two things, and both are checked: with more than one concurrent request some are rejected
//! (503) by the caller's proxy, and a host that returns one 5xx is ejected for 3 minutes.

mod local;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use local::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TUTORIAL_STEP: &str = include_str!("../../examples/tutorial/04-inventory-circuit-breaker.yaml");
const INVENTORY: &str = "inventory-service.default.svc.cluster.local";
/// Port inventory's sidecar serves (the ServiceEntry's target port).
const WORKLOAD_PORT: u16 = 8080;
/// Port the inventory application listens on, behind its sidecar.
const APPLICATION_PORT: u16 = 18080;
/// How long inventory takes to answer a slow request: every concurrent request arrives meanwhile.
const SLOW_MS: u64 = 1500;

fn mesh_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: inventory-service, namespace: default}}\n\
         spec:\n  hosts: [{INVENTORY}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {WORKLOAD_PORT}}}]\n\
         \x20 workloadSelector: {{labels: {{app: inventory}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: inventory-v1, namespace: default}}\n\
         spec: {{address: {}, serviceAccount: inventory, labels: {{app: inventory, version: v1}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: booking, namespace: default}}\n\
         spec: {{address: {}, serviceAccount: booking, labels: {{app: booking}}}}\n",
        loopback(3),
        loopback(2),
    )
}

/// Inventory: answers `?status=S` (default 200) after `?delay_ms=N`.
async fn start_inventory(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind inventory");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let query = request.uri().query().unwrap_or_default().to_owned();
                    let param = |name: &str| {
                        query.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
                    };
                    tokio::time::sleep(Duration::from_millis(param("delay_ms").unwrap_or(0))).await;
                    let status = param("status").and_then(|s| u16::try_from(s).ok()).unwrap_or(200);
                    let mut response = Response::new(Full::new(Bytes::from_static(b"stock\n")));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    Ok::<_, Infallible>(response)
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

/// One request to inventory through the caller's explicit proxy: (status, head in lower case).
async fn call(proxy: SocketAddr, query: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(proxy).await.expect("connect to the caller's sidecar");
    let request = format!(
        "GET http://inventory-service/stock?{query} HTTP/1.1\r\nhost: inventory-service\r\nconnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = text.split_once("\r\n\r\n").map_or(text.clone(), |(head, _)| head.to_owned());
    (status, head)
}

fn write(folder: &Path, name: &str, text: &str) {
    std::fs::write(folder.join(name), text).expect("write the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_circuit_breaker_rejects_concurrent_overflow_and_ejects_a_failing_host() {
    let folder = tempfile::tempdir().expect("tempdir");
    write(folder.path(), "mesh.yaml", &mesh_yaml());
    write(folder.path(), "04-inventory-circuit-breaker.yaml", TUTORIAL_STEP);
    let control_plane = SocketAddr::new(loopback(1), 15012);
    let _trellisd = start_trellisd(folder.path(), control_plane);
    start_inventory(SocketAddr::new(loopback(3), APPLICATION_PORT)).await;
    let application = Some((WORKLOAD_PORT, SocketAddr::new(loopback(3), APPLICATION_PORT)));
    let _sidecars = [
        start_sidecar_in("default", "booking", "app=booking", loopback(2), control_plane, None),
        start_sidecar_in("default", "inventory", "app=inventory,version=v1", loopback(3), control_plane, application),
    ];
    let caller = SocketAddr::new(loopback(2), 15080);
    let admin = SocketAddr::new(loopback(2), 15000);
    eventually("the caller's sidecar has the rule's limits", || async {
        let config = served_config(admin).await?;
        let cluster = config.clusters.iter().find(|c| c.service == INVENTORY).ok_or("no inventory cluster")?;
        let pool = cluster.connection_pool.as_ref().ok_or("no connection pool yet")?;
        let outlier = cluster.outlier_detection.as_ref().ok_or("no outlier detection yet")?;
        if pool.max_connections == Some(1) && outlier.base_ejection_time == Duration::from_secs(180) {
            Ok(())
        } else {
            Err(format!("{cluster:?}"))
        }
    })
    .await;
    eventually("inventory answers through the mesh", || async {
        match call(caller, "").await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // "With more than one concurrent request, some requests are rejected (503) by the caller's proxy":
    // one in service and at most one pending (a request stays pending until its own connection is
    // established, as in Envoy, so a second one may be rejected too, depending on timing) are served;
    // the others are answered 503 at once.
    let query = format!("delay_ms={SLOW_MS}");
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn({
                let query = query.clone();
                async move { call(caller, &query).await }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    let rejected =
        answers.iter().filter(|(status, head)| *status == 503 && head.contains("x-trellis-overloaded: true")).count();
    assert!((1..=2).contains(&served), "one or two are served: {answers:?}");
    assert_eq!(served + rejected, answers.len(), "the others are rejected by the caller's sidecar: {answers:?}");

    // "A host that returns one 5xx is ejected for 3 minutes", as the caller's sidecar shows it.
    assert_eq!(call(caller, "status=503").await.0, 503);
    let ejected_for = eventually("the caller's sidecar ejects inventory", || async {
        let (_, body) = get(admin, "/config_dump").await.ok_or("no admin answer")?;
        let dump: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let clusters = dump["clusterState"].as_array().ok_or("no cluster state")?;
        let cluster = clusters
            .iter()
            .find(|c| c["name"].as_str().is_some_and(|n| n.ends_with(INVENTORY)))
            .ok_or("no inventory cluster state")?;
        let endpoint = &cluster["endpoints"][0];
        match (endpoint["ejected"].as_bool(), endpoint["outlier"]["ejectedForMs"].as_u64()) {
            (Some(true), Some(ms)) => Ok(Duration::from_millis(ms)),
            _ => Err(cluster.to_string()),
        }
    })
    .await;
    assert!(
        ejected_for > Duration::from_secs(170) && ejected_for <= Duration::from_secs(180),
        "ejected for 3 minutes: {ejected_for:?} left"
    );
    // The only endpoint: ejected, it still takes traffic rather than failing every request.
    assert_eq!(call(caller, "").await.0, 200);
}
