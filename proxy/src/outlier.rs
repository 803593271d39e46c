//! Outlier detection (DestinationRule `outlierDetection`): endpoints that fail in a row leave their
//! cluster's balancer for a while, as Envoy's consecutive-error detectors do.
//!
//! Each endpoint's [`EndpointHealth`] lives beside its load in the balancer (so it follows the address
//! across config updates) and is fed after every exchange: a 5xx answer counts towards
//! `consecutive5xxErrors`, a 502/503/504 also towards `consecutiveGatewayErrors`, a failure to connect or
//! a reset towards `consecutiveLocalOriginFailures` when the rule splits those out (otherwise it counts as
//! a 503, as in Envoy); any other answer resets the counts. Recording is a few relaxed atomics; only the
//! crossing of a threshold takes the cluster's lock to decide an ejection.
//!
//! An ejection lasts `baseEjectionTime × ejections so far` (capped at [`MAX_EJECTION_TIME`] or the base,
//! whichever is longer); it is refused when it would eject more than `maxEjectionPercent` of the
//! endpoints (one endpoint may always be ejected, as in Envoy). A sweep every `interval` returns
//! endpoints whose time is over and lowers the multiplier of an endpoint that stayed in service for a
//! whole base ejection time. While fewer than `minHealthPercent` of the endpoints are in service,
//! ejections are not enforced and every endpoint takes traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use trellis_api::proxy_config::OutlierDetection;

use crate::balance::{Balancer, Pick};
use crate::state::ClusterState;

/// Envoy's default cap on one ejection's length (`max_ejection_time`); a longer base wins over it.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// The shortest sweep period, whatever the rule's `interval` says.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The moment process-wide times are counted from, in milliseconds.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`], never 0 (0 means "not ejected").
fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What outlier detection knows about one endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// When the current ejection ends ([`now_ms`] scale); 0 when the endpoint is in service.
    ejected_until: AtomicU64,
    /// Ejections so far, less one per base ejection time spent in service since.
    ejections: AtomicU32,
    /// Since when the endpoint has been back in service (or since its multiplier last went down).
    back_since: AtomicU64,
}

/// One endpoint's outlier state at one moment, for admin pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSnapshot {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: u32,
    pub consecutive_local_origin_failures: u32,
    /// The ejection multiplier: ejections so far, less those forgiven.
    pub ejections: u32,
    /// Time left of the current ejection, in milliseconds; absent when in service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
}

impl EndpointHealth {
    /// The state now.
    pub fn snapshot(&self) -> HealthSnapshot {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        HealthSnapshot {
            consecutive_5xx: self.consecutive_5xx.load(Ordering::Relaxed),
            consecutive_gateway_errors: self.consecutive_gateway.load(Ordering::Relaxed),
            consecutive_local_origin_failures: self.consecutive_local.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            ejected_for_ms: (until > now).then(|| until - now),
        }
    }

    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Clears the consecutive counts; loads first, so a healthy endpoint's record writes nothing.
    fn reset(&self) {
        for counter in [&self.consecutive_5xx, &self.consecutive_gateway, &self.consecutive_local] {
            if counter.load(Ordering::Relaxed) != 0 {
                counter.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// How one exchange with an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No answer: the connection failed or was reset (`UpstreamFailure`).
    LocalFailure,
}

/// The outlier detector of one cluster.
#[derive(Debug)]
pub struct Detector {
    config: OutlierDetection,
    /// Serializes ejection decisions and sweeps (rare; never taken by a request that does not trip).
    decisions: Mutex<()>,
}

impl Detector {
    /// A detector applying `config`.
    pub fn new(config: &OutlierDetection) -> Self {
        Self { config: config.clone(), decisions: Mutex::new(()) }
    }

    /// The time between sweeps.
    pub fn interval(&self) -> Duration {
        self.config.interval.max(MIN_INTERVAL)
    }

    /// Feeds the outcome of one exchange with `pick`'s endpoint, ejecting it when a count trips.
    pub fn record(&self, balancer: &Balancer, pick: &Pick, outcome: Outcome) {
        let health = pick.health();
        let bump = |counter: &AtomicU32, limit: Option<u32>| {
            let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
            limit.is_some_and(|limit| count >= limit)
        };
        let count_5xx = |status: u16| {
            let by_5xx = bump(&health.consecutive_5xx, self.config.consecutive_5xx_errors);
            let by_gateway = matches!(status, 502..=504)
                && bump(&health.consecutive_gateway, self.config.consecutive_gateway_errors);
            by_5xx || by_gateway
        };
        let tripped = match outcome {
            Outcome::Status(status) if status < 500 => {
                health.reset();
                false
            }
            Outcome::Status(status) => count_5xx(status),
            Outcome::LocalFailure => match self.config.consecutive_local_origin_failures {
                Some(limit) => bump(&health.consecutive_local, Some(limit)),
                None => count_5xx(503),
            },
        };
        if tripped {
            self.eject(balancer, pick.addr);
        }
    }

    /// Ejects the endpoint at `addr` unless it already is or `maxEjectionPercent` forbids it.
    fn eject(&self, balancer: &Balancer, addr: SocketAddr) {
        let _decisions = self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_ms();
        let endpoints = balancer.health();
        let Some((_, health, _)) = endpoints.iter().find(|(a, _, _)| *a == addr) else { return };
        if health.is_ejected(now) {
            return;
        }
        let total = endpoints.len() as u64;
        let ejected = endpoints.iter().filter(|(_, h, _)| h.is_ejected(now)).count() as u64;
        let max_percent = u64::from(self.config.max_ejection_percent);
        let allowed = (ejected + 1) * 100 <= max_percent * total || (ejected == 0 && max_percent > 0);
        if !allowed {
            tracing::debug!(%addr, ejected, total, "outlier not ejected: maxEjectionPercent reached");
            return;
        }
        let multiplier = health.ejections.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let base = self.config.base_ejection_time;
        let length = base.saturating_mul(multiplier).min(MAX_EJECTION_TIME.max(base));
        health.ejected_until.store(now.saturating_add(ms(length).max(1)), Ordering::Relaxed);
        health.reset();
        tracing::info!(%addr, ejections = multiplier, seconds = length.as_secs_f64(), "endpoint ejected");
        self.enforce(balancer, now);
    }

    /// Returns endpoints whose ejection is over and forgives a multiplier step to those that stayed in
    /// service for a base ejection time; then enforces the result.
    pub fn sweep(&self, balancer: &Balancer) {
        let _decisions = self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_ms();
        let base = ms(self.config.base_ejection_time);
        for (addr, health, _) in balancer.health() {
            let until = health.ejected_until.load(Ordering::Relaxed);
            if until != 0 && until <= now {
                health.ejected_until.store(0, Ordering::Relaxed);
                health.back_since.store(now, Ordering::Relaxed);
                tracing::info!(%addr, "ejected endpoint back in service");
            } else if until == 0
                && health.ejections.load(Ordering::Relaxed) > 0
                && now.saturating_sub(health.back_since.load(Ordering::Relaxed)) >= base
            {
                health.ejections.fetch_sub(1, Ordering::Relaxed);
                health.back_since.store(now, Ordering::Relaxed);
            }
        }
        self.enforce(balancer, now);
    }

    /// Marks the ejected endpoints in the balancer, or none while too few are in service.
    fn enforce(&self, balancer: &Balancer, now: u64) {
        let endpoints = balancer.health();
        let total = endpoints.len() as u64;
        let ejected = endpoints.iter().filter(|(_, h, _)| h.is_ejected(now)).count() as u64;
        let healthy_percent = ((total - ejected) * 100).checked_div(total).unwrap_or(100);
        let enforced = healthy_percent >= u64::from(self.config.min_health_percent);
        for (_, health, mark) in endpoints {
            mark.store(enforced && health.is_ejected(now), Ordering::Relaxed);
        }
    }
}

/// Sweeps `cluster`'s endpoints every interval until the cluster is gone (replaced by a config
/// update and no longer used).
pub async fn run_sweeps(cluster: Weak<ClusterState>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(cluster) = cluster.upgrade() else { return };
        if let Some(detector) = &cluster.outlier {
            detector.sweep(&cluster.balancer);
        }
        drop::<Arc<ClusterState>>(cluster);
    }
}

#[cfg(test)]
mod tests;
