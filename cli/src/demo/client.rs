//! The demo's HTTP client: plain HTTP/1.1 with pooled connections (hyper-util), each request bounded
//! by a timeout, answers collected whole into [`Answer`]s; and a load driver that sends many bookings
//! with bounded concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::checks::{Answer, Reply};

/// How long one request may take before it counts as unanswered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled HTTP/1.1 client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Http { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl Http {
    /// `GET url` with `headers`; the answer, or why there was none.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).map_err(|e| format!("bad request to {url}: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| describe_error(&e))?;
            let status = response.status().as_u16();
            let mut names = std::collections::BTreeMap::new();
            for (name, value) in response.headers() {
                if let Ok(value) = value.to_str() {
                    names.entry(name.as_str().to_owned()).or_insert_with(|| value.to_owned());
                }
            }
            let body = response.into_body().collect().await.map_err(|e| format!("reading the body: {e}"))?;
            Ok(Answer { status, headers: names, body: body.to_bytes().to_vec() })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
        }
    }

    /// `GET url` as JSON, for the control plane's and proxies' endpoints.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let answer = self.get(url, &[]).await?;
        if answer.status != 200 {
            return Err(format!("{url} answered {}", answer.status));
        }
        serde_json::from_slice(&answer.body).map_err(|e| format!("{url} did not answer JSON: {e}"))
    }

    /// Sends `count` requests to `url` (with `headers`), at most `concurrency` at a time, and returns
    /// what each observed, in completion order.
    pub async fn replies(&self, url: &str, headers: &[(&str, &str)], count: usize, concurrency: usize) -> Vec<Reply> {
        let next = Arc::new(AtomicUsize::new(0));
        let headers: Arc<Vec<(String, String)>> =
            Arc::new(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency.clamp(1, count.max(1)) {
            let (http, url, next, headers) = (self.clone(), url.to_owned(), next.clone(), headers.clone());
            workers.spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    out.push(Reply::from_result(http.get(&url, &pairs).await));
                }
                out
            });
        }
        let mut replies = Vec::with_capacity(count);
        while let Some(done) = workers.join_next().await {
            match done {
                Ok(batch) => replies.extend(batch),
                Err(err) => replies.push(Reply { error: Some(format!("load task failed: {err}")), ..Reply::default() }),
            }
        }
        replies
    }
}

/// The innermost cause of a client error (hyper-util's outer message is only "client error").
fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
