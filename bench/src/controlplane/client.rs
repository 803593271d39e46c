//! A simulated proxy: one HTTP/2 connection to `trellisd`, one config stream on it, a hello naming a
//! workload, and an acknowledgement of every version it receives, sent as soon as the message is read.
//!
//! It does not apply configs (a real proxy would compile them; that cost is the proxy's, not the
//! control plane's): it reads only each message's kind, version and which sections and clusters a
//! delta carries, and records when each message arrived and how many bytes it had in a shared
//! [`Recorder`], from which the driver works out latencies and bytes per change.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Request;
use hyper::body::Frame;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use trellis_api::push::{CONTENT_TYPE, ClientMessage, Hello, LineDecoder, STREAM_PATH, decode, encode};

/// Longest message accepted (a snapshot of a mesh where every proxy sees everything is a few MB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What a proxy received, as the bench needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub proxy: usize,
    pub at: Instant,
    /// Bytes of the message's line, newline included.
    pub bytes: usize,
    pub snapshot: bool,
    pub version: String,
    /// Clusters a delta adds or replaces, and removes.
    pub clusters: usize,
    pub removed_clusters: usize,
    /// Whether a delta replaces the outbound or inbound section.
    pub outbound: bool,
    pub inbound: bool,
}

/// Every message every proxy received, in arrival order, and how many per proxy.
#[derive(Debug)]
pub struct Recorder {
    messages: Mutex<Vec<Received>>,
    counts: Vec<AtomicU64>,
}

impl Recorder {
    pub fn new(proxies: usize) -> Self {
        Self { messages: Mutex::default(), counts: (0..proxies).map(|_| AtomicU64::new(0)).collect() }
    }

    fn record(&self, received: Received) {
        let proxy = received.proxy;
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(received);
        if let Some(count) = self.counts.get(proxy) {
            count.fetch_add(1, Ordering::Release);
        }
    }

    /// How many messages proxy `proxy` received so far.
    pub fn count(&self, proxy: usize) -> u64 {
        self.counts.get(proxy).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Messages received in total.
    pub fn total(&self) -> usize {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The messages from position `from` on.
    pub fn since(&self, from: usize) -> Vec<Received> {
        let messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        messages.get(from..).map(<[Received]>::to_vec).unwrap_or_default()
    }
}

/// The parts of a server message the bench reads; serde skips the rest without building it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Message {
    Snapshot(Versioned),
    Delta(DeltaSummary),
}

#[derive(Deserialize)]
struct Versioned {
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaSummary {
    version: String,
    #[serde(default)]
    clusters: Vec<IgnoredAny>,
    #[serde(default)]
    removed_clusters: Vec<IgnoredAny>,
    #[serde(default)]
    outbound: Option<IgnoredAny>,
    #[serde(default)]
    inbound: Option<IgnoredAny>,
}

/// Runs proxy `proxy`'s stream until it ends; every message is recorded and acknowledged.
pub async fn run(address: SocketAddr, proxy: usize, hello: Hello, recorder: Arc<Recorder>) -> Result<()> {
    let tcp = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(tcp))
        .await
        .context("HTTP/2 handshake")?;
    let connection = tokio::spawn(connection);
    let (answers, mut outgoing) = mpsc::channel::<Bytes>(4);
    answers.send(Bytes::from(encode(&ClientMessage::Hello(hello))?)).await?;
    let frames = futures_util::stream::poll_fn(move |cx| {
        outgoing.poll_recv(cx).map(|line| line.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))))
    });
    let request = Request::post(format!("http://{address}{STREAM_PATH}"))
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(StreamBody::new(frames))?;
    let response = sender.send_request(request).await.context("opening the stream")?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("proxy {proxy}: refused with {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    let mut body = response.into_body();
    let mut decoder = LineDecoder::new(MAX_MESSAGE_BYTES);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("reading the stream")?.into_data() else { continue };
        decoder.push(&data);
        while let Some(line) = decoder.next_line()? {
            let at = Instant::now();
            let bytes = line.len() + 1;
            let received = match decode::<Message>(line)? {
                Message::Snapshot(s) => Received {
                    proxy,
                    at,
                    bytes,
                    snapshot: true,
                    version: s.version,
                    clusters: 0,
                    removed_clusters: 0,
                    outbound: false,
                    inbound: false,
                },
                Message::Delta(d) => Received {
                    proxy,
                    at,
                    bytes,
                    snapshot: false,
                    version: d.version,
                    clusters: d.clusters.len(),
                    removed_clusters: d.removed_clusters.len(),
                    outbound: d.outbound.is_some(),
                    inbound: d.inbound.is_some(),
                },
            };
            let ack = encode(&ClientMessage::Ack { version: received.version.clone() })?;
            answers.send(Bytes::from(ack)).await.context("the stream closed")?;
            recorder.record(received);
        }
    }
    connection.abort();
    bail!("proxy {proxy}: the control plane ended the stream")
}
