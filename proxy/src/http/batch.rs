//! Write batching under an HTTP/2 connection: one system call for what the connection writes in a
//! turn of the event loop, rather than one per DATA frame.
//!
//! The `h2` codec keeps a DATA frame of 256 bytes or more apart from its write buffer and flushes
//! before it encodes the next one, so a connection answering ten 1 KiB responses at once made ten
//! `writev` calls (HAProxy makes one). [`Batched`] sits between the codec and the socket: writes
//! and flushes only copy into its buffer, and the buffer goes out when the connection's task runs
//! next, which it does at once (a write schedules it) but after the tasks already queued, whose
//! responses then join the same write. The connection task reads before anything else when it
//! runs, so [`Batched`] sends in `poll_read`; it also sends when a write would take the buffer past
//! [`BATCH_LIMIT`] (back-pressure as a socket would give; a single larger write goes straight to the
//! socket) and before a shutdown.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes [`Batched`] holds before a write waits for the socket; a larger single write goes to
/// the socket directly.
pub const BATCH_LIMIT: usize = 64 * 1024;
/// Buffer capacity [`Batched`] keeps between batches (a connection's whole life): a large batch's
/// buffer shrinks back to this once sent.
pub const BATCH_KEEP: usize = 16 * 1024;

/// An I/O stream whose writes are sent in batches (see the module comment).
#[derive(Debug)]
pub struct Batched<T> {
    io: T,
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken.
    sent: usize,
}

impl<T> Batched<T> {
    pub fn new(io: T) -> Self {
        Self { io, buf: Vec::new(), sent: 0 }
    }

    fn held(&self) -> usize {
        self.buf.len() - self.sent
    }
}

impl<T: AsyncWrite + Unpin> Batched<T> {
    /// Sends everything held, then flushes the inner stream (a TLS stream's records).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > BATCH_KEEP {
            self.buf.shrink_to(BATCH_KEEP);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Makes room for `len` more bytes: sends first when the buffer would pass [`BATCH_LIMIT`].
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.held() > 0 && self.held() + len > BATCH_LIMIT {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Holds `data`; the first bytes of a batch schedule the task, whose next run sends them.
    fn hold(&mut self, cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]) -> usize {
        if self.held() == 0 {
            cx.waker().wake_by_ref();
        }
        let mut len = 0;
        for slice in slices {
            self.buf.extend_from_slice(slice);
            len += slice.len();
        }
        len
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Batched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, read: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held() > 0 {
            // A full socket must not stop the reading: the peer may be waiting for its own writes
            // to be read. The socket's readiness wakes the task to send the rest.
            if let Poll::Ready(Err(err)) = this.poll_send(cx) {
                return Poll::Ready(Err(err));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx, data.len()))?;
        if data.len() >= BATCH_LIMIT {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        Poll::Ready(Ok(this.hold(cx, &[io::IoSlice::new(data)])))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = slices.iter().map(|slice| slice.len()).sum();
        ready!(this.poll_room(cx, len))?;
        if len >= BATCH_LIMIT {
            return Pin::new(&mut this.io).poll_write_vectored(cx, slices);
        }
        Poll::Ready(Ok(this.hold(cx, slices)))
    }

    fn is_write_vectored(&self) -> bool {
        // The codec then hands over a DATA frame's payload as a slice of its own, copied once, here.
        true
    }

    /// Ready at once: what is held goes out on the task's next run, which the batch's first write
    /// scheduled (or, behind a full socket, the socket's readiness).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held() > 0 {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
