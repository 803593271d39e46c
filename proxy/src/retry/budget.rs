//! Per-cluster caps on retries in flight: `connectionPool.http.maxRetries` and the DestinationRule's
//! retry budget (Envoy's circuit-breaker `max_retries` and `retry_budget`). A budget, when set,
//! replaces `maxRetries`: Envoy ignores the static cap once a budget exists.
//!
//! The counters are atomics of the compiled cluster. Active requests are counted only when a budget
//! needs them, and retries only when something caps them, so a cluster without either pays nothing.

use std::sync::atomic::{AtomicU32, Ordering};

use trellis_api::proxy_config::{Cluster, RetryBudget};

/// Retries in flight a cluster allows when nothing caps them (Istio sets Envoy's `max_retries` to
/// 2^32-1 unless `connectionPool.http.maxRetries` says otherwise).
pub const UNLIMITED_RETRIES: u32 = u32::MAX;

/// Retries allowed in flight under a budget: `percent` of `active` requests (rounded down), but
/// never fewer than the budget's minimum.
pub fn budget_cap(budget: &RetryBudget, active: u32) -> u32 {
    let share = (f64::from(active) * budget.percent / 100.0).floor();
    // The share is within 0..=active, so the cast cannot truncate.
    let share = if share.is_finite() && share > 0.0 { share as u32 } else { 0 };
    share.max(budget.min_retry_concurrency)
}

/// A cluster's retry caps and the counters they are checked against.
#[derive(Debug)]
pub struct RetryLimits {
    max_retries: u32,
    budget: Option<RetryBudget>,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
}

impl RetryLimits {
    /// The caps `cluster` configures.
    pub fn new(cluster: &Cluster) -> Self {
        let max_retries = cluster.connection_pool.as_ref().and_then(|p| p.max_retries).unwrap_or(UNLIMITED_RETRIES);
        Self::with(max_retries, cluster.retry_budget.clone())
    }

    /// Caps from their values.
    pub fn with(max_retries: u32, budget: Option<RetryBudget>) -> Self {
        Self { max_retries, budget, active_requests: AtomicU32::new(0), active_retries: AtomicU32::new(0) }
    }

    /// Counts one request as active on the cluster until the guard drops (only under a budget).
    pub fn request(&self) -> ActiveRequest<'_> {
        if self.budget.is_none() {
            return ActiveRequest(None);
        }
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Some(&self.active_requests))
    }

    /// The cap on retries in flight now.
    pub fn cap(&self) -> u32 {
        match &self.budget {
            Some(budget) => budget_cap(budget, self.active_requests.load(Ordering::Relaxed)),
            None => self.max_retries,
        }
    }

    /// A permit for one retry, held while it is in flight; `None` when the cap is reached (the
    /// caller answers with the last attempt's response and counts an overflow).
    pub fn try_retry(&self) -> Option<RetryPermit<'_>> {
        if self.budget.is_none() && self.max_retries == UNLIMITED_RETRIES {
            return Some(RetryPermit(None));
        }
        let cap = self.cap();
        let taken = self.active_retries.fetch_add(1, Ordering::AcqRel);
        if taken >= cap {
            self.active_retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryPermit(Some(&self.active_retries)))
    }

    /// Retries in flight now (counted only when something caps them).
    pub fn active_retries(&self) -> u32 {
        self.active_retries.load(Ordering::Relaxed)
    }
}

/// One request counted as active on its cluster.
#[derive(Debug)]
pub struct ActiveRequest<'a>(Option<&'a AtomicU32>);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One retry in flight.
#[derive(Debug)]
pub struct RetryPermit<'a>(Option<&'a AtomicU32>);

impl Drop for RetryPermit<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
