//! Traffic mirroring (VirtualService `mirror`, `mirrorPercentage`, `mirrors`): a share of a route's
//! requests is copied to another cluster, fire and forget. The copy's authority gets Envoy's
//! `-shadow` suffix, its response is drained and dropped, and it never slows the main request: the
//! request body is teed chunk by chunk into a small bounded queue, and when the copy cannot keep up
//! (or its upstream hangs) the copy is abandoned, never the original. A copy that lost part of the
//! body ends in an error, so the mirror never sees a truncated request as complete.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Request};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use super::Body;

/// Body chunks queued for a copy before it is abandoned.
pub const MIRROR_QUEUE_FRAMES: usize = 16;
/// How long a copy may take, response drained included, before it is abandoned.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);
/// Suffix Envoy adds to a mirrored request's host.
pub const SHADOW_SUFFIX: &str = "-shadow";

/// A route's mirror: the cluster (index into the compiled clusters) and its share in millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorTarget {
    pub cluster: usize,
    pub share: u32,
}

impl MirrorTarget {
    /// Whether a request with uniform `draw` in `0..SHARE_SCALE` is copied.
    pub fn fires(&self, draw: u32) -> bool {
        draw < self.share
    }
}

/// `authority` with [`SHADOW_SUFFIX`] on its host, before any port (`orders:8080` becomes
/// `orders-shadow:8080`).
pub fn shadow_authority(authority: &str) -> String {
    let split = match authority.rfind(':') {
        // An IPv6 literal's colons sit inside brackets; a port follows the closing one.
        Some(at) if !authority[at..].contains(']') && authority[at + 1..].bytes().all(|b| b.is_ascii_digit()) => at,
        _ => authority.len(),
    };
    format!("{}{SHADOW_SUFFIX}{}", &authority[..split], &authority[split..])
}

/// The copy of `parts` a mirror sends: same method, URI, version and headers, shadowed host.
pub fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut builder = Request::builder().method(parts.method.clone()).uri(parts.uri.clone()).version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        headers.clone_from(&parts.headers);
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str()));
        if let Some(value) = host.and_then(|h| HeaderValue::from_str(&shadow_authority(h)).ok()) {
            headers.insert(HOST, value);
        }
    }
    let (parts, ()) = builder.body(()).map(Request::into_parts).unwrap_or_else(|_| Request::new(()).into_parts());
    parts
}

/// A copy's body and the signal that it was abandoned (its sender should then give it up at once).
pub struct Copy {
    pub body: Body,
    pub lost: watch::Receiver<bool>,
}

/// Splits `body` into the one the main request sends and the copies' bodies: an empty body is copied
/// as empty; any other is teed.
pub fn tee(body: Body, copies: usize) -> (Body, Vec<Copy>) {
    if body.is_end_stream() {
        let empty = || Copy {
            body: http_body_util::Empty::new().map_err(|never| match never {}).boxed(),
            lost: watch::channel(false).1,
        };
        return (body, (0..copies).map(|_| empty()).collect());
    }
    let mut senders = Vec::with_capacity(copies);
    let mut bodies = Vec::with_capacity(copies);
    for _ in 0..copies {
        let (sender, receiver) = mpsc::channel(MIRROR_QUEUE_FRAMES);
        let (lost, lost_receiver) = watch::channel(false);
        senders.push(Some(CopySender { sender, lost, finished: false }));
        let body = CopyBody { receiver, lost: lost_receiver.clone() }.boxed();
        bodies.push(Copy { body, lost: lost_receiver });
    }
    (Tee { inner: body, copies: senders }.boxed(), bodies)
}

/// The sending half of one copy's body.
struct CopySender {
    sender: mpsc::Sender<Frame<Bytes>>,
    lost: watch::Sender<bool>,
    /// Set once the whole body went into the queue; dropped before that, the copy is lost.
    finished: bool,
}

impl Drop for CopySender {
    fn drop(&mut self) {
        if !self.finished {
            // Marked before the queue closes (the sender drops after this), so the copy's body
            // never mistakes a cut-off request for a complete one.
            self.lost.send_replace(true);
        }
    }
}

/// The main request's body: passes every frame on and offers a clone to each copy without waiting.
struct Tee {
    inner: Body,
    copies: Vec<Option<CopySender>>,
}

impl Tee {
    /// The whole body went out: the copies' queues close after what they hold.
    fn finish(&mut self) {
        for copy in self.copies.iter_mut().flatten() {
            copy.finished = true;
        }
        self.copies.clear();
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = super::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                for slot in &mut this.copies {
                    let Some(copy) = slot else { continue };
                    let cloned = match (frame.data_ref(), frame.trailers_ref()) {
                        (Some(data), _) => Frame::data(data.clone()),
                        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
                        (None, None) => continue,
                    };
                    if copy.sender.try_send(cloned).is_err() {
                        // Full (the copy is slow) or gone: abandon the copy (dropping its sender
                        // marks it lost), never the main request.
                        *slot = None;
                    }
                }
                // hyper stops polling a body that says it ended: finish the copies now.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.copies.clear(),
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy's body: the frames the tee queued. When the tee abandoned the copy the queue closes early;
/// the body then never ends, and the copy's sender, told by [`Copy::lost`], drops the request, so
/// the mirror's upstream sees a reset, never a complete request.
struct CopyBody {
    receiver: mpsc::Receiver<Frame<Bytes>>,
    lost: watch::Receiver<bool>,
}

impl http_body::Body for CopyBody {
    type Data = Bytes;
    type Error = super::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::BodyError>>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            // Cut off: never end (the sender drops the request on the lost signal).
            Poll::Ready(None) if *self.lost.borrow() => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Headers of a copy's request that must not be copied as they are.
pub fn strip_for_copy(headers: &mut HeaderMap) {
    // A copy of a request with `expect: 100-continue` must not wait for a go-ahead on its own.
    headers.remove(http::header::EXPECT);
}
