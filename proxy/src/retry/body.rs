//! Request bodies that a retry can send again. The first attempt streams the body through as it
//! arrives and keeps a copy of each chunk (a reference-counted `Bytes`, not a copy of the data) while
//! the total stays within [`MAX_REPLAY_BYTES`]; past that the copy is dropped and the request can no
//! longer be retried, but it still streams whole to the first attempt. Nothing is read ahead.
//!
//! The state (the inner body, the chunks kept, trailers) moves between attempts through a slot that
//! an attempt's body fills when it has read the whole body or is dropped; the slot's lock is taken
//! at those two moments only, never per chunk. A retry whose previous attempt still holds the body
//! (the upstream answered before reading it, and the connection still owns it) is not made.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The most request body bytes kept for replay; a larger body is not retried.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// What the attempts share: the inner body and what has been read of it.
#[derive(Debug)]
struct Source<B> {
    inner: B,
    chunks: Vec<Bytes>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    /// The inner body has ended (its trailers, if any, are in `trailers`).
    ended: bool,
    /// The copy was dropped (too large) or the inner body failed: no replay.
    spoiled: bool,
}

type Slot<B> = Arc<Mutex<Option<Source<B>>>>;

/// Hands out the body of each attempt after the first.
#[derive(Debug)]
pub struct Replay<B> {
    slot: Slot<B>,
}

impl<B> Replay<B> {
    /// Wraps `body` for the first attempt. `None` when it cannot be replayed: its announced size is
    /// over [`MAX_REPLAY_BYTES`] (then `body` comes back to stream as it is).
    pub fn new(body: B) -> Result<(Replay<B>, ReplayBody<B>), B>
    where
        B: Body,
    {
        if body.size_hint().lower() > MAX_REPLAY_BYTES as u64 {
            return Err(body);
        }
        let slot = Arc::new(Mutex::new(None));
        let source =
            Source { inner: body, chunks: Vec::new(), buffered: 0, trailers: None, ended: false, spoiled: false };
        let first = ReplayBody { source: Some(source), slot: slot.clone(), replayed: 0, replayed_bytes: 0 };
        Ok((Replay { slot }, first))
    }

    /// The body of the next attempt: what the earlier ones read, then the rest. `None` when the
    /// body cannot be replayed (too large, failed) or an earlier attempt still holds it.
    pub fn next(&self) -> Option<ReplayBody<B>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|s| s.spoiled) {
            return None;
        }
        let source = slot.take();
        Some(ReplayBody { source, slot: self.slot.clone(), replayed: 0, replayed_bytes: 0 })
    }
}

/// One attempt's request body.
#[derive(Debug)]
pub struct ReplayBody<B> {
    source: Option<Source<B>>,
    slot: Slot<B>,
    /// Kept chunks already sent by this attempt.
    replayed: usize,
    replayed_bytes: usize,
}

impl<B> ReplayBody<B> {
    /// Puts the state back for the next attempt.
    fn give_back(&mut self) {
        if let Some(source) = self.source.take() {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let Some(source) = this.source.as_mut() else { return Poll::Ready(None) };
        if let Some(chunk) = source.chunks.get(this.replayed) {
            this.replayed += 1;
            this.replayed_bytes += chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if source.ended {
            // A replay: the kept chunks are out, then the trailers, once.
            let trailers = source.trailers.clone();
            this.give_back();
            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
        }
        match ready!(Pin::new(&mut source.inner).poll_frame(cx)) {
            None => {
                source.ended = true;
                this.give_back();
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if !source.spoiled {
                        if source.buffered + data.remaining() > MAX_REPLAY_BYTES {
                            source.spoiled = true;
                            source.chunks = Vec::new();
                        } else {
                            source.buffered += data.remaining();
                            source.chunks.push(data.clone());
                        }
                    }
                    this.replayed = source.chunks.len();
                    this.replayed_bytes = source.buffered;
                } else if let Some(trailers) = frame.trailers_ref() {
                    // Trailers end the body: keep them for a replay and hand the state back now.
                    source.trailers = Some(trailers.clone());
                    source.ended = true;
                    this.give_back();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                source.spoiled = true;
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            None => true,
            Some(source) if source.ended => self.replayed >= source.chunks.len() && source.trailers.is_none(),
            Some(source) => self.replayed >= source.chunks.len() && source.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Some(source) = &self.source else { return SizeHint::with_exact(0) };
        let kept = (source.buffered - self.replayed_bytes.min(source.buffered)) as u64;
        if source.ended {
            return SizeHint::with_exact(kept);
        }
        let inner = source.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(kept));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(kept));
        }
        hint
    }
}
