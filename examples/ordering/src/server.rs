//! The HTTP server every role runs: the role's API path (and everything under it) for GET and POST,
//! `/healthz`, a JSON 404 elsewhere, and on every response the `x-ordering-service` and
//! `x-ordering-version` headers. Inventory and shipping apply the faults a request asks for
//! ([`crate::faults`]); booking asks both of them ([`crate::booking`]).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::faults::Faults;
use crate::headers::{SERVICE_HEADER, VERSION_HEADER, echo};
use crate::settings::{HEALTH_PATH, Role, Settings};

/// What every request handler shares.
#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub client: Client,
}

/// The routes of `app`'s role.
pub fn router(app: Arc<App>) -> Router {
    let role = app.settings.role;
    let api: MethodRouter<Arc<App>> = match role {
        Role::Booking => get(booking).post(booking),
        Role::Inventory | Role::Shipping => get(backend).post(backend),
    };
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(role.path(), api.clone())
        .route(&format!("{}/{{*rest}}", role.path()), api)
        .fallback(not_found)
        .layer(from_fn_with_state(app.clone(), identify))
        .with_state(app)
}

/// The fields every answer starts with: who answered and what it was asked.
fn identity(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("service".into(), app.settings.role.name().into());
    out.insert("version".into(), app.settings.version.as_str().into());
    if let Some(instance) = &app.settings.instance {
        out.insert("instance".into(), instance.clone().into());
    }
    out.insert("method".into(), method.as_str().into());
    out.insert("path".into(), uri.path().into());
    if let Some(query) = uri.query() {
        out.insert("query".into(), query.into());
    }
    out.insert("received".into(), Value::Object(echo(headers)));
    out
}

async fn booking(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let identity = identity(&app, &method, &uri, &headers);
    let settings = &app.settings;
    let query = uri.query().unwrap_or("");
    let (status, body) =
        crate::booking::book(&app.client, &settings.inventory, &settings.shipping, query, &headers, identity).await;
    (status, Json(body)).into_response()
}

async fn backend(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut body = identity(&app, &method, &uri, &headers);
    let faults = match Faults::parse(uri.query().unwrap_or("")) {
        Ok(faults) => faults,
        Err(err) => {
            body.insert("error".into(), err.to_string().into());
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
        body.insert("delayedMs".into(), u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).into());
    }
    if let Some(status) = faults.failure_for(fastrand::u8(0..100)) {
        body.insert("error".into(), "failure injected by the request's query parameters".into());
        return (status, Json(body)).into_response();
    }
    (StatusCode::OK, Json(body)).into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let mut body = Map::new();
    body.insert("service".into(), app.settings.role.name().into());
    body.insert("version".into(), app.settings.version.as_str().into());
    body.insert("status".into(), "ok".into());
    (StatusCode::OK, Json(body)).into_response()
}

async fn not_found(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut body = identity(&app, &method, &uri, &headers);
    let role = app.settings.role;
    let error = format!("no route for {}; {} serves {} and {HEALTH_PATH}", uri.path(), role.name(), role.path());
    body.insert("error".into(), error.into());
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Adds the identity headers to every response and logs the request.
async fn identify(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(SERVICE_HEADER, HeaderValue::from_static(app.settings.role.name()));
    headers.insert(VERSION_HEADER, HeaderValue::from_static(app.settings.version.as_str()));
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis();
    if path == HEALTH_PATH {
        tracing::debug!(%method, path, status, ms, "request");
    } else {
        tracing::info!(%method, path, status, ms, "request");
    }
    response
}
