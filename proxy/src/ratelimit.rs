//! Local rate limiting (RateLimitPolicy) on the inbound side, as Envoy's `local_ratelimit` filter does it.
//!
//! Each rule of a config becomes one [`Limiter`]: a compiled match (paths in Istio's forms, methods,
//! ports) and a token bucket that starts full with `max_tokens` and gets `tokens_per_fill` more at every
//! `fill_interval` boundary, never holding more than `max_tokens`. The bucket is one `AtomicU64` (fill
//! index and tokens packed) updated by compare-and-swap, refilled lazily from the clock: no timer, no
//! lock. A per-source rule keeps one bucket per source identity (the peer's SPIFFE ID under mutual TLS,
//! else its IP address) in sharded maps of at most [`MAX_SOURCES`] entries, forgetting the least recently
//! seen source when full. Limiters are built once per config and kept across updates when their rule is
//! unchanged, so a config push neither refills nor empties a bucket.
//!
//! A limited HTTP request is answered with the rule's status (429 by default), Envoy's body
//! `local_rate_limited`, `retry-after` (whole seconds until the next fill) and `x-envoy-ratelimited: true`
//! (what a calling proxy's `retryOn: envoy-ratelimited` looks for); a limited TCP connection
//! is closed at once. Each refusal counts in `trellis_rate_limited_total{policy}`. The draft
//! `x-ratelimit-limit`/`-remaining`/`-reset` headers are written, on allowed and limited responses, only
//! for a rule that asks for them (`quota_headers`; off by default as in Envoy): without it an allowed
//! request gets nothing added to its response.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use trellis_api::proxy_config::RateLimit;

use crate::http::{Body, Context, full};
use crate::metrics::Metrics;

#[cfg(test)]
mod tests;

/// Body of a limited request (Envoy's text).
pub const LIMITED_BODY: &str = "local_rate_limited";
/// Header on every limited answer, as Envoy's local rate limit sets it (the retry condition
/// `envoy-ratelimited` of a calling proxy looks for it).
pub const RATELIMITED_HEADER: HeaderName = HeaderName::from_static("x-envoy-ratelimited");
/// Most sources a per-source rule keeps a bucket for; the least recently seen is forgotten beyond it.
pub const MAX_SOURCES: usize = 10_000;
/// Shards of a per-source rule's buckets (each behind its own lock).
const SOURCE_SHARDS: usize = 16;
/// Header with the bucket's size (IETF draft `RateLimit` header fields, version 03, as Envoy emits it).
pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// Header with the tokens left after this request.
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// Header with the whole seconds until the next fill.
pub const RESET_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Who sent a request, as per-source buckets tell sources apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source<'a> {
    /// The peer's SPIFFE ID (mutual TLS).
    Identity(&'a str),
    /// The peer's IP address (plain text).
    Ip(IpAddr),
}

impl<'a> Source<'a> {
    /// The source of a connection: its mesh identity, else its address.
    pub fn of(cx: &'a Context) -> Self {
        match &cx.peer_identity {
            Some(peer) => Source::Identity(&peer.spiffe_id),
            None => Source::Ip(cx.peer.ip()),
        }
    }
}

/// A bucket's content: the fill interval it was last brought up to date at, and its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Index of the fill interval since the limiter's epoch (wrapping).
    pub fill: u32,
    pub tokens: u32,
}

impl BucketState {
    fn pack(self) -> u64 {
        (u64::from(self.fill) << 32) | u64::from(self.tokens)
    }

    fn unpack(packed: u64) -> Self {
        Self { fill: (packed >> 32) as u32, tokens: packed as u32 }
    }
}

/// The arithmetic of one token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub interval: Duration,
}

impl Refill {
    /// Index of the fill interval `now` (time since the epoch) falls in.
    pub fn fill_at(&self, now: Duration) -> u32 {
        (now.as_nanos() / self.interval.as_nanos().max(1)) as u32
    }

    /// Time from `now` until the next fill.
    pub fn until_next_fill(&self, now: Duration) -> Duration {
        let interval = self.interval.as_nanos().max(1);
        Duration::from_nanos((interval - now.as_nanos() % interval) as u64)
    }

    /// `state` brought up to fill `fill`. A `fill` behind the state's (a clock read just before another
    /// thread's update) leaves it as it is.
    pub fn refilled(&self, state: BucketState, fill: u32) -> BucketState {
        let fills = fill.wrapping_sub(state.fill);
        if fills == 0 || fills > u32::MAX / 2 {
            return state;
        }
        let added = u64::from(fills) * u64::from(self.tokens_per_fill);
        let tokens = (u64::from(state.tokens) + added).min(u64::from(self.max_tokens)) as u32;
        BucketState { fill, tokens }
    }

    /// Takes one token from `state` at `fill`: the new state, or `None` when the bucket is empty (the
    /// caller keeps the old state: refilling is a pure function of the fill index).
    pub fn take(&self, state: BucketState, fill: u32) -> Result<BucketState, BucketState> {
        let state = self.refilled(state, fill);
        match state.tokens {
            0 => Err(state),
            n => Ok(BucketState { tokens: n - 1, ..state }),
        }
    }

    /// A full bucket at `fill`.
    pub fn full(&self, fill: u32) -> BucketState {
        BucketState { fill, tokens: self.max_tokens }
    }
}

/// What one request (or connection) got from a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub allowed: bool,
    /// The bucket's size.
    pub limit: u32,
    /// Tokens left.
    pub remaining: u32,
    /// Time until the next fill.
    pub reset: Duration,
}

impl Quota {
    /// Whole seconds until the next fill, rounded up (what `retry-after` and `x-ratelimit-reset` say).
    pub fn reset_seconds(&self) -> u64 {
        let nanos = self.reset.as_nanos();
        nanos.div_ceil(1_000_000_000).max(1) as u64
    }

    /// Writes the `x-ratelimit-*` headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT_HEADER, HeaderValue::from(self.limit));
        headers.insert(REMAINING_HEADER, HeaderValue::from(self.remaining));
        headers.insert(RESET_HEADER, HeaderValue::from(self.reset_seconds()));
    }
}

/// One bucket shared by every source: lock-free.
#[derive(Debug)]
struct SharedBucket(AtomicU64);

impl SharedBucket {
    fn take(&self, refill: &Refill, fill: u32) -> Result<BucketState, BucketState> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let next = refill.take(BucketState::unpack(current), fill)?;
            match self.0.compare_exchange_weak(current, next.pack(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(next),
                Err(actual) => current = actual,
            }
        }
    }
}

#[derive(Debug)]
struct Slot {
    state: BucketState,
    used: u64,
}

#[derive(Debug, Default)]
struct Shard {
    slots: HashMap<u64, Slot>,
    /// Counts uses, to tell which slot was seen least recently.
    clock: u64,
}

/// One bucket per source, in shards that each hold at most `per_shard` sources.
#[derive(Debug)]
struct SourceBuckets {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl SourceBuckets {
    fn new(max_sources: usize) -> Self {
        let shards = (0..SOURCE_SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Self { hasher: RandomState::new(), shards, per_shard: max_sources.div_ceil(SOURCE_SHARDS).max(1) }
    }

    fn take(&self, refill: &Refill, fill: u32, source: &Source<'_>) -> Result<BucketState, BucketState> {
        let key = self.hasher.hash_one(source);
        let mut shard = self.shards[(key as usize) % self.shards.len()].lock().unwrap_or_else(PoisonError::into_inner);
        shard.clock += 1;
        let used = shard.clock;
        if !shard.slots.contains_key(&key) && shard.slots.len() >= self.per_shard {
            let oldest = shard.slots.iter().min_by_key(|(_, slot)| slot.used).map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                shard.slots.remove(&oldest);
            }
        }
        let slot = shard.slots.entry(key).or_insert(Slot { state: refill.full(fill), used });
        slot.used = used;
        let taken = refill.take(slot.state, fill);
        if let Ok(state) = taken {
            slot.state = state;
        }
        taken
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).slots.len()).sum()
    }
}

#[derive(Debug)]
enum Buckets {
    Shared(SharedBucket),
    PerSource(SourceBuckets),
}

/// A path form of Istio's: exact, `prefix*`, `*suffix`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl PathMatch {
    fn parse(text: &str) -> Self {
        if text == "*" {
            PathMatch::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            PathMatch::Prefix(prefix.into())
        } else if let Some(suffix) = text.strip_prefix('*') {
            PathMatch::Suffix(suffix.into())
        } else {
            PathMatch::Exact(text.into())
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(exact) => path == &**exact,
            PathMatch::Prefix(prefix) => path.starts_with(&**prefix),
            PathMatch::Suffix(suffix) => path.ends_with(&**suffix),
        }
    }
}

/// One compiled rule and its buckets.
#[derive(Debug)]
pub struct Limiter {
    config: RateLimit,
    paths: Vec<PathMatch>,
    refill: Refill,
    status: StatusCode,
    epoch: Instant,
    buckets: Buckets,
    limited: Counter,
}

impl Limiter {
    /// A limiter for `config` with full buckets, counting refusals in `metrics`.
    pub fn new(config: &RateLimit, metrics: &Metrics) -> Self {
        Self::with_max_sources(config, metrics, MAX_SOURCES)
    }

    /// The same, keeping at most `max_sources` per-source buckets.
    pub fn with_max_sources(config: &RateLimit, metrics: &Metrics, max_sources: usize) -> Self {
        let refill = Refill {
            max_tokens: config.max_tokens,
            tokens_per_fill: config.tokens_per_fill,
            interval: config.fill_interval.max(Duration::from_millis(1)),
        };
        let buckets = if config.per_source {
            Buckets::PerSource(SourceBuckets::new(max_sources))
        } else {
            Buckets::Shared(SharedBucket(AtomicU64::new(refill.full(0).pack())))
        };
        Self {
            paths: config.paths.iter().map(|p| PathMatch::parse(p)).collect(),
            refill,
            status: StatusCode::from_u16(config.status_code)
                .ok()
                .filter(|s| s.as_u16() >= 400)
                .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            epoch: Instant::now(),
            buckets,
            limited: metrics.rate_limited(&config.policy),
            config: config.clone(),
        }
    }

    /// The rule this limiter enforces.
    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// Whether an HTTP request to `port` with `method` and `path` (without query) is this rule's.
    pub fn matches_http(&self, method: &str, path: &str, port: u16) -> bool {
        self.matches_port(port)
            && (self.config.methods.is_empty() || self.config.methods.iter().any(|m| m == method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }

    /// Whether a new opaque TCP connection to `port` is this rule's (rules on paths or methods never are).
    pub fn matches_connection(&self, port: u16) -> bool {
        !self.config.is_http_only() && self.matches_port(port)
    }

    fn matches_port(&self, port: u16) -> bool {
        self.config.ports.is_empty() || self.config.ports.contains(&port)
    }

    /// Takes a token for `source` at `now` (time since the limiter's epoch): the clock is the caller's.
    pub fn acquire_at(&self, now: Duration, source: &Source<'_>) -> Quota {
        let fill = self.refill.fill_at(now);
        let taken = match &self.buckets {
            Buckets::Shared(bucket) => bucket.take(&self.refill, fill),
            Buckets::PerSource(buckets) => buckets.take(&self.refill, fill, source),
        };
        let (allowed, state) = match taken {
            Ok(state) => (true, state),
            Err(state) => (false, state),
        };
        if !allowed {
            self.limited.inc();
        }
        Quota {
            allowed,
            limit: self.refill.max_tokens,
            remaining: state.tokens,
            reset: self.refill.until_next_fill(now),
        }
    }

    /// Takes a token for `source` now.
    pub fn acquire(&self, source: &Source<'_>) -> Quota {
        self.acquire_at(self.epoch.elapsed(), source)
    }

    /// How many sources have a bucket of their own (0 for a shared bucket).
    pub fn sources(&self) -> usize {
        match &self.buckets {
            Buckets::Shared(_) => 0,
            Buckets::PerSource(buckets) => buckets.len(),
        }
    }

    /// The answer to a request this limiter refused: its status, body, `retry-after` and
    /// `x-envoy-ratelimited: true`, plus the
    /// `x-ratelimit-*` headers when the rule asks for them.
    pub fn limited_response(&self, quota: &Quota) -> Response<Body> {
        let mut response = Response::new(full(LIMITED_BODY));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(RETRY_AFTER, HeaderValue::from(quota.reset_seconds()));
        // As Envoy's limiter marks its 429s: what a caller's `retryOn: envoy-ratelimited` looks for.
        headers.insert(RATELIMITED_HEADER, HeaderValue::from_static("true"));
        if self.config.quota_headers {
            quota.write_headers(headers);
        }
        crate::access_log::flag(
            &mut response,
            crate::metrics::ResponseFlag::RL,
            crate::access_log::details::RATE_LIMITED,
        );
        response
    }
}

/// What a rule decided about one request.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// No rule is the request's.
    Unmatched,
    /// A rule let it through; its response reports the quota when there is one (the rule asks for the
    /// quota headers).
    Allowed(Option<Quota>),
    /// A rule refused it.
    Limited(Limited<'a>),
}

/// A refused request: the rule that refused it and the quota it found.
#[derive(Debug)]
pub struct Limited<'a> {
    limiter: &'a Limiter,
    quota: Quota,
}

impl Limited<'_> {
    /// The answer to the request.
    pub fn response(&self) -> Response<Body> {
        self.limiter.limited_response(&self.quota)
    }
}

/// Every limiter of a config by its rule, so the next config keeps the buckets of rules that stay.
pub type Limiters = HashMap<RateLimit, Arc<Limiter>>;

/// The limiters of `config`'s inbound listeners, reusing those of `previous` whose rule is unchanged.
pub fn limiters<'c>(
    rules: impl IntoIterator<Item = &'c RateLimit>,
    previous: Option<&Limiters>,
    metrics: &Metrics,
) -> Limiters {
    let mut limiters = Limiters::new();
    for rule in rules {
        if limiters.contains_key(rule) {
            continue;
        }
        let limiter = match previous.and_then(|p| p.get(rule)) {
            Some(kept) => kept.clone(),
            None => Arc::new(Limiter::new(rule, metrics)),
        };
        limiters.insert(rule.clone(), limiter);
    }
    limiters
}

/// The limiters of one inbound port, in evaluation order.
#[derive(Debug, Default)]
pub struct RateLimits {
    limiters: Vec<Arc<Limiter>>,
}

impl RateLimits {
    /// The limiters of `rules`, taken from `limiters` (which [`limiters`] built from the same config).
    pub fn new(rules: &[RateLimit], limiters: &Limiters) -> Self {
        Self { limiters: rules.iter().filter_map(|r| limiters.get(r).cloned()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }

    /// The first limiter whose rule an HTTP request is, if any.
    pub fn for_http(&self, method: &str, path: &str, port: u16) -> Option<&Limiter> {
        self.limiters.iter().map(Arc::as_ref).find(|l| l.matches_http(method, path, port))
    }

    /// Checks one inbound request against the first rule it matches.
    pub fn check_http<B>(&self, req: &http::Request<B>, cx: &Context) -> Verdict<'_> {
        let Some(limiter) = self.for_http(req.method().as_str(), req.uri().path(), cx.destination.port()) else {
            return Verdict::Unmatched;
        };
        let quota = limiter.acquire(&Source::of(cx));
        if quota.allowed {
            Verdict::Allowed(limiter.config.quota_headers.then_some(quota))
        } else {
            tracing::debug!(peer = %cx.peer, policy = %limiter.config.policy, "request rate limited");
            Verdict::Limited(Limited { limiter, quota })
        }
    }

    /// Whether a new opaque TCP connection must be refused (closed at once).
    pub fn connection_limited(&self, cx: &Context) -> bool {
        let port = cx.destination.port();
        let Some(limiter) = self.limiters.iter().find(|l| l.matches_connection(port)) else {
            return false;
        };
        let limited = !limiter.acquire(&Source::of(cx)).allowed;
        if limited {
            tracing::debug!(peer = %cx.peer, policy = %limiter.config.policy, "TCP connection rate limited");
        }
        limited
    }
}
