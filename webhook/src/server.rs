//! The webhook's HTTPS server: an axum router (`POST /inject` for `AdmissionReview` v1, `GET /healthz`,
//! `GET /metrics`) served over rustls with the reloading certificate of [`crate::tls`]. Bodies over
//! [`MAX_REVIEW_BYTES`] are refused before they are read in full; a body that is not a review is
//! answered 400 with the reason; every answered review is counted by result and timed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::review::{self, Context, Outcome};
use crate::tls::ReloadingCert;

/// trellisd's webhook port (Istio's istiod uses the same).
pub const DEFAULT_PORT: u16 = trellis_api::ports::WEBHOOK;
/// Largest review accepted: the API server stores objects of at most 1.5 MiB, and a CREATE review
/// carries one object plus a little envelope.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const JSON: &str = "application/json";

/// What the handlers share.
#[derive(Clone)]
pub struct Webhook {
    context: Arc<dyn Context>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn new(context: Arc<dyn Context>) -> Webhook {
        Webhook { context, metrics: Arc::new(Metrics::new()) }
    }

    /// The routes, without a socket (tests call it with `oneshot`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/inject", post(inject))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
            .with_state(self.clone())
    }
}

async fn inject(State(webhook): State<Webhook>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            webhook.metrics.record(Outcome::Invalid, started.elapsed());
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the review is larger than {MAX_REVIEW_BYTES} bytes")
            } else {
                rejection.body_text()
            };
            tracing::warn!(%status, message, "review refused");
            return (status, message).into_response();
        }
    };
    match review::review(&body, webhook.context.as_ref()) {
        Ok((answer, outcome)) => {
            webhook.metrics.record(outcome, started.elapsed());
            ([(header::CONTENT_TYPE, JSON)], answer).into_response()
        }
        Err(message) => {
            webhook.metrics.record(Outcome::Invalid, started.elapsed());
            tracing::warn!(message, "not a review");
            (StatusCode::BAD_REQUEST, message).into_response()
        }
    }
}

async fn metrics(State(webhook): State<Webhook>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], webhook.metrics.encode()).into_response()
}

/// Serves `router` over TLS with `cert` on `listener` until `shutdown` completes; connections
/// already open finish on their own.
pub async fn serve_tls(
    listener: TcpListener,
    cert: Arc<ReloadingCert>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(cert.server_config());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if let Err(err) =
                auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
}
