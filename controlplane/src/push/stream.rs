//! One proxy's stream: the hello, the snapshot, then a delta per change and the proxy's answers.
//!
//! A task per stream owns the request body (the proxy's messages) and the sending half of the response
//! body, a channel of one message: while the proxy does not read, the task waits instead of computing
//! configs nobody takes, and when it reads again it gets one delta covering everything since.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode, header};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use trellis_api::push::{CONTENT_TYPE, ClientMessage, Hello, LineDecoder, decode};

use super::body::{Body, Pieces};
use super::encode::{self, Line, line_len};
use super::registry::Registered;
use super::{MAX_CLIENT_MESSAGE_BYTES, Shared, View};

/// A short text response.
pub(super) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(Full::new(Pieces::from(Bytes::from(message))).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Answers `POST /v1/stream`: reads the hello, sends the snapshot and leaves the rest to a task.
pub(super) async fn open(shared: Arc<Shared>, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let mut body = request.into_body();
    let mut decoder = LineDecoder::new(MAX_CLIENT_MESSAGE_BYTES);
    let first = tokio::time::timeout(shared.options.hello_timeout, next_message(&mut body, &mut decoder)).await;
    let hello = match first {
        Ok(Ok(Some(ClientMessage::Hello(hello)))) => Arc::new(hello),
        Ok(Ok(Some(_))) => return text(StatusCode::BAD_REQUEST, "the first message of a stream must be a hello"),
        Ok(Ok(None)) => return text(StatusCode::BAD_REQUEST, "the stream ended before its hello"),
        Ok(Err(err)) => return text(StatusCode::BAD_REQUEST, err),
        Err(_) => {
            let waited = trellis_api::duration::format(shared.options.hello_timeout);
            return text(StatusCode::REQUEST_TIMEOUT, format!("no hello within {waited}"));
        }
    };
    let mut generations = shared.source.subscribe();
    let generation = *generations.borrow_and_update();
    let computed = shared.compute(&hello, generation, |view| {
        let snapshot = encode::snapshot(&view);
        (view, snapshot)
    });
    let (view, snapshot) = match computed.await {
        Ok(computed) => computed,
        Err(err) => {
            tracing::warn!(proxy = %hello.node.id, error = %err, "no config for a connecting proxy");
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("no config for proxy {:?}: {err}", hello.node.id));
        }
    };
    let snapshot = match snapshot {
        Ok(line) => line,
        Err(err) => return text(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let registered = shared.registry.register(hello.clone(), peer);
    let view = Arc::new(view);
    registered.entry.sent(&view, line_len(&snapshot));
    let (tx, mut rx) = mpsc::channel::<Line>(1);
    if tx.try_send(snapshot).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "the stream closed before its snapshot");
    }
    tracing::info!(proxy = %hello.node.id, %peer, version = %view.version, "proxy connected");
    let stream = Stream { shared, hello, registered, view, tx };
    tokio::spawn(stream.run(body, decoder, generations));
    // Each line goes out as one data frame of its pieces (shared pieces are not copied).
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|line| line.map(|line| Ok::<_, Infallible>(Frame::data(Pieces::from(line)))))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The next message in `body`, or `None` at its end.
async fn next_message(body: &mut Incoming, decoder: &mut LineDecoder) -> Result<Option<ClientMessage>, String> {
    loop {
        if let Some(line) = decoder.next_line().map_err(|e| e.to_string())? {
            return decode(line).map(Some).map_err(|e| e.to_string());
        }
        match body.frame().await {
            None if decoder.has_partial_line() => return Err("the stream ended inside a message".into()),
            None => return Ok(None),
            Some(Err(err)) => return Err(format!("reading the stream: {err}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
        }
    }
}

/// One open stream.
struct Stream {
    shared: Arc<Shared>,
    hello: Arc<Hello>,
    registered: Registered,
    /// What the proxy was last sent (shared with its registry entry, for `GET /v1/config`).
    view: Arc<View>,
    tx: mpsc::Sender<Line>,
}

impl Stream {
    async fn run(mut self, mut body: Incoming, mut decoder: LineDecoder, mut generations: watch::Receiver<u64>) {
        // Without a source to follow, the stream stays open on the config last sent.
        let mut following = true;
        let ended: String = loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    None => break "the proxy ended its stream".into(),
                    Some(Err(err)) => break format!("reading the stream: {err}"),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            decoder.push(&data);
                            if let Err(reason) = Box::pin(self.answer(&mut decoder)).await {
                                break reason;
                            }
                        }
                    }
                },
                changed = generations.changed(), if following => {
                    if changed.is_err() {
                        tracing::warn!(proxy = %self.hello.node.id, "the config source is gone; no more updates");
                        following = false;
                        continue;
                    }
                    // Boxed, as the futures below: the task of a stream is as large as the largest
                    // future it may await, and it lives as long as the stream, idle nearly always.
                    Box::pin(self.debounce(&mut generations)).await;
                    let generation = *generations.borrow_and_update();
                    if let Err(reason) = Box::pin(self.push(generation)).await {
                        break reason;
                    }
                },
                () = self.tx.closed() => break "the proxy went away".into(),
                () = self.shared.stopping() => break "the server is stopping".into(),
            }
        };
        tracing::info!(proxy = %self.hello.node.id, reason = %ended, "config stream ended");
    }

    /// Waits until the generation has been still for the debounce time, or the longest delay passed.
    async fn debounce(&self, generations: &mut watch::Receiver<u64>) {
        let options = &self.shared.options;
        let deadline = Instant::now() + options.max_delay;
        loop {
            let wake = (Instant::now() + options.debounce).min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => return,
                changed = generations.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Computes the proxy's config at `generation` and sends what changed, if anything did.
    async fn push(&mut self, generation: u64) -> Result<(), String> {
        let old = self.view.clone();
        let computed = self.shared.compute(&self.hello, generation, move |mut view| {
            let line = encode::delta(&old, &view);
            if let Ok(Some(_)) = line {
                view.keep_unchanged(&old);
            }
            (view, line)
        });
        let (view, line) = match computed.await {
            Ok(computed) => computed,
            Err(err) => {
                tracing::warn!(proxy = %self.hello.node.id, error = %err, "cannot compute a proxy's config");
                self.registered.entry.failed(format!("computing its config: {err}"));
                return Ok(());
            }
        };
        // Nothing changed for this proxy: it keeps its version (and the view its allocations).
        let Some(line) = line? else { return Ok(()) };
        self.view = Arc::new(view);
        self.send(line).await
    }

    /// Hands one message to the response body (waiting while the proxy is not reading).
    async fn send(&self, line: Line) -> Result<(), String> {
        let len = line_len(&line);
        self.tx.send(line).await.map_err(|_| "the proxy went away".to_owned())?;
        self.registered.entry.sent(&self.view, len);
        Ok(())
    }

    /// Handles every complete message the proxy sent.
    async fn answer(&mut self, decoder: &mut LineDecoder) -> Result<(), String> {
        while let Some(line) = decoder.next_line().map_err(|e| e.to_string())? {
            match decode::<ClientMessage>(line).map_err(|e| e.to_string())? {
                ClientMessage::Ack { version } => self.registered.entry.acked(version),
                ClientMessage::Nack { version, error } => {
                    tracing::warn!(proxy = %self.hello.node.id, %version, %error, "proxy refused its config");
                    self.registered.entry.failed(format!("refused version {version}: {error}"));
                }
                ClientMessage::Resync { version, error } => {
                    tracing::info!(proxy = %self.hello.node.id, %version, %error, "proxy asked for a snapshot");
                    let line = encode::snapshot(self.view.as_ref())?;
                    self.send(line).await?;
                }
                ClientMessage::Hello(_) => return Err("a second hello on one stream".into()),
            }
        }
        Ok(())
    }
}
