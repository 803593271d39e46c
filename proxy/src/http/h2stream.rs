//! One request's HTTP/2 stream to an upstream, driven with `h2` directly: the request body piped
//! into the stream under HTTP/2 flow control, and the response body read from it ([`H2Body`]).
//!
//! The request's own task sends the request and awaits the response: no channel to a connection
//! task and no task per request between them, as hyper's HTTP/2 client has. A request body that is
//! not empty is piped by a task of its own (it may stream long after the response began, as a
//! gRPC call's does).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::{Body, BodyError};

/// One open stream of a connection, from its request until its response body ends or is dropped:
/// counted in the connection's open streams (keep-alive pings go only to connections with some), and
/// holding the request body's pipe, which resets the stream once this is dropped with the upload
/// unfinished (the response was abandoned: a timeout, the client went away).
#[derive(Debug)]
pub struct StreamGuard {
    open: Arc<AtomicUsize>,
    _pipe: Option<oneshot::Sender<()>>,
}

impl StreamGuard {
    /// Counts a stream just opened on the connection whose open streams are `open`.
    pub fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self { open, _pipe: None }
    }

    /// Starts the task that streams `body` into `stream`; it stops, resetting the stream, when this
    /// guard is dropped first.
    pub fn pipe(&mut self, body: Body, stream: SendStream<Bytes>) {
        let (keep, dropped) = oneshot::channel();
        self._pipe = Some(keep);
        tokio::spawn(pipe(body, stream, dropped));
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Streams `body` into `stream` until it ends, or resets the stream when the response is abandoned
/// first (`abandoned` resolves).
async fn pipe(body: Body, mut stream: SendStream<Bytes>, abandoned: oneshot::Receiver<()>) {
    let abandoned = tokio::select! {
        () = pump(body, &mut stream, h2::Reason::CANCEL) => false,
        _ = abandoned => true,
    };
    if abandoned {
        stream.send_reset(h2::Reason::CANCEL);
    }
}

/// Streams `body` into `stream`, its trailers last, waiting for flow-control capacity as the peer
/// grants it; stops when the peer resets the stream, and resets it when the body fails: with the
/// HTTP/2 reason the failure carries (an upstream's own reset passes on), else `failed`. Request
/// bodies to an upstream (`CANCEL`) and response bodies to a downstream client (`INTERNAL_ERROR`, as
/// hyper's server sent) both go through it.
pub(super) async fn pump(mut body: Body, stream: &mut SendStream<Bytes>, failed: h2::Reason) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // The upstream answered and no longer wants the body (or the connection went away).
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(err)) => {
                let reason = reset_reason(&*err).unwrap_or(failed);
                tracing::debug!(error = %err, ?reason, "body failed; resetting its stream");
                stream.send_reset(reason);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    if send_data(stream, data, end).await.is_err() || end {
                        return;
                    }
                }
                Err(frame) => {
                    // Frames other than data and trailers have no HTTP/2 form: skipped.
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                        return;
                    }
                }
            },
        }
    }
}

/// The HTTP/2 reason an error, or one of the errors under it, carries.
fn reset_reason(err: &(dyn std::error::Error + 'static)) -> Option<h2::Reason> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(reason) = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return Some(reason);
        }
        next = err.source();
    }
    None
}

/// Sends `data` in the pieces the peer's flow-control window allows, `end` on the last.
async fn send_data(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
    if data.is_empty() {
        return stream.send_data(data, end);
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            // The stream closed (reset by the peer).
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        stream.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// The body of an HTTP/2 stream as it arrives: its data, giving the flow-control window back as it is
/// read, then its trailers. An upstream's response body ([`H2Body::new`]), dropped before its end,
/// resets the stream (`CANCEL`): h2 does when the last handle on a stream goes, and the guard stops
/// the request body's pipe, which holds one. A downstream client's request body
/// ([`H2Body::served`]) has no guard: its stream lives as long as its response is being sent.
#[derive(Debug)]
pub struct H2Body {
    stream: RecvStream,
    data_done: bool,
    /// What `content-length` announced and is not read yet, when it announced something.
    remaining: Option<u64>,
    _guard: Option<StreamGuard>,
}

impl H2Body {
    /// An upstream response's body, on the stream `guard` counts.
    pub fn new(stream: RecvStream, guard: StreamGuard) -> Self {
        Self { stream, data_done: false, remaining: None, _guard: Some(guard) }
    }

    /// A request's body, on a stream this proxy serves, of the length its `content-length` header
    /// announces, if any (its size hint, as hyper's server gave it: retries skip buffering a body
    /// announced too large to replay).
    pub fn served(stream: RecvStream, headers: &http::HeaderMap) -> Self {
        // A request that ended with its head (a GET) has nothing to announce: no header lookup.
        let remaining = if stream.is_end_stream() {
            Some(0)
        } else {
            headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
        };
        Self { stream, data_done: false, remaining, _guard: None }
    }
}

impl HttpBody for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the peer may send as much again.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.remaining {
            Some(remaining) => http_body::SizeHint::with_exact(remaining),
            None => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
