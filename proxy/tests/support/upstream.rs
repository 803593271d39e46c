//! Upstream servers for tests: an HTTP echo server (HTTP/1.1 and HTTP/2, gRPC-style trailers, protocol
//! upgrades), a TCP echo server with half-close, and a server-speaks-first server.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// A pooled HTTP client for tests (no Nagle delay, so small requests go out at once).
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// A request or response body of `bytes`.
pub fn body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Starts an HTTP echo server named `name` on `addr`; returns its bound address.
///
/// Every response carries `x-upstream: <name>`, `x-seen-version`, `x-seen-path` (with query),
/// `x-seen-host`, and echoes the request body back, streaming. Requests with content-type
/// `application/grpc` get their body echoed and trailers `grpc-status` (from the request header
/// `x-want-grpc-status`, default 0). `Upgrade` requests get `101` and an echoing tunnel.
pub async fn http_echo(addr: SocketAddr, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind echo");
    let bound = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(req, name));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    bound
}

fn seen_headers(req: &Request<Incoming>, name: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let text = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("?"));
    headers.insert("x-upstream", text(name.to_owned()));
    headers.insert("x-seen-version", text(format!("{:?}", req.version())));
    headers.insert("x-seen-path", text(req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default()));
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    headers.insert("x-seen-host", text(host));
    for forwarded in [
        "x-request-id",
        "x-added",
        "trellis-orig-proto",
        "connection",
        "keep-alive",
        "x-forwarded-client-cert",
        "authorization",
    ] {
        if let Some(value) = req.headers().get(forwarded) {
            headers
                .insert(HeaderName::from_bytes(format!("x-seen-{forwarded}").as_bytes()).expect("name"), value.clone());
        }
    }
    headers
}

use http::header::HeaderName;

async fn echo(mut req: Request<Incoming>, name: &'static str) -> Result<Response<Body>, Infallible> {
    let headers = seen_headers(&req, name);
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert("connection", HeaderValue::from_static("upgrade"));
        response
            .headers_mut()
            .insert("upgrade", req.headers().get("upgrade").cloned().unwrap_or(HeaderValue::from_static("websocket")));
        response.headers_mut().extend(headers);
        return Ok(response);
    }
    let grpc = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let status_code =
        req.headers().get("x-want-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(200u16);
    let grpc_status = req.headers().get("x-want-grpc-status").cloned().unwrap_or(HeaderValue::from_static("0"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(4);
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data()
                        && tx.send(Ok(Frame::data(data))).await.is_err()
                    {
                        return;
                    }
                }
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
        }
        if grpc {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", grpc_status);
            trailers.insert("grpc-message", HeaderValue::from_static("from-upstream"));
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    *response.status_mut() = StatusCode::from_u16(status_code).unwrap_or(StatusCode::OK);
    response.headers_mut().extend(headers);
    if grpc {
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    Ok(response)
}

/// A TCP echo server: echoes until the client half-closes, then sends `bye` and closes its side.
pub async fn tcp_echo(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind tcp echo");
    let bound = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.write_all(b"bye").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    bound
}

/// A server that speaks first: writes `greeting` as soon as a client connects, then echoes.
pub async fn server_first(addr: SocketAddr, greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind server-first");
    let bound = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                if stream.write_all(greeting).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    bound
}

/// An HTTP server that reads each request's whole body and trailers before answering: the body
/// echoed, header `x-seen-trailers` listing the request's trailers (`name=value`, comma-separated,
/// `none` without any), and a response trailer `x-upstream-trailer: sent` announced in `Trailer`.
pub async fn trailer_echo(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind trailer echo");
    let bound = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(trailers_seen);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    bound
}

async fn trailers_seen(req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let collected = req.into_body().collect().await?;
    let seen = collected
        .trailers()
        .map(|t| t.iter().map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?"))).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| "none".to_owned());
    let body = collected.to_bytes();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-upstream-trailer", HeaderValue::from_static("sent"));
    let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
    response
        .headers_mut()
        .insert("x-seen-trailers", HeaderValue::from_str(&seen).unwrap_or(HeaderValue::from_static("?")));
    response.headers_mut().insert("trailer", HeaderValue::from_static("x-upstream-trailer"));
    Ok(response)
}
