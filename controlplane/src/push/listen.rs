//! Accepting connections and routing requests: HTTP/2 for the stream (prior knowledge, as gRPC
//! does), HTTP/1.1 too so `curl` and the CLI can read the status list and, for debugging, the config
//! last sent to a proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use trellis_api::ca::CERTIFICATES_PATH;
use trellis_api::push::{CONFIG_PATH, CONFIG_PROXY_PARAM, STATUS_PATH, STREAM_PATH};

use super::body::{Body, Pieces};
use super::stream::{self, text};
use super::tls::TLS_HANDSHAKE_RECORD;
use super::{PushServer, RECEIVE_WINDOW_BYTES, SEND_BUFFER_BYTES, SHUTDOWN_GRACE};

/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl PushServer {
    /// Accepts connections on `listener` until [`PushServer::shutdown`]: TLS when the server has a
    /// certificate (plain text then only from loopback peers), else plain text.
    pub async fn serve(&self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.shared.stopping() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Messages are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    tokio::spawn(async move { server.accept(stream, peer).await });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a push connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Tells TLS from plain text by the first byte, then serves the connection.
    async fn accept(&self, stream: TcpStream, peer: SocketAddr) {
        let Some(tls) = self.shared.options.tls.clone() else {
            return self.serve_connection(stream, peer).await;
        };
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(self.shared.options.hello_timeout, stream.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {
                let handshake = tokio::time::timeout(self.shared.options.hello_timeout, tls.acceptor().accept(stream));
                match Box::pin(handshake).await {
                    // Boxed: a plain-text connection's task is not sized for a TLS one.
                    Ok(Ok(stream)) => Box::pin(self.serve_connection(stream, peer)).await,
                    Ok(Err(err)) => tracing::debug!(%peer, error = %err, "push TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "push TLS handshake timed out"),
                }
            }
            Ok(Ok(1)) if peer.ip().is_loopback() => self.serve_connection(stream, peer).await,
            Ok(Ok(1)) => {
                tracing::warn!(%peer, "plain-text push connection from another machine refused: use TLS (--discovery-ca)");
            }
            _ => tracing::debug!(%peer, "push connection closed before its first byte"),
        }
    }

    /// Serves one connection from `peer` until it closes or the server shuts down. `io` is any byte
    /// stream: TCP, or TLS over TCP.
    pub async fn serve_connection<I>(&self, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let service = hyper::service::service_fn(move |request| {
            let server = PushServer { shared: shared.clone() };
            async move { Ok::<_, Infallible>(server.route(peer, request).await) }
        });
        let options = &self.shared.options;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .initial_stream_window_size(RECEIVE_WINDOW_BYTES)
            .initial_connection_window_size(RECEIVE_WINDOW_BYTES)
            .max_send_buf_size(SEND_BUFFER_BYTES);
        builder.http1().timer(TokioTimer::new()).header_read_timeout(options.hello_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = self.shared.stopping() => {
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await.unwrap_or(Ok(()))
            }
        };
        if let Err(err) = result {
            tracing::debug!(%peer, error = %err, "push connection ended");
        }
    }

    async fn route(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            // Boxed, as the CA's answer below: the future of the connection's request task is as large
            // as the largest it may await, and it lives as long as the stream (~4 KB per proxy).
            (&Method::POST, STREAM_PATH) => Box::pin(stream::open(self.shared.clone(), peer, request)).await,
            (&Method::GET, STATUS_PATH) => json(&self.statuses()),
            (&Method::POST, CERTIFICATES_PATH) => pieces(match &self.shared.options.ca {
                Some(ca) => Box::pin(ca.handle(request)).await,
                None => crate::ca::not_served(),
            }),
            (&Method::GET, CONFIG_PATH) => {
                let query = request.uri().query().unwrap_or_default();
                let Some(id) = query_param(query, CONFIG_PROXY_PARAM) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("usage: {CONFIG_PATH}?{CONFIG_PROXY_PARAM}=<proxy id>"),
                    );
                };
                match self.shared.registry.config_of(&id) {
                    Some(config) => json(&config),
                    None => text(StatusCode::NOT_FOUND, format!("no proxy {id:?} is connected; see {STATUS_PATH}")),
                }
            }
            (method, path @ (STREAM_PATH | STATUS_PATH | CONFIG_PATH | CERTIFICATES_PATH)) => {
                text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"))
            }
            (_, path) => text(StatusCode::NOT_FOUND, format!("no such path {path:?}; try {STATUS_PATH}")),
        }
    }
}

/// A response of the CA (a body of whole bytes) as one of the push server.
fn pieces(response: Response<crate::ca::Body>) -> Response<Body> {
    response.map(|body| body.map_frame(|frame| frame.map_data(Pieces::from)).boxed())
}

/// `value` as an indented JSON response.
fn json(value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(json) => {
            let mut response = Response::new(Full::new(Pieces::from(Bytes::from(json))).boxed());
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            response
        }
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// The first value of the query parameter `name`, percent-decoded (`+` is a space); `None` when the
/// parameter is absent, empty, or not UTF-8 once decoded.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((key, value)) if key == name => Some(value),
        _ => None,
    })?;
    let mut bytes = Vec::with_capacity(raw.len());
    let mut input = raw.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let (high, low) = (input.next()?, input.next()?);
                let hex = |b: u8| (b as char).to_digit(16);
                bytes.push(u8::try_from(hex(high)? * 16 + hex(low)?).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok().filter(|value| !value.is_empty())
}
