//! Opaque TCP proxying: copies bytes both ways between two connected streams until both
//! directions have ended. A read that hits end of stream shuts down the other side's write (the
//! half-close reaches the peer) while the other direction keeps flowing. When no byte moves either
//! way for the idle timeout, the copy gives up so the caller can close both streams. Each
//! direction's buffer starts small and grows only once the direction has carried real traffic,
//! so the many quiet connections of a sidecar stay cheap. Bytes are reported to a
//! [`ByteObserver`] as they are written, so metrics move while a long connection lives.

#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long a proxied TCP connection may carry no bytes either way before it is closed: one hour,
/// Envoy's and Istio's default TCP idle timeout. `Duration::ZERO` means no idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Size of each direction's copy buffer when a connection starts (ztunnel's choice): enough for
/// the small exchanges most connections carry.
pub const INITIAL_COPY_BUFFER_SIZE: usize = 1024;

/// Largest size of each direction's copy buffer: one TLS record, so bulk transfers move in few
/// system calls.
pub const MAX_COPY_BUFFER_SIZE: usize = 16 * 1024;

/// Bytes a direction must have carried before its buffer grows from
/// [`INITIAL_COPY_BUFFER_SIZE`] to [`MAX_COPY_BUFFER_SIZE`].
pub const COPY_BUFFER_GROWTH_THRESHOLD: u64 = 128 * 1024;

/// Which way bytes moved, relative to the order of the streams given to the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read from the first stream, written to the second.
    AToB,
    /// Read from the second stream, written to the first.
    BToA,
}

/// Told about bytes as they are written, e.g. to update per-connection byte counters. Called on
/// the copy's task for every write, so it must be cheap and must not block.
pub trait ByteObserver {
    /// `bytes` (never zero) were written in `direction`.
    fn transferred(&self, direction: Direction, bytes: u64);
}

/// Observes nothing.
impl ByteObserver for () {
    fn transferred(&self, _direction: Direction, _bytes: u64) {}
}

/// Byte counters for both directions of one copy, readable from other tasks while it runs.
#[derive(Debug, Default)]
pub struct ByteCounters {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

impl ByteCounters {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes written from the first stream to the second so far.
    pub fn a_to_b(&self) -> u64 {
        self.a_to_b.load(Ordering::Relaxed)
    }

    /// Bytes written from the second stream to the first so far.
    pub fn b_to_a(&self) -> u64 {
        self.b_to_a.load(Ordering::Relaxed)
    }
}

impl ByteObserver for ByteCounters {
    fn transferred(&self, direction: Direction, bytes: u64) {
        let counter = match direction {
            Direction::AToB => &self.a_to_b,
            Direction::BToA => &self.b_to_a,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Copies between `a` and `b` both ways until both directions have ended, and returns the bytes
/// written a→b and b→a. See [`copy_bidirectional_observed`].
pub async fn copy_bidirectional_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_bidirectional_observed(a, b, idle, &()).await
}

/// Copies between `a` and `b` both ways, telling `observer` about every write, and returns the
/// bytes written a→b and b→a once both directions have ended.
///
/// A direction ends when its reader reaches end of stream: the remaining bytes are written, the
/// writer is shut down (a FIN for TCP; a peer that is already gone is not an error), and the other
/// direction carries on. When no byte is read or written either way for `idle`
/// (`Duration::ZERO`: never), the copy returns an error of kind [`io::ErrorKind::TimedOut`];
/// dropping the streams then closes them. Any other I/O error ends the copy at once and is
/// returned; the observer has seen the bytes moved until then.
pub async fn copy_bidirectional_observed<A, B, O>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    observer: &O,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: ByteObserver + ?Sized,
{
    let mut a_to_b = Pump::new(Direction::AToB);
    let mut b_to_a = Pump::new(Direction::BToA);
    let mut last_activity = Instant::now();
    let idle_deadline = if idle.is_zero() { None } else { last_activity.checked_add(idle) };
    // Armed only when there is an idle timeout; re-armed lazily when it fires after activity,
    // rather than reset on every read.
    let sleep = tokio::time::sleep_until(idle_deadline.unwrap_or(last_activity));
    tokio::pin!(sleep);

    poll_fn(|cx| {
        let mut moved = false;
        if !a_to_b.done {
            let done = a_to_b.poll_copy(cx, &mut *a, &mut *b, observer, &mut moved)?;
            a_to_b.done = done.is_ready();
        }
        if !b_to_a.done {
            let done = b_to_a.poll_copy(cx, &mut *b, &mut *a, observer, &mut moved)?;
            b_to_a.done = done.is_ready();
        }
        if a_to_b.done && b_to_a.done {
            return Poll::Ready(Ok((a_to_b.amount, b_to_a.amount)));
        }
        if idle_deadline.is_none() {
            return Poll::Pending;
        }
        if moved {
            last_activity = Instant::now();
        }
        while sleep.as_mut().poll(cx).is_ready() {
            let Some(deadline) = last_activity.checked_add(idle) else {
                return Poll::Pending;
            };
            if deadline <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no bytes moved either way for the idle timeout",
                )));
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// One direction of a copy: a buffer, what of it is still to be written, and how far it got.
struct Pump {
    direction: Direction,
    buf: Box<[u8]>,
    /// `buf[pos..filled]` is read but not yet written.
    pos: usize,
    filled: usize,
    read_eof: bool,
    /// Bytes were written since the last flush.
    needs_flush: bool,
    /// The writer is shut down: this direction has ended.
    done: bool,
    /// Bytes written so far.
    amount: u64,
}

impl Pump {
    fn new(direction: Direction) -> Self {
        Pump {
            direction,
            buf: vec![0; INITIAL_COPY_BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            filled: 0,
            read_eof: false,
            needs_flush: false,
            done: false,
            amount: 0,
        }
    }

    /// Moves bytes from `reader` to `writer` until either would block (`Pending`, with wakers
    /// registered) or the direction has ended (`Ready`). Sets `moved` when a byte was read or
    /// written.
    fn poll_copy<R, W, O>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        observer: &O,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
        O: ByteObserver + ?Sized,
    {
        loop {
            if self.pos == self.filled && !self.read_eof {
                self.grow_if_busy();
                let mut read = ReadBuf::new(&mut self.buf[..]);
                match Pin::new(&mut *reader).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.read_eof = true;
                        } else {
                            self.pos = 0;
                            self.filled = n;
                            *moved = true;
                        }
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Nothing more to write for now: push out what was written.
                        if self.needs_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.needs_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.filled {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.filled]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amount += n as u64;
                self.needs_flush = true;
                *moved = true;
                observer.transferred(self.direction, n as u64);
            }
            if self.read_eof {
                // Shutting down flushes first.
                return match ready!(Pin::new(&mut *writer).poll_shutdown(cx)) {
                    Ok(()) => Poll::Ready(Ok(())),
                    // The peer is already gone, which is what a shutdown would tell it.
                    Err(error) if error.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
                    Err(error) => Poll::Ready(Err(error)),
                };
            }
        }
    }

    /// Swaps the small initial buffer for a large one once this direction has carried
    /// [`COPY_BUFFER_GROWTH_THRESHOLD`] bytes. Only called with the buffer drained.
    fn grow_if_busy(&mut self) {
        if self.buf.len() < MAX_COPY_BUFFER_SIZE && self.amount >= COPY_BUFFER_GROWTH_THRESHOLD {
            self.buf = vec![0; MAX_COPY_BUFFER_SIZE].into_boxed_slice();
            self.pos = 0;
            self.filled = 0;
        }
    }

    #[cfg(test)]
    fn buffer_size(&self) -> usize {
        self.buf.len()
    }
}
