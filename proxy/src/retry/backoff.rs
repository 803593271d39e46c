//! Exponential back-off with full jitter between attempts, as Envoy computes it: the n-th retry
//! waits a uniformly random time below `(2^n - 1) * base`, capped at `10 * base`.

use std::time::Duration;

/// Envoy's base interval when a route names no `backoff`.
pub const DEFAULT_BASE: Duration = Duration::from_millis(25);
/// The longest wait, as a multiple of the base interval (Envoy's default max interval).
pub const MAX_FACTOR: u32 = 10;

/// A route's back-off, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Backoff {
    /// The back-off with base `base` (Envoy's 25 ms when absent).
    pub fn new(base: Option<Duration>) -> Self {
        let base = base.unwrap_or(DEFAULT_BASE);
        Self { base, max: base.saturating_mul(MAX_FACTOR) }
    }

    /// The upper bound of the wait before retry number `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).map_or(u32::MAX, |f| f - 1);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry number `retry`, given `random` uniform in `[0, 1)`.
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        self.ceiling(retry).mul_f64(random.clamp(0.0, 1.0))
    }
}
