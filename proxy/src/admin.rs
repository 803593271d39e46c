//! The proxy's HTTP endpoints beside the data path: admin on loopback (`/config_dump`, `/logging`,
//! `/quitquitquit`, `/certs`; `/config_dump` also shows each cluster's circuit-breaker counters and its
//! endpoints' outlier state under `clusterState`), readiness (`/healthz/ready`) and Prometheus (`/stats/prometheus`). Each is an
//! axum router built by a function, so tests call them without sockets.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::state::{Compiled, Store};

/// Changes the log filter at runtime; returns the error text for a bad filter.
pub type SetLogFilter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin endpoints can see and change.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub drain: Drain,
    pub set_log_filter: SetLogFilter,
    /// The workload's current certificate, shown at `/certs`.
    pub identity: crate::tls::IdentityWatch,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Admin endpoints (bind to loopback only).
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/config_dump", get(config_dump))
        .route("/logging", post(logging).get(logging))
        .route("/quitquitquit", post(quit))
        .route("/certs", get(certs))
        .route(crate::wait::READINESS_PATH, get(ready))
        .route(trellis_api::ports::PROMETHEUS_PATH, get(prometheus))
        .with_state(state)
}

/// The readiness endpoint, and the app's probes the injector moved here (`crate::probes`).
pub fn readiness_router(state: AdminState) -> Router {
    Router::new()
        .route(crate::wait::READINESS_PATH, get(ready))
        .with_state(state)
        .merge(crate::probes::router_from_env())
}

/// The Prometheus endpoint.
pub fn prometheus_router(state: AdminState) -> Router {
    Router::new().route(trellis_api::ports::PROMETHEUS_PATH, get(prometheus)).with_state(state)
}

async fn config_dump(State(state): State<AdminState>) -> Response {
    let current = state.store.current();
    let body = serde_json::json!({
        "settings": &*state.settings,
        "config": current.as_ref().map(|c| &*c.config),
        "lastError": state.store.last_error(),
        "draining": state.drain.watch().is_draining(),
        "clusterState": current.as_ref().map(|c| cluster_state(c)),
    });
    axum::Json(body).into_response()
}

/// The live state of each cluster with circuit breaking or outlier detection: the breaker's counters
/// and each endpoint's load, ejection mark and outlier counts.
fn cluster_state(compiled: &Compiled) -> Vec<serde_json::Value> {
    compiled
        .clusters
        .iter()
        .filter(|c| c.breaker.is_some() || c.outlier.is_some())
        .map(|cluster| {
            let endpoints: Vec<serde_json::Value> = cluster
                .balancer
                .loads()
                .into_iter()
                .map(|load| {
                    serde_json::json!({
                        "address": load.addr.to_string(),
                        "inFlight": load.in_flight,
                        "ejected": load.ejected,
                        "outlier": load.health,
                    })
                })
                .collect();
            serde_json::json!({
                "name": cluster.config.name,
                "circuitBreaker": cluster.breaker.as_ref().map(|b| b.load()),
                "endpoints": endpoints,
            })
        })
        .collect()
}

/// The current workload certificate: its SPIFFE ID, serial (hex), validity and renewal time (UTC), or
/// an error while there is none.
async fn certs(State(state): State<AdminState>) -> Response {
    let current = state.identity.borrow().clone();
    let Some(identity) = current else {
        return axum::Json(serde_json::json!({"spiffeId": null, "error": "no certificate yet"})).into_response();
    };
    let serial = x509_parser::parse_x509_certificate(identity.chain[0].as_ref())
        .map(|(_, cert)| cert.raw_serial_as_string())
        .unwrap_or_default();
    let time = |at: std::time::SystemTime| {
        let seconds = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        x509_parser::time::ASN1Time::from_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX))
            .map(|t| t.to_string())
            .ok()
    };
    axum::Json(serde_json::json!({
        "spiffeId": identity.spiffe_id,
        "serial": serial,
        "notBefore": time(identity.not_before),
        "notAfter": time(identity.not_after),
        "renewAt": time(identity.renew_at()),
        "chainLength": identity.chain.len(),
        "roots": identity.roots.len(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct LoggingQuery {
    level: Option<String>,
}

async fn logging(State(state): State<AdminState>, Query(query): Query<LoggingQuery>) -> Response {
    let Some(level) = query.level else {
        return (StatusCode::BAD_REQUEST, "usage: /logging?level=<filter>, e.g. debug or trellis_proxy=trace\n")
            .into_response();
    };
    match (state.set_log_filter)(&level) {
        Ok(()) => (StatusCode::OK, format!("log filter is now {level:?}\n")).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, format!("invalid log filter {level:?}: {err}\n")).into_response(),
    }
}

async fn quit(State(state): State<AdminState>) -> Response {
    tracing::info!("draining on /quitquitquit");
    state.drain.start();
    (StatusCode::OK, "draining\n").into_response()
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.drain.watch().is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if state.store.is_loaded() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n").into_response()
    }
}

async fn prometheus(State(state): State<AdminState>) -> Response {
    let headers = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (headers, state.metrics.encode()).into_response()
}

/// Serves `router` on `listener` until draining completes the process.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    if let Err(err) = axum::serve(listener, router).await {
        tracing::warn!(error = %err, "admin server ended");
    }
}
