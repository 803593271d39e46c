//! The app's probes, served on the readiness port (15021) for the kubelet, which does not speak mutual
//! TLS. The injector rewrites each HTTP, TCP or gRPC probe of an app container into
//! `GET /app-health/<container>/livez|readyz|startupz` on 15021 and hands the original probe, its port
//! resolved to a number, in `TRELLIS_APP_PROBERS` (a JSON object keyed by that path). Here each path
//! runs its original probe against the app over loopback (the proxy's own traffic, UID 1337, is never
//! captured) and answers 200 when it passes and 503 when it does not, as the kubelet would judge it:
//! HTTP status 200-399, a TCP connection accepted, a gRPC health check answering SERVING.
//!
//! The probers are parsed once when the readiness router is built; a request costs one connection to
//! the app, like the kubelet's own probe.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::{Buf as _, Bytes};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::Error;

/// The environment variable the injector writes the original probes into.
pub const APP_PROBERS_ENV: &str = "TRELLIS_APP_PROBERS";
/// The kubelet's default probe timeout.
const DEFAULT_TIMEOUT_SECONDS: u64 = 1;
/// Where the app is probed: loopback, which the proxy reaches without capture.
const APP_HOST: &str = "127.0.0.1";
/// gRPC health: `grpc.health.v1.Health/Check`, and the `SERVING` value of its status enum.
const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
const GRPC_SERVING: u64 = 1;

/// One original probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prober {
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default)]
    pub grpc: Option<Grpc>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    pub port: u16,
    #[serde(default)]
    pub path: Option<String>,
    /// The `Host` header to send.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub http_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocket {
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grpc {
    pub port: u16,
    #[serde(default)]
    pub service: String,
}

/// Parses the value of [`APP_PROBERS_ENV`]: paths under `/app-health/` to their probes.
pub fn parse(text: &str) -> Result<BTreeMap<String, Prober>, Error> {
    let config = |message: String| Error::Config { origin: APP_PROBERS_ENV.to_owned(), message };
    let probers: BTreeMap<String, Prober> = serde_json::from_str(text).map_err(|err| config(err.to_string()))?;
    for (path, prober) in &probers {
        if !path.starts_with("/app-health/") {
            return Err(config(format!("{path:?} is not under /app-health/")));
        }
        let kinds = [prober.http_get.is_some(), prober.tcp_socket.is_some(), prober.grpc.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(config(format!("{path}: exactly one of httpGet, tcpSocket and grpc is needed")));
        }
    }
    Ok(probers)
}

/// The probe routes of the readiness port, from the environment (none when it is unset; a bad value
/// is logged and gives none, so the kubelet sees the probes fail).
pub fn router_from_env() -> Router {
    match std::env::var(APP_PROBERS_ENV) {
        Ok(text) => match parse(&text) {
            Ok(probers) => router(probers),
            Err(err) => {
                tracing::error!(%err, "app probes are not served");
                Router::new()
            }
        },
        Err(_) => Router::new(),
    }
}

/// One route per prober path.
pub fn router(probers: BTreeMap<String, Prober>) -> Router {
    let mut router = Router::new();
    for (path, prober) in probers {
        let prober = Arc::new(prober);
        router = router.route(&path, get(move || probe(prober.clone())));
    }
    router
}

async fn probe(prober: Arc<Prober>) -> StatusCode {
    let timeout = Duration::from_secs(prober.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS).max(1));
    let outcome = tokio::time::timeout(timeout, run(&prober)).await.unwrap_or_else(|_| Err("timed out".to_owned()));
    match outcome {
        Ok(()) => StatusCode::OK,
        Err(reason) => {
            tracing::debug!(reason, "app probe failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn run(prober: &Prober) -> Result<(), String> {
    if let Some(http) = &prober.http_get {
        return http_probe(http).await;
    }
    if let Some(tcp) = &prober.tcp_socket {
        return connect(tcp.port).await.map(drop);
    }
    if let Some(grpc) = &prober.grpc {
        return grpc_probe(grpc).await;
    }
    Err("no probe".to_owned())
}

async fn connect(port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((APP_HOST, port)).await.map_err(|err| format!("connecting to port {port}: {err}"))
}

async fn http_probe(http: &HttpGet) -> Result<(), String> {
    let stream = connect(http.port).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let host = http.host.clone().unwrap_or_else(|| format!("{APP_HOST}:{}", http.port));
    let mut request = hyper::Request::get(http.path.as_deref().unwrap_or("/"))
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "kube-probe/trellis");
    for (name, value) in &http.http_headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|err| err.to_string())?;
    let response = sender.send_request(request).await.map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    if (200..400).contains(&status) { Ok(()) } else { Err(format!("HTTP status {status}")) }
}

async fn grpc_probe(grpc: &Grpc) -> Result<(), String> {
    let stream = connect(grpc.port).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("http://{APP_HOST}:{}{GRPC_HEALTH_PATH}", grpc.port))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .body(Full::new(grpc_frame(&health_request(&grpc.service))))
        .map_err(|err| err.to_string())?;
    let response = sender.send_request(request).await.map_err(|err| err.to_string())?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|err| err.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers.get("grpc-status").or_else(|| parts.headers.get("grpc-status"));
    let status = status.and_then(|s| s.to_str().ok()).unwrap_or("missing");
    if status != "0" {
        return Err(format!("grpc-status {status}"));
    }
    match serving_status(collected.to_bytes()) {
        Some(GRPC_SERVING) => Ok(()),
        other => Err(format!("health status {other:?}, not SERVING")),
    }
}

/// `HealthCheckRequest { service = 1 }` in protobuf.
fn health_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    message
}

/// A gRPC message frame: no compression, big-endian length, the message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &mut Bytes) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !bytes.has_remaining() {
            return None;
        }
        let byte = bytes.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `status` (field 1) of the `HealthCheckResponse` in a gRPC frame; 0 (UNKNOWN) when absent.
fn serving_status(mut body: Bytes) -> Option<u64> {
    if body.remaining() < 5 || body.get_u8() != 0 {
        return None;
    }
    let length = body.get_u32() as usize;
    if body.remaining() < length {
        return None;
    }
    let mut message = body.split_to(length);
    let mut status = 0;
    while message.has_remaining() {
        let key = get_varint(&mut message)?;
        match key & 7 {
            0 => {
                let value = get_varint(&mut message)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let length = usize::try_from(get_varint(&mut message)?).ok()?;
                if message.remaining() < length {
                    return None;
                }
                message.advance(length);
            }
            _ => return None,
        }
    }
    Some(status)
}
