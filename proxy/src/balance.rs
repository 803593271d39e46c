//! Per-cluster load balancing. A [`Balancer`] holds one cluster's endpoints, each with load state
//! shared by every request to it (requests in flight, a peak-EWMA latency estimate, an ejection flag
//! for outlier detection), and picks one endpoint per request with the cluster's algorithm: peak-EWMA
//! with power of two choices (the default, as linkerd2-proxy), weighted round robin, weighted random,
//! least request (power of two choices on requests in flight) or a consistent-hash ring. A balancer is
//! built once per config update and [`Balancer::update`] carries the load state of addresses that stay
//! into the next one. Picking touches only atomics: no lock, no allocation. A [`Pick`] counts as one
//! request in flight until it is dropped.

mod ewma;
mod ring;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use trellis_api::proxy_config::{Endpoint, LoadBalancer};

use crate::outlier::{EndpointHealth, HealthSnapshot};

use ewma::RttEstimate;
use ring::Ring;
pub use ring::{MAX_RING_POINTS, VNODES_PER_WEIGHT};

/// How fast a peak-EWMA latency estimate forgets: the time constant of its exponential decay
/// (linkerd2-proxy's default).
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);

/// The latency assumed for an endpoint that has not answered yet (linkerd2-proxy's default).
pub const DEFAULT_EWMA_RTT: Duration = Duration::from_millis(30);

/// Random draws a pick tries before it falls back to scanning the endpoints for an eligible one (when
/// endpoints are excluded or ejected).
const RANDOM_ATTEMPTS: usize = 4;

/// Tuning of the peak-EWMA latency estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EwmaConfig {
    /// Time constant of the decay; see [`DEFAULT_EWMA_DECAY`].
    pub decay: Duration,
    /// Estimate of an endpoint not measured yet; see [`DEFAULT_EWMA_RTT`].
    pub default_rtt: Duration,
}

impl Default for EwmaConfig {
    fn default() -> EwmaConfig {
        EwmaConfig { decay: DEFAULT_EWMA_DECAY, default_rtt: DEFAULT_EWMA_RTT }
    }
}

/// The endpoints of one cluster and the algorithm that picks among them.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    ewma: EwmaConfig,
    /// One per distinct address, in the order the config lists them.
    slots: Box<[Arc<Slot>]>,
    /// Effective weights, divided by their greatest common divisor; all 1 when every weight is 0.
    weights: Box<[u64]>,
    /// `cumulative[i]` is the sum of `weights[..=i]`.
    cumulative: Box<[u64]>,
    total_weight: u64,
    /// Round robin: a counter, mapped onto the weight line by a stride coprime with `total_weight`.
    cursor: AtomicU64,
    stride: u64,
    /// Consistent hash only.
    ring: Ring,
}

/// The algorithm, without the hash key (the caller hashes requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    PeakEwma,
    RoundRobin,
    Random,
    LeastRequest,
    ConsistentHash,
}

/// One endpoint: its config and its load, which outlives config changes that keep its address.
#[derive(Debug)]
struct Slot {
    endpoint: Endpoint,
    load: Arc<Load>,
}

/// Load state of one endpoint address, shared by every balancer generation that has it.
#[derive(Debug)]
struct Load {
    in_flight: AtomicUsize,
    rtt: RttEstimate,
    /// Set and cleared by outlier detection; picks skip ejected endpoints unless all are ejected.
    ejected: AtomicBool,
    /// Outlier detection's counts and ejection state.
    health: EndpointHealth,
}

/// The load of one endpoint at one moment, for admin pages and debugging.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointLoad {
    pub addr: SocketAddr,
    /// Effective weight (divided by the common divisor of the cluster's weights).
    pub weight: u64,
    pub in_flight: usize,
    /// The decayed peak-EWMA latency estimate.
    pub rtt: Duration,
    pub ejected: bool,
    /// Outlier detection's view of the endpoint.
    pub health: HealthSnapshot,
}

impl Balancer {
    /// A balancer over `endpoints` with the default peak-EWMA tuning.
    pub fn new(lb: &LoadBalancer, endpoints: &[Endpoint]) -> Balancer {
        Balancer::with_ewma(lb, endpoints, EwmaConfig::default())
    }

    /// A balancer over `endpoints`. Endpoints listed twice are merged, their weights added.
    pub fn with_ewma(lb: &LoadBalancer, endpoints: &[Endpoint], ewma: EwmaConfig) -> Balancer {
        let algorithm = match lb {
            LoadBalancer::PeakEwma => Algorithm::PeakEwma,
            LoadBalancer::RoundRobin => Algorithm::RoundRobin,
            LoadBalancer::Random => Algorithm::Random,
            LoadBalancer::LeastRequest => Algorithm::LeastRequest,
            LoadBalancer::ConsistentHash(_) => Algorithm::ConsistentHash,
        };
        let now = Instant::now();
        Balancer::assemble(algorithm, ewma, endpoints, |endpoint| Arc::new(Slot::new(endpoint, ewma, now)))
    }

    /// The balancer for a new endpoint set with the same algorithm. Addresses that stay keep their load
    /// (requests in flight, latency estimate, ejection); picks of removed endpoints stay valid.
    pub fn update(&self, endpoints: &[Endpoint]) -> Balancer {
        let old: HashMap<SocketAddr, &Arc<Slot>> = self.slots.iter().map(|s| (s.endpoint.address, s)).collect();
        let now = Instant::now();
        Balancer::assemble(self.algorithm, self.ewma, endpoints, |endpoint| match old.get(&endpoint.address) {
            Some(slot) if slot.endpoint == *endpoint => Arc::clone(slot),
            Some(slot) => Arc::new(Slot { endpoint: endpoint.clone(), load: Arc::clone(&slot.load) }),
            None => Arc::new(Slot::new(endpoint, self.ewma, now)),
        })
    }

    fn assemble(
        algorithm: Algorithm,
        ewma: EwmaConfig,
        endpoints: &[Endpoint],
        mut slot_for: impl FnMut(&Endpoint) -> Arc<Slot>,
    ) -> Balancer {
        let mut slots: Vec<Arc<Slot>> = Vec::with_capacity(endpoints.len());
        let mut weights: Vec<u64> = Vec::with_capacity(endpoints.len());
        let mut seen: HashMap<SocketAddr, usize> = HashMap::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if let Some(&index) = seen.get(&endpoint.address) {
                if let Some(weight) = weights.get_mut(index) {
                    *weight += u64::from(endpoint.weight);
                }
                continue;
            }
            seen.insert(endpoint.address, slots.len());
            slots.push(slot_for(endpoint));
            weights.push(u64::from(endpoint.weight));
        }
        if weights.iter().all(|&w| w == 0) {
            weights.iter_mut().for_each(|w| *w = 1);
        }
        let divisor = weights.iter().fold(0, |g, &w| gcd(g, w));
        if divisor > 1 {
            weights.iter_mut().for_each(|w| *w /= divisor);
        }
        let cumulative: Vec<u64> = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        let total_weight = cumulative.last().copied().unwrap_or(0);
        let ring = if algorithm == Algorithm::ConsistentHash {
            let addrs: Vec<SocketAddr> = slots.iter().map(|s| s.endpoint.address).collect();
            Ring::build(&addrs, &weights)
        } else {
            Ring::default()
        };
        Balancer {
            algorithm,
            ewma,
            slots: slots.into(),
            weights: weights.into(),
            cumulative: cumulative.into(),
            total_weight,
            // A random start, so proxies that load the same config do not all begin on one endpoint.
            cursor: AtomicU64::new(fastrand::u64(..)),
            stride: coprime_stride(total_weight),
            ring,
        }
    }

    /// How many distinct endpoint addresses the balancer has.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the balancer has no endpoint (every pick is `None`).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Picks an endpoint for one request. `hash` is the request's key for a consistent-hash balancer
    /// (from [`hash_bytes`]); without one it picks a random point on the ring. Other algorithms ignore
    /// it. `None` only when there is no endpoint.
    pub fn pick(&self, hash: Option<u64>) -> Option<Pick> {
        self.pick_excluding(hash, &[])
    }

    /// Like [`Balancer::pick`], but never one of `exclude` (the endpoints a retry already tried). A
    /// consistent hash moves on to the next endpoint on the ring. `None` when every endpoint is excluded.
    pub fn pick_excluding(&self, hash: Option<u64>, exclude: &[SocketAddr]) -> Option<Pick> {
        if self.total_weight == 0 {
            return None;
        }
        // When every eligible endpoint is ejected, ejection is ignored rather than failing the request.
        let index = self.choose(hash, exclude, true).or_else(|| self.choose(hash, exclude, false))?;
        self.slots.get(index).map(Pick::new)
    }

    /// Marks the endpoint at `addr` ejected or back in service, for outlier detection. The mark follows
    /// the address across updates. Returns whether the balancer has that address.
    pub fn set_ejected(&self, addr: SocketAddr, ejected: bool) -> bool {
        match self.slots.iter().find(|s| s.endpoint.address == addr) {
            Some(slot) => {
                slot.load.ejected.store(ejected, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The current load of every endpoint.
    pub fn loads(&self) -> Vec<EndpointLoad> {
        let now = Instant::now();
        self.slots
            .iter()
            .zip(self.weights.iter())
            .map(|(slot, &weight)| EndpointLoad {
                addr: slot.endpoint.address,
                weight,
                in_flight: slot.load.in_flight.load(Ordering::Relaxed),
                rtt: Duration::from_nanos(slot.load.rtt.estimate(now) as u64),
                ejected: slot.load.ejected.load(Ordering::Relaxed),
                health: slot.load.health.snapshot(),
            })
            .collect()
    }

    /// Each endpoint's outlier state and ejection mark, for outlier detection's decisions.
    pub(crate) fn health(&self) -> Vec<(SocketAddr, &EndpointHealth, &AtomicBool)> {
        self.slots.iter().map(|s| (s.endpoint.address, &s.load.health, &s.load.ejected)).collect()
    }

    /// The index of the endpoint to use, among those not excluded (nor ejected, if `honor_ejection`).
    fn choose(&self, hash: Option<u64>, exclude: &[SocketAddr], honor_ejection: bool) -> Option<usize> {
        let eligible = |index: usize| -> bool {
            match (self.slots.get(index), self.weights.get(index)) {
                (Some(slot), Some(&weight)) => {
                    weight > 0
                        && !(honor_ejection && slot.load.ejected.load(Ordering::Relaxed))
                        && !exclude.contains(&slot.endpoint.address)
                }
                _ => false,
            }
        };
        if self.slots.len() == 1 {
            return eligible(0).then_some(0);
        }
        match self.algorithm {
            Algorithm::RoundRobin => self.round_robin(&eligible),
            Algorithm::Random => self.random(&eligible),
            Algorithm::LeastRequest => self.two_choices(&eligible, |a, b| {
                // Fewer requests in flight per unit of weight wins.
                let a_cost = (self.in_flight(a) as u128 + 1) * u128::from(self.weight(b));
                let b_cost = (self.in_flight(b) as u128 + 1) * u128::from(self.weight(a));
                a_cost <= b_cost
            }),
            Algorithm::PeakEwma => {
                let now = Instant::now();
                self.two_choices(&eligible, |a, b| self.ewma_cost(a, now) <= self.ewma_cost(b, now))
            }
            Algorithm::ConsistentHash => self.ring.find(hash.unwrap_or_else(|| fastrand::u64(..)), eligible),
        }
    }

    /// Weighted round robin: the counter walks the weight line in strides coprime with its length, so
    /// every `total_weight` picks visit each endpoint exactly its weight's times, spread out.
    fn round_robin(&self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..self.slots.len() {
            let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % self.total_weight;
            let index = self.at_weight(mul_mod(turn, self.stride, self.total_weight));
            if eligible(index) {
                return Some(index);
            }
        }
        self.scan_random(eligible)
    }

    /// Weighted random.
    fn random(&self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..RANDOM_ATTEMPTS {
            let index = self.at_weight(fastrand::u64(..self.total_weight));
            if eligible(index) {
                return Some(index);
            }
        }
        self.scan_random(eligible)
    }

    /// Power of two choices: two distinct endpoints drawn by weight, the one `better` prefers kept.
    fn two_choices(&self, eligible: &impl Fn(usize) -> bool, better: impl Fn(usize, usize) -> bool) -> Option<usize> {
        let first = self.random(eligible)?;
        let other = |index: usize| index != first && eligible(index);
        let second = (0..RANDOM_ATTEMPTS)
            .map(|_| self.at_weight(fastrand::u64(..self.total_weight)))
            .find(|&index| other(index))
            .or_else(|| self.scan_random(&other));
        match second {
            Some(second) if !better(first, second) => Some(second),
            _ => Some(first),
        }
    }

    /// A weighted random choice among the eligible endpoints, by scanning them all.
    fn scan_random(&self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let candidates = || self.weights.iter().enumerate().filter(|&(index, _)| eligible(index));
        let total: u64 = candidates().map(|(_, &w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut point = fastrand::u64(..total);
        for (index, &weight) in candidates() {
            if point < weight {
                return Some(index);
            }
            point -= weight;
        }
        None
    }

    /// The endpoint whose stretch of the weight line holds `point` (< `total_weight`).
    fn at_weight(&self, point: u64) -> usize {
        self.cumulative.partition_point(|&sum| sum <= point)
    }

    fn weight(&self, index: usize) -> u64 {
        self.weights.get(index).copied().unwrap_or(0)
    }

    fn in_flight(&self, index: usize) -> usize {
        self.slots.get(index).map_or(usize::MAX, |slot| slot.load.in_flight.load(Ordering::Relaxed))
    }

    /// Peak-EWMA cost: the latency estimate times the requests in flight plus this one, per unit of
    /// weight.
    fn ewma_cost(&self, index: usize, now: Instant) -> f64 {
        match self.slots.get(index) {
            Some(slot) => {
                let pending = slot.load.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
                slot.load.rtt.estimate(now) * pending / self.weight(index).max(1) as f64
            }
            None => f64::INFINITY,
        }
    }
}

impl Slot {
    fn new(endpoint: &Endpoint, ewma: EwmaConfig, now: Instant) -> Slot {
        Slot {
            endpoint: endpoint.clone(),
            load: Arc::new(Load {
                in_flight: AtomicUsize::new(0),
                rtt: RttEstimate::new(ewma.default_rtt, ewma.decay, now),
                ejected: AtomicBool::new(false),
                health: EndpointHealth::default(),
            }),
        }
    }
}

/// A chosen endpoint. It counts as one request in flight to that endpoint until dropped, so keep it
/// for as long as the request (or TCP connection) lasts.
#[derive(Debug)]
pub struct Pick {
    pub addr: SocketAddr,
    slot: Arc<Slot>,
}

impl Pick {
    fn new(slot: &Arc<Slot>) -> Pick {
        slot.load.in_flight.fetch_add(1, Ordering::Relaxed);
        Pick { addr: slot.endpoint.address, slot: Arc::clone(slot) }
    }

    /// The endpoint as configured: identity, labels, whether it is meshed.
    pub fn endpoint(&self) -> &Endpoint {
        &self.slot.endpoint
    }

    /// The endpoint's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.slot.endpoint.labels
    }

    /// The SPIFFE identity the endpoint must present, empty when none is known.
    pub fn identity(&self) -> &str {
        &self.slot.endpoint.identity
    }

    /// The endpoint's outlier-detection state.
    pub fn health(&self) -> &EndpointHealth {
        &self.slot.load.health
    }

    /// Feeds the endpoint's latency estimate with one round trip (request sent to response headers).
    pub fn record_latency(&self, rtt: Duration) {
        self.record_latency_at(rtt, Instant::now());
    }

    /// [`Pick::record_latency`] for a round trip that ended at `now` (a clock the caller already read).
    pub fn record_latency_at(&self, rtt: Duration, now: Instant) {
        self.slot.load.rtt.observe(rtt, now);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.slot.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fast hash of `bytes` that is the same in every process and on every platform (64-bit FNV-1a
/// followed by MurmurHash3's 64-bit finalizer), for callers to turn a header, cookie or source address
/// into a consistent-hash key.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET_BASIS;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    mix64(hash)
}

/// MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the output.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `a * b mod m` without overflow (`m` > 0).
fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    match a.checked_mul(b) {
        Some(product) => product % m,
        None => u64::try_from(u128::from(a) * u128::from(b) % u128::from(m)).unwrap_or(0),
    }
}

/// A stride near `total / φ` that is coprime with `total`: stepping by it visits every point of
/// `0..total` once per lap, and spreads each endpoint's visits over the lap (a Weyl sequence).
fn coprime_stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let mut stride = ((total as f64 * 0.618_033_988_749_895) as u64).clamp(1, total - 1);
    while gcd(stride, total) != 1 {
        stride += 1;
    }
    stride
}
