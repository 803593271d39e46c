//! The webhook's Prometheus metrics: `trellis_webhook_admissions_total{result}` and the latency
//! histogram `trellis_webhook_admission_duration_seconds`. Label handles are created once, so
//! counting a review takes no lock and no allocation.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::review::Outcome;

/// Every outcome, in the order their counters are kept.
const OUTCOMES: [Outcome; 6] =
    [Outcome::Injected, Outcome::Skipped, Outcome::Ignored, Outcome::Denied, Outcome::AllowedOnError, Outcome::Invalid];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The registry and the handles the server counts with.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    counters: [Counter; OUTCOMES.len()],
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let admissions = Family::<ResultLabels, Counter>::default();
        let counters =
            OUTCOMES.map(|outcome| admissions.get_or_create(&ResultLabels { result: outcome.label() }).clone());
        registry.register("trellis_webhook_admissions", "Admission reviews answered, by result", admissions);
        // 100 µs to ~6.5 s.
        let duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "trellis_webhook_admission_duration_seconds",
            "Time from a review's body read to its answer",
            duration.clone(),
        );
        Metrics { registry, counters, duration }
    }

    /// Counts one review and its duration.
    pub fn record(&self, outcome: Outcome, took: Duration) {
        if let Some(index) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counters[index].inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%err, "encoding the metrics");
        }
        text
    }
}
