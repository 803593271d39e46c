//! Booking's HTTP/1.1 client: GET requests to its dependencies, directly or through the explicit
//! proxy of [`ProxyEnv`] (absolute-form request line, `Host` kept), over a small pool of keep-alive
//! connections per address, each call bounded by one timeout that covers connecting and reading.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

use crate::outbound::{HttpUrl, ProxyEnv};

/// Largest answer body booking reads from a dependency.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Idle keep-alive connections kept per address.
pub const MAX_IDLE_PER_ADDRESS: usize = 16;

/// Why a dependency gave no answer.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("HTTP error talking to {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("cannot read the answer from {addr}: {reason}")]
    Body { addr: String, reason: String },
    #[error("request is not valid HTTP: {0}")]
    Request(#[from] http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A dependency's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Sender = SendRequest<Empty<Bytes>>;

/// The client; one per process, shared by all requests.
#[derive(Debug)]
pub struct Client {
    proxy: ProxyEnv,
    timeout: Duration,
    idle: Mutex<HashMap<(String, u16), Vec<Sender>>>,
}

impl Client {
    pub fn new(proxy: ProxyEnv, timeout: Duration) -> Self {
        Client { proxy, timeout, idle: Mutex::new(HashMap::new()) }
    }

    /// GETs `path_and_query` on `url`'s host with `headers` added, within the client's timeout.
    pub async fn get(
        &self,
        url: &HttpUrl,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Answer, CallError> {
        match tokio::time::timeout(self.timeout, self.get_now(url, path_and_query, headers)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    async fn get_now(
        &self,
        url: &HttpUrl,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Answer, CallError> {
        let (key, target) = match self.proxy.proxy_for(&url.host, url.port) {
            Some(proxy) => (proxy.clone(), url.absolute(path_and_query)),
            None => ((url.host.clone(), url.port), path_and_query.to_owned()),
        };
        let request = || -> Result<Request<Empty<Bytes>>, CallError> {
            let mut builder = Request::get(target.as_str()).header(header::HOST, url.authority());
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            Ok(builder.body(Empty::new())?)
        };
        let addr = display_addr(&key);
        // A pooled connection may have been closed by the other side meanwhile; a GET is safe to
        // send again on a fresh one.
        if let Some(mut sender) = self.checkout(&key).await
            && let Ok(response) = sender.send_request(request()?).await
        {
            return self.finish(key, sender, response, &addr).await;
        }
        let mut sender = connect(&key, &addr).await?;
        let response =
            sender.send_request(request()?).await.map_err(|source| CallError::Http { addr: addr.clone(), source })?;
        self.finish(key, sender, response, &addr).await
    }

    /// Reads the whole answer, then gives the connection back to the pool.
    async fn finish(
        &self,
        key: (String, u16),
        sender: Sender,
        response: http::Response<hyper::body::Incoming>,
        addr: &str,
    ) -> Result<Answer, CallError> {
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|err| CallError::Body { addr: addr.to_owned(), reason: err.to_string() })?
            .to_bytes();
        if !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let senders = idle.entry(key).or_default();
            if senders.len() < MAX_IDLE_PER_ADDRESS {
                senders.push(sender);
            }
        }
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    /// An idle connection to `key` that is ready for a request, if the pool has one.
    async fn checkout(&self, key: &(String, u16)) -> Option<Sender> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.get_mut(key).and_then(Vec::pop)?
            };
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }
}

async fn connect(key: &(String, u16), addr: &str) -> Result<Sender, CallError> {
    let stream = TcpStream::connect((key.0.as_str(), key.1))
        .await
        .map_err(|source| CallError::Connect { addr: addr.to_owned(), source })?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| CallError::Http { addr: addr.to_owned(), source })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "outbound connection ended with an error");
        }
    });
    Ok(sender)
}

fn display_addr((host, port): &(String, u16)) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A server on loopback that counts connections and answers each request with its request target
    /// and `Host` header; with `keep_alive` off it closes every connection after one answer.
    async fn server(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
                        let text = format!("{} {host}", req.uri());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.keep_alive(keep_alive);
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (addr, accepted)
    }

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).expect("valid URL")
    }

    #[tokio::test]
    async fn sequential_calls_reuse_one_keep_alive_connection() {
        let (addr, accepted) = server(true).await;
        let client = Client::new(ProxyEnv::default(), Duration::from_secs(5));
        let target = url(&format!("http://{addr}/api/v1/inventory"));
        for _ in 0..3 {
            let answer = client.get(&target, "/api/v1/inventory", &[]).await.expect("answer");
            assert_eq!(answer.body, format!("/api/v1/inventory {addr}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_without_an_error() {
        let (addr, accepted) = server(false).await;
        let client = Client::new(ProxyEnv::default(), Duration::from_secs(5));
        let target = url(&format!("http://{addr}/"));
        for _ in 0..3 {
            client.get(&target, "/", &[]).await.expect("every call is answered");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn through_a_proxy_the_request_line_is_absolute_and_the_host_is_the_targets() {
        let (addr, _) = server(true).await;
        let proxy = ProxyEnv { proxy: Some(("127.0.0.1".into(), addr.port())), ..ProxyEnv::default() };
        let client = Client::new(proxy, Duration::from_secs(5));
        let target = url("http://inventory-service:80/api/v1/inventory");
        let header = (HeaderName::from_static("end-user"), HeaderValue::from_static("jason"));
        let answer = client.get(&target, "/api/v1/inventory?fail=1", &[header]).await.expect("answer");
        assert_eq!(answer.body, "http://inventory-service/api/v1/inventory?fail=1 inventory-service");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_naming_the_address() {
        let client = Client::new(ProxyEnv::default(), Duration::from_secs(5));
        let err = client.get(&url("http://127.0.0.1:1/"), "/", &[]).await.expect_err("nothing listens on port 1");
        assert!(matches!(err, CallError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
