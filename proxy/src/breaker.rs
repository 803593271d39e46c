//! Circuit breaking: a cluster's connection-pool limits (DestinationRule `connectionPool`) enforced on
//! requests and TCP connections before they reach a pool.
//!
//! Between two Trellis proxies an HTTP/1.1 request rides a multiplexed HTTP/2 connection, so counting
//! real connections would let `maxConnections: 1` carry any number of concurrent requests. The limits
//! are therefore counted in *connection-equivalents*: a request that is HTTP/1.1 at the application
//! (whether it leaves as HTTP/1.1 or is carried over HTTP/2 to another proxy) occupies one for as long
//! as its exchange lasts, exactly as it would occupy an HTTP/1.1 connection; a native HTTP/2 or gRPC
//! request occupies one `1/maxRequestsPerConnection`th (no limit without `maxRequestsPerConnection`, as
//! in Envoy, where one HTTP/2 connection carries any number of streams). So:
//!
//! - at most `maxConnections` connection-equivalents are *in service*;
//! - a request that finds them all busy waits (FIFO-ish, woken when one frees) if fewer than
//!   `http1MaxPendingRequests` already wait, and is *rejected* otherwise;
//! - at most `http2MaxRequests` requests are admitted (in service or waiting) at once;
//! - when the cluster's connections are not reused (`maxRequestsPerConnection: 1`), every request
//!   needs a connection of its own, and, as in Envoy, it stays *pending* (counted towards
//!   `http1MaxPendingRequests`) until that connection is established (connect, TLS and HTTP/2
//!   handshakes done: [`Permit::connected`]), though it already holds its connection-equivalent. So
//!   with the tutorial's rule (1 connection, 1 pending, 1 request per connection) a request arriving
//!   while another one's connection is being made is rejected: two callers in a loop see some 503s.
//!   With reuse, a request is pending only while it waits for a connection-equivalent;
//! - a rejected request is answered 503 at once, with `x-trellis-overloaded: true` and the `UO`
//!   response flag counted in metrics.
//!
//! The fast path is one `fetch_add` on admission and one `fetch_sub` and one load on release (both
//! counters share one `AtomicU64`), plus the `Arc` of the permit; without reuse, one `fetch_add` on
//! admission and one `fetch_sub` once connected on the pending count too. Waiting and waking happen
//! only when a limit is reached.
//! A permit is released when the response body ends or is dropped, so an HTTP/1.1 connection is free
//! again before the next request is admitted.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use trellis_api::proxy_config::ConnectionPool;

/// One admitted request, in the high half of the state word.
const ADMITTED: u64 = 1 << 32;
/// Units of one connection-equivalent in the low half of the state word: an HTTP/1.1 request takes
/// `SLOT_SCALE` units, a native HTTP/2 request `SLOT_SCALE / maxRequestsPerConnection`.
const SLOT_SCALE: u64 = 1 << 16;

/// Why a request or connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The circuit breaker of one cluster, kept across config updates while its limits stay the same.
#[derive(Debug)]
pub struct Breaker {
    limits: ConnectionPool,
    /// Units in service the cluster allows (`maxConnections × SLOT_SCALE`), `u64::MAX >> 32` without a
    /// limit.
    capacity: u64,
    /// Units a native HTTP/2 request takes.
    multiplexed_cost: u64,
    max_pending: u64,
    max_requests: u64,
    /// Whether connections are not reused (`maxRequestsPerConnection: 1`): a request then stays pending
    /// until its own connection is established.
    pending_until_connected: bool,
    /// Requests waiting for a connection-equivalent, and, without reuse, those whose connection is
    /// being established.
    waiting: AtomicU64,
    /// High 32 bits: requests admitted (in service or waiting); low 32 bits: units in service.
    state: AtomicU64,
    wake: Notify,
}

/// What a request holds while it is in service; releasing it (drop) frees its connection-equivalent.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    cost: u64,
    /// Still counted pending: its connection is not established yet.
    connecting: bool,
}

/// The counters of a breaker at one moment, for admin pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerLoad {
    /// Requests admitted: in service or waiting for a connection.
    pub admitted: u64,
    /// Requests waiting for a connection-equivalent or (without reuse) for their connection.
    pub pending: u64,
    /// Connection-equivalents in service (fractions for multiplexed requests are rounded up).
    pub in_service: u64,
}

impl Breaker {
    /// The breaker for a cluster's limits, or `None` when they limit nothing the breaker enforces (no
    /// cost on the request path then).
    pub fn for_limits(limits: &ConnectionPool) -> Option<Arc<Breaker>> {
        if limits.max_connections.is_none() && limits.max_requests.is_none() && limits.max_pending_requests.is_none() {
            return None;
        }
        // Counts stay below 2^31 so neither half of the state word can overflow into the other.
        let limit = |value: Option<u32>| value.map_or(u64::from(u32::MAX >> 1), |v| u64::from(v.min(u32::MAX >> 1)));
        let capacity = match limits.max_connections {
            Some(n) => u64::from(n) * SLOT_SCALE,
            None => u64::from(u32::MAX >> 1),
        };
        let multiplexed_cost = match (limits.max_connections, limits.max_requests_per_connection) {
            (Some(_), Some(per)) if per > 0 => (SLOT_SCALE / u64::from(per)).max(1),
            _ => 0,
        };
        Some(Arc::new(Breaker {
            limits: limits.clone(),
            capacity: capacity.min(u64::from(u32::MAX >> 1)),
            multiplexed_cost,
            max_pending: limit(limits.max_pending_requests),
            max_requests: limit(limits.max_requests),
            pending_until_connected: limits.max_requests_per_connection == Some(1),
            waiting: AtomicU64::new(0),
            state: AtomicU64::new(0),
            wake: Notify::new(),
        }))
    }

    /// The limits this breaker enforces.
    pub fn limits(&self) -> &ConnectionPool {
        &self.limits
    }

    /// The units one request (`multiplexed`: native HTTP/2 on a multiplexed connection) takes.
    fn cost(&self, multiplexed: bool) -> u64 {
        match (multiplexed, self.limits.max_connections) {
            (_, None) => 0,
            (true, Some(_)) => self.multiplexed_cost,
            (false, Some(_)) => SLOT_SCALE,
        }
    }

    /// Admits one request: at once when a connection-equivalent is free, after waiting when the
    /// pending queue has room, or [`Overflow`] at once otherwise.
    pub async fn admit(self: &Arc<Self>, multiplexed: bool) -> Result<Permit, Overflow> {
        let cost = self.cost(multiplexed);
        let previous = self.state.fetch_add(ADMITTED + cost, Ordering::AcqRel);
        if admitted(previous) + 1 > self.max_requests {
            self.back_out(ADMITTED + cost, cost);
            return Err(Overflow);
        }
        if serving(previous) + cost <= self.capacity {
            if !self.pending_until_connected {
                return Ok(Permit { breaker: Arc::clone(self), cost, connecting: false });
            }
            // Without reuse the request is pending while its own connection is made.
            if self.waiting.fetch_add(1, Ordering::AcqRel) + 1 > self.max_pending {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                self.back_out(ADMITTED + cost, cost);
                return Err(Overflow);
            }
            return Ok(Permit { breaker: Arc::clone(self), cost, connecting: true });
        }
        // No connection-equivalent free: this request waits, if the queue has room.
        self.back_out(cost, cost);
        if self.waiting.fetch_add(1, Ordering::AcqRel) + 1 > self.max_pending {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.state.fetch_sub(ADMITTED, Ordering::AcqRel);
            return Err(Overflow);
        }
        let waiting = Waiting { breaker: self };
        let permit = waiting.wait(cost).await;
        std::mem::forget(waiting);
        // Without reuse it stays pending until its connection is established.
        if !permit.connecting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(permit)
    }

    /// Admits one TCP connection: at once when a connection-equivalent is free, [`Overflow`] otherwise
    /// (Envoy's TCP proxy queues nothing).
    pub fn admit_connection(self: &Arc<Self>) -> Result<Permit, Overflow> {
        let cost = self.cost(false);
        let previous = self.state.fetch_add(ADMITTED + cost, Ordering::AcqRel);
        if serving(previous) + cost > self.capacity {
            self.back_out(ADMITTED + cost, cost);
            return Err(Overflow);
        }
        Ok(Permit { breaker: Arc::clone(self), cost, connecting: false })
    }

    /// Undoes an admission that did not go through, waking a waiter if it blocked one's slot.
    fn back_out(&self, amount: u64, cost: u64) {
        let now = self.state.fetch_sub(amount, Ordering::AcqRel) - amount;
        if cost > 0 {
            self.wake_if_free(serving(now));
        }
    }

    /// Wakes one waiter when a unit is free; a wake with no waiter is kept for the next one to look.
    fn wake_if_free(&self, serving: u64) {
        if serving < self.capacity {
            self.wake.notify_one();
        }
    }

    /// Takes `cost` units if they fit.
    fn try_take(&self, cost: u64) -> bool {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if serving(current) + cost > self.capacity {
                return false;
            }
            match self.state.compare_exchange_weak(current, current + cost, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The counters now.
    pub fn load(&self) -> BreakerLoad {
        let state = self.state.load(Ordering::Relaxed);
        BreakerLoad {
            admitted: admitted(state),
            pending: self.waiting.load(Ordering::Relaxed),
            in_service: serving(state).div_ceil(SLOT_SCALE),
        }
    }
}

/// A request waiting for a connection-equivalent; dropped before it gets one (its client went away),
/// it leaves the queue and passes on any wake it may have taken.
struct Waiting<'a> {
    breaker: &'a Arc<Breaker>,
}

impl Waiting<'_> {
    async fn wait(&self, cost: u64) -> Permit {
        loop {
            let notified = self.breaker.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.breaker.try_take(cost) {
                let connecting = self.breaker.pending_until_connected;
                return Permit { breaker: Arc::clone(self.breaker), cost, connecting };
            }
            notified.await;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.breaker.waiting.fetch_sub(1, Ordering::AcqRel);
        let now = self.breaker.state.fetch_sub(ADMITTED, Ordering::AcqRel) - ADMITTED;
        self.breaker.wake_if_free(serving(now));
    }
}

impl Permit {
    /// The request's upstream connection is established: a request still counted pending (its
    /// cluster reuses no connection) is now only in service. Does nothing the second time, or for a
    /// request that was never pending.
    pub fn connected(&mut self) {
        if self.connecting {
            self.connecting = false;
            self.breaker.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.connected();
        let amount = ADMITTED + self.cost;
        self.breaker.state.fetch_sub(amount, Ordering::AcqRel);
        if self.cost > 0 && self.breaker.waiting.load(Ordering::Acquire) > 0 {
            self.breaker.wake.notify_one();
        }
    }
}

fn admitted(state: u64) -> u64 {
    state >> 32
}

fn serving(state: u64) -> u64 {
    state & u64::from(u32::MAX)
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`Permit`] until the body ends or is dropped.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> Guarded<B> {
    /// `inner`, holding `permit` while it streams.
    pub fn new(inner: B, permit: Permit) -> Self {
        Guarded { inner, permit: Some(permit) }
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.permit.take();
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

#[cfg(test)]
mod tests;
