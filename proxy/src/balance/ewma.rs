//! The peak-EWMA latency estimate of one endpoint, kept in atomics so picks and completions on many
//! tasks never lock. As in linkerd2-proxy (tower's `PeakEwma`), a sample above the estimate replaces
//! it at once (the peak), a lower one is blended in with a weight that grows with the time since the
//! last sample, and readers see the estimate decayed toward zero by the time since it was last fed,
//! so an endpoint that has gone quiet is tried again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A peak-sensitive, exponentially weighted moving average of round-trip time.
#[derive(Debug)]
pub(super) struct RttEstimate {
    /// Origin of the timestamps below.
    epoch: Instant,
    /// The decay time constant, in nanoseconds (never zero).
    decay_ns: f64,
    /// The estimate as of `stamp_ns`, in nanoseconds.
    rtt_ns: AtomicU64,
    /// When the estimate was last fed, in nanoseconds since `epoch`.
    stamp_ns: AtomicU64,
}

impl RttEstimate {
    /// An estimate that starts at `default_rtt` at `now`.
    pub(super) fn new(default_rtt: Duration, decay: Duration, now: Instant) -> RttEstimate {
        RttEstimate {
            epoch: now,
            decay_ns: (decay.as_secs_f64() * 1e9).max(1.0),
            rtt_ns: AtomicU64::new(nanos(default_rtt)),
            stamp_ns: AtomicU64::new(0),
        }
    }

    /// The estimate at `now` in nanoseconds, decayed toward zero since the last sample.
    pub(super) fn estimate(&self, now: Instant) -> f64 {
        let rtt = self.rtt_ns.load(Ordering::Relaxed) as f64;
        let elapsed = self.since(now).saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        if elapsed == 0 { rtt } else { rtt * (-(elapsed as f64) / self.decay_ns).exp() }
    }

    /// Feeds one round-trip time measured at `now`.
    pub(super) fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = nanos(rtt);
        let now_ns = self.since(now);
        let mut current = self.rtt_ns.load(Ordering::Relaxed);
        loop {
            let next = if rtt >= current {
                rtt
            } else {
                let elapsed = now_ns.saturating_sub(self.stamp_ns.load(Ordering::Relaxed)) as f64;
                let decay = (-elapsed / self.decay_ns).exp();
                (current as f64 * decay + rtt as f64 * (1.0 - decay)).round() as u64
            };
            match self.rtt_ns.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // Two racing samples may each read the older stamp; that only gives one of them a little more
        // weight, and `fetch_max` keeps the stamp from going backwards.
        self.stamp_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    fn since(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }
}

/// `d` in nanoseconds, saturating (at about 584 years).
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
