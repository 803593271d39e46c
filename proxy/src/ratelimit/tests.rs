use std::net::Ipv4Addr;

use http_body_util::BodyExt;

use super::*;

fn rule(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> RateLimit {
    RateLimit {
        policy: "shop/limit".into(),
        rule: 0,
        paths: Vec::new(),
        methods: Vec::new(),
        ports: Vec::new(),
        max_tokens,
        tokens_per_fill,
        fill_interval,
        per_source: false,
        status_code: 429,
        quota_headers: false,
    }
}

const ANYONE: Source<'static> = Source::Ip(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How many of `n` acquisitions at `now` are allowed.
fn allowed(limiter: &Limiter, n: usize, now: Duration, source: &Source<'_>) -> usize {
    (0..n).filter(|_| limiter.acquire_at(now, source).allowed).count()
}

#[test]
fn a_full_bucket_lets_its_burst_through_then_refuses() {
    let limiter = Limiter::new(&rule(5, 1, ms(1000)), &Metrics::new());
    assert_eq!(allowed(&limiter, 8, ms(10), &ANYONE), 5);
    let quota = limiter.acquire_at(ms(10), &ANYONE);
    assert!(!quota.allowed);
    assert_eq!((quota.limit, quota.remaining), (5, 0));
}

#[test]
fn tokens_come_back_at_each_fill_boundary_and_never_beyond_max_tokens() {
    let limiter = Limiter::new(&rule(10, 3, ms(100)), &Metrics::new());
    assert_eq!(allowed(&limiter, 20, ms(0), &ANYONE), 10);
    assert_eq!(allowed(&limiter, 5, ms(99), &ANYONE), 0, "nothing before the first boundary");
    assert_eq!(allowed(&limiter, 5, ms(100), &ANYONE), 3, "one fill of 3");
    assert_eq!(allowed(&limiter, 20, ms(350), &ANYONE), 6, "two more fills (200 ms and 300 ms)");
    assert_eq!(allowed(&limiter, 20, ms(10_000), &ANYONE), 10, "a long pause refills to max_tokens only");
}

#[test]
fn the_refill_arithmetic_is_a_function_of_the_fill_index() {
    let refill = Refill { max_tokens: 100, tokens_per_fill: 7, interval: ms(50) };
    assert_eq!(refill.fill_at(ms(149)), 2);
    assert_eq!(refill.until_next_fill(ms(149)), ms(1));
    assert_eq!(refill.until_next_fill(ms(150)), ms(50));
    let empty = BucketState { fill: 2, tokens: 0 };
    assert_eq!(refill.refilled(empty, 5), BucketState { fill: 5, tokens: 21 });
    assert_eq!(refill.refilled(empty, 1000), BucketState { fill: 1000, tokens: 100 });
    assert_eq!(refill.refilled(empty, 1), empty, "a clock read behind the bucket does not refill it");
    let wrapped = BucketState { fill: u32::MAX, tokens: 0 };
    assert_eq!(refill.refilled(wrapped, 1), BucketState { fill: 1, tokens: 14 }, "the fill index wraps");
}

#[test]
fn retry_after_is_the_time_to_the_next_fill_rounded_up_to_whole_seconds() {
    let limiter = Limiter::new(&rule(1, 1, Duration::from_secs(10)), &Metrics::new());
    assert!(limiter.acquire_at(ms(2_500), &ANYONE).allowed);
    let quota = limiter.acquire_at(ms(2_500), &ANYONE);
    assert_eq!(quota.reset, ms(7_500));
    assert_eq!(quota.reset_seconds(), 8);
    let short = Quota { allowed: false, limit: 1, remaining: 0, reset: ms(20) };
    assert_eq!(short.reset_seconds(), 1, "never 0: a retry right away would be limited again");
}

#[test]
fn a_limited_request_gets_the_rules_status_envoys_body_and_the_rate_limit_headers_when_asked() {
    let mut config = rule(1, 1, Duration::from_secs(2));
    config.status_code = 503;
    config.quota_headers = true;
    let limiter = Limiter::new(&config, &Metrics::new());
    limiter.acquire_at(ms(0), &ANYONE);
    let quota = limiter.acquire_at(ms(500), &ANYONE);
    let response = limiter.limited_response(&quota);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers();
    assert_eq!(headers[RETRY_AFTER], "2");
    assert_eq!(headers[LIMIT_HEADER], "1");
    assert_eq!(headers[REMAINING_HEADER], "0");
    assert_eq!(headers[RESET_HEADER], "2");
    let body = futures_util::FutureExt::now_or_never(response.into_body().collect())
        .expect("a full body is ready")
        .expect("no error")
        .to_bytes();
    assert_eq!(body, LIMITED_BODY);
}

#[test]
fn a_limited_request_gets_retry_after_but_no_rate_limit_headers_by_default() {
    let limiter = Limiter::new(&rule(1, 1, Duration::from_secs(2)), &Metrics::new());
    limiter.acquire_at(ms(0), &ANYONE);
    let response = limiter.limited_response(&limiter.acquire_at(ms(500), &ANYONE));
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers();
    assert_eq!(headers[RETRY_AFTER], "2");
    assert_eq!(headers[RATELIMITED_HEADER], "true", "marked as Envoy marks its 429s");
    for name in [LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER] {
        assert!(!headers.contains_key(&name), "{name} is opt-in");
    }
}

#[test]
fn refusals_are_counted_per_policy() {
    let metrics = Metrics::new();
    let limiter = Limiter::new(&rule(2, 1, Duration::from_secs(1)), &metrics);
    allowed(&limiter, 5, ms(0), &ANYONE);
    let text = metrics.encode();
    assert!(text.contains("trellis_rate_limited_total{policy=\"shop/limit\"} 3"), "{text}");
}

#[test]
fn each_source_has_its_own_bucket_when_per_source() {
    let mut config = rule(3, 1, Duration::from_secs(1));
    config.per_source = true;
    let limiter = Limiter::new(&config, &Metrics::new());
    let a = Source::Identity("spiffe://cluster.local/ns/shop/sa/a");
    let b = Source::Identity("spiffe://cluster.local/ns/shop/sa/b");
    let ip = Source::Ip("10.0.0.7".parse().expect("an IP"));
    assert_eq!(allowed(&limiter, 10, ms(0), &a), 3);
    assert_eq!(allowed(&limiter, 10, ms(0), &b), 3, "b's budget is not a's");
    assert_eq!(allowed(&limiter, 10, ms(0), &ip), 3);
    assert_eq!(allowed(&limiter, 10, ms(1000), &a), 1, "a refills on its own");
    assert_eq!(limiter.sources(), 3);
}

#[test]
fn the_least_recently_seen_source_is_forgotten_when_there_are_too_many() {
    let mut config = rule(1, 1, Duration::from_secs(60));
    config.per_source = true;
    let limiter = Limiter::with_max_sources(&config, &Metrics::new(), SOURCE_SHARDS * 2);
    let ips: Vec<Source<'static>> =
        (0..200u8).map(|i| Source::Ip(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))).collect();
    for ip in &ips {
        assert!(limiter.acquire_at(ms(0), ip).allowed);
    }
    assert!(limiter.sources() <= SOURCE_SHARDS * 2, "bounded: {}", limiter.sources());
    assert!(limiter.acquire_at(ms(0), &ips[0]).allowed, "the first source was forgotten: a full bucket again");
    assert!(!limiter.acquire_at(ms(0), &ips[199]).allowed, "the last one is still remembered");
}

#[test]
fn paths_methods_and_ports_match_as_istio_writes_them() {
    let mut config = rule(1, 1, ms(100));
    config.paths = vec!["/items".into(), "/api/*".into(), "*.png".into()];
    config.methods = vec!["GET".into()];
    config.ports = vec![8080];
    let limiter = Limiter::new(&config, &Metrics::new());
    assert!(limiter.matches_http("GET", "/items", 8080));
    assert!(limiter.matches_http("GET", "/api/v1/orders", 8080));
    assert!(limiter.matches_http("GET", "/img/logo.png", 8080));
    assert!(!limiter.matches_http("GET", "/items/1", 8080), "exact means exact");
    assert!(!limiter.matches_http("POST", "/items", 8080));
    assert!(!limiter.matches_http("GET", "/items", 9090));
    assert!(!limiter.matches_connection(8080), "a rule on paths never limits TCP connections");
    config.paths = vec!["*".into()];
    config.methods.clear();
    assert!(Limiter::new(&config, &Metrics::new()).matches_http("DELETE", "/anything", 8080));
    config.paths.clear();
    let port_only = Limiter::new(&config, &Metrics::new());
    assert!(port_only.matches_connection(8080));
    assert!(!port_only.matches_connection(9090));
}

#[test]
fn the_first_matching_rule_decides() {
    let metrics = Metrics::new();
    let mut narrow = rule(1, 1, Duration::from_secs(60));
    narrow.paths = vec!["/checkout".into()];
    let broad = RateLimit { rule: 1, ..rule(100, 1, Duration::from_secs(60)) };
    let rules = vec![narrow.clone(), broad.clone()];
    let limits = RateLimits::new(&rules, &limiters(&rules, None, &metrics));
    let first = limits.for_http("GET", "/checkout", 80).expect("a rule");
    assert_eq!(first.config(), &narrow);
    assert_eq!(limits.for_http("GET", "/other", 80).expect("a rule").config(), &broad);
}

#[test]
fn buckets_survive_a_config_update_that_keeps_their_rule() {
    let metrics = Metrics::new();
    let kept = rule(1, 1, Duration::from_secs(60));
    let changed = RateLimit { rule: 1, ..rule(1, 1, Duration::from_secs(60)) };
    let before = limiters([&kept, &changed], None, &metrics);
    assert!(before[&kept].acquire(&ANYONE).allowed);
    assert!(before[&changed].acquire(&ANYONE).allowed);
    let changed_now = RateLimit { max_tokens: 2, ..changed.clone() };
    let after = limiters([&kept, &changed_now], Some(&before), &metrics);
    assert!(Arc::ptr_eq(&before[&kept], &after[&kept]));
    assert!(!after[&kept].acquire(&ANYONE).allowed, "the kept bucket is still empty");
    assert!(after[&changed_now].acquire(&ANYONE).allowed, "a changed rule starts with a full bucket");
}

#[test]
fn concurrent_takers_never_get_more_than_the_bucket_holds() {
    let limiter = Arc::new(Limiter::new(&rule(1000, 1, Duration::from_secs(60)), &Metrics::new()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let limiter = limiter.clone();
            std::thread::spawn(move || allowed(&limiter, 600, ms(5), &ANYONE))
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("no panic")).sum();
    assert_eq!(total, 1000);
}
