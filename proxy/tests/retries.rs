//! Retries, retry budgets and timeouts through the real `trellis-proxy` binary, against upstream
//! servers that fail, hang, reset connections and answer slowly on purpose (`support/faulty.rs`).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::faulty::{self, Fault, Faulty};
use support::upstream::{Body, body};
use support::*;
use trellis_api::proxy_config::{
    Cluster, ConnectionPool, HashKey, LoadBalancer, Protocol, RetryBudget, RetryPolicy, Route, RouteMatch,
    StringMatcher,
};

const PORT: u16 = 8080;
/// The most a single request may take in these tests before something is wrong.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Body>;

fn client(h2: bool) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).http2_only(h2).build(connector)
}

fn retries(attempts: u32, retry_on: &[&str]) -> RetryPolicy {
    RetryPolicy {
        attempts,
        per_try_timeout: None,
        retry_on: retry_on.iter().map(|s| (*s).to_owned()).collect(),
        backoff: None,
        allow_previous_hosts: false,
        remote_localities: false,
    }
}

/// A route for path prefix `prefix` to cluster `cluster`.
fn route_to(prefix: &str, cluster: &str, policy: Option<RetryPolicy>, timeout: Option<Duration>) -> Route {
    let matches = vec![RouteMatch { uri: Some(StringMatcher::Prefix(prefix.into())), ..Default::default() }];
    let mut r = route(prefix, matches, forward(vec![to(cluster, 1)]));
    r.retries = policy;
    r.timeout = timeout;
    r
}

fn cluster_of(name: &str, servers: &[&Faulty], lb: LoadBalancer) -> Cluster {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let mut c = cluster(name, &addrs);
    c.load_balancer = lb;
    c
}

fn gateway(routes: Vec<Route>, clusters: Vec<Cluster>) -> Proxy {
    let config = gateway_config(PORT, vec![vhost("svc", PORT, &["svc"], routes)], clusters);
    Proxy::start("gateway", &config, &[])
}

async fn faulty(fault: Fault) -> Faulty {
    faulty::start(SocketAddr::new(unique_ip(), 0), fault).await
}

/// Sends `req` and returns status, headers and body, bounded by [`REQUEST_LIMIT`].
async fn send(client: &HttpClient, req: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response =
        tokio::time::timeout(REQUEST_LIMIT, client.request(req)).await.expect("an answer in time").expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

fn get(proxy: &Proxy, path: &str) -> Request<Body> {
    Request::get(format!("http://{}{path}", proxy.addr(PORT))).header("host", "svc").body(body("")).expect("request")
}

/// Sends `total` GETs to `path` from `workers` concurrent callers; returns how many got 200.
async fn success_count(proxy: &Proxy, path: &str, total: usize, workers: usize) -> usize {
    let client = client(false);
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, ok, url) = (client.clone(), ok.clone(), format!("http://{}{path}", proxy.addr(PORT)));
        let share = total / workers + usize::from(w < total % workers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let req = Request::get(&url).header("host", "svc").body(body("")).expect("request");
                if send(&client, req).await.0 == StatusCode::OK {
                    ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    ok.load(std::sync::atomic::Ordering::SeqCst)
}

fn counter(proxy: &Proxy, name: &str, cluster: &str) -> f64 {
    metric(&proxy.metrics(), &format!("trellis_{name}_total{{cluster=\"{cluster}\"}}")).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_retries_turn_a_service_failing_half_its_requests_into_99_percent_success() {
    // Half of the service's endpoints answer 503 to everything: half of its requests fail.
    let (bad_1, bad_2) = (faulty(Fault::FailAlways).await, faulty(Fault::FailAlways).await);
    let (good_1, good_2) = (faulty(Fault::Healthy).await, faulty(Fault::Healthy).await);
    let service = cluster_of("flaky", &[&bad_1, &good_1, &bad_2, &good_2], LoadBalancer::Random);
    let proxy = gateway(
        vec![route_to("/retried", "flaky", Some(retries(3, &["5xx"])), None), route_to("/plain", "flaky", None, None)],
        vec![service],
    );
    let plain = success_count(&proxy, "/plain", 200, 4).await;
    assert!((70..=130).contains(&plain), "without retries {plain}/200 succeed; half the requests fail");
    let failed_before = bad_1.seen.requests() + bad_2.seen.requests();
    let retried = success_count(&proxy, "/retried", 600, 8).await;
    let failed_tries = bad_1.seen.requests() + bad_2.seen.requests() - failed_before;
    eprintln!("half the endpoints failing: {plain}/200 without retries, {retried}/600 with attempts: 3");
    assert!(retried * 100 >= 600 * 99, "with attempts: 3 only {retried}/600 succeeded");
    assert!(failed_tries > 200, "about half the first tries failed and were retried: {failed_tries}");
    assert_eq!(counter(&proxy, "retries", "flaky") as usize, failed_tries, "every failed try was retried and counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_failures_are_retried_exactly_attempts_times() {
    // Each attempt fails with probability 1/2 on its own: 4 tries fail together 1/16 of the time, so
    // a single endpoint failing at random caps success near 93.75% whatever the proxy does.
    let flaky = faulty(Fault::FailRandomly(0.5)).await;
    let proxy = gateway(
        vec![route_to("/", "flaky", Some(retries(3, &["5xx"])), None)],
        vec![cluster_of("flaky", &[&flaky], LoadBalancer::RoundRobin)],
    );
    let ok = success_count(&proxy, "/", 800, 8).await;
    let share = ok as f64 / 800.0 * 100.0;
    eprintln!("independent 50% failures: {share:.1}% of 800 succeeded with attempts: 3");
    assert!((89.0..=98.0).contains(&share), "{share:.1}% succeeded; 1 - 0.5^4 = 93.75% expected");
    let received = flaky.seen.requests();
    assert!(received <= 800 * 4, "never more than 4 attempts per request: {received}");
    assert_eq!(counter(&proxy, "retries", "flaky") as usize, received - 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_an_endpoint_the_request_has_not_tried() {
    let broken = faulty(Fault::FailAlways).await;
    let healthy = faulty(Fault::Healthy).await;
    let policy = retries(1, &["5xx"]);
    let mut sticky_policy = policy.clone();
    sticky_policy.allow_previous_hosts = true;
    let proxy = gateway(
        vec![route_to("/avoid", "both", Some(policy), None), route_to("/any", "both", Some(sticky_policy), None)],
        vec![cluster_of("both", &[&broken, &healthy], LoadBalancer::Random)],
    );
    let ok = success_count(&proxy, "/avoid", 200, 4).await;
    assert_eq!(ok, 200, "one retry always lands on the healthy endpoint");
    let broken_ids = broken.seen.request_ids();
    assert!(broken_ids.len() > 50, "random balancing sent the broken endpoint {} first tries", broken_ids.len());
    let healthy_ids = healthy.seen.request_ids();
    assert!(broken_ids.iter().all(|id| healthy_ids.contains(id)), "each request the broken endpoint failed moved on");
    // Istio's retryIgnorePreviousHosts: false lets a retry pick the same endpoint again.
    let any = success_count(&proxy, "/any", 200, 4).await;
    assert!(any < 200, "without the previous-hosts predicate some retries hit the broken endpoint again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_retries_move_along_the_ring() {
    let broken = faulty(Fault::FailAlways).await;
    let healthy = faulty(Fault::Healthy).await;
    let lb = LoadBalancer::ConsistentHash(HashKey::Header("x-user".into()));
    let proxy = gateway(
        vec![route_to("/", "hashed", Some(retries(1, &["5xx"])), None)],
        vec![cluster_of("hashed", &[&broken, &healthy], lb)],
    );
    let c = client(false);
    for user in 0..40 {
        let req = Request::get(format!("http://{}/", proxy.addr(PORT)))
            .header("host", "svc")
            .header("x-user", format!("user-{user}"))
            .body(body(""))
            .expect("request");
        assert_eq!(send(&c, req).await.0, StatusCode::OK, "user-{user}");
    }
    assert!(broken.seen.requests() > 0, "some users hash to the broken endpoint first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_and_resets_are_retried_when_listed_and_only_then() {
    let closed = {
        let listener = std::net::TcpListener::bind(SocketAddr::new(unique_ip(), 0)).expect("bind");
        listener.local_addr().expect("addr")
    };
    let resetting = faulty(Fault::Reset).await;
    let healthy = faulty(Fault::Healthy).await;
    let mut both = cluster("both", &[closed, resetting.addr, healthy.addr]);
    both.load_balancer = LoadBalancer::Random;
    let resets_only = cluster_of("resets", &[&resetting, &healthy], LoadBalancer::Random);
    let proxy = gateway(
        vec![
            route_to("/listed", "both", Some(retries(2, &["connect-failure", "reset"])), None),
            route_to("/connect-only", "resets", Some(retries(2, &["connect-failure"])), None),
        ],
        vec![both, resets_only],
    );
    let ok = success_count(&proxy, "/listed", 150, 3).await;
    assert_eq!(ok, 150, "refused connections and resets moved on to the healthy endpoint");
    assert!(resetting.seen.requests() > 0, "the resetting endpoint was tried");
    let before = resetting.seen.requests();
    let ok = success_count(&proxy, "/connect-only", 100, 2).await;
    let resets = resetting.seen.requests() - before;
    assert!(resets > 0 && ok == 100 - resets, "a reset is not a connect failure: {ok} ok, {resets} resets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_http2_stream_is_retried_under_refused_stream() {
    let refusing = faulty(Fault::RefuseStream).await;
    let healthy = faulty(Fault::Healthy).await;
    let h2_cluster = |name: &str| {
        let mut c = cluster_of(name, &[&refusing, &healthy], LoadBalancer::RoundRobin);
        c.protocol = Protocol::Http2;
        c
    };
    let proxy = gateway(
        vec![
            route_to("/listed", "listed", Some(retries(2, &["refused-stream"])), None),
            route_to("/unlisted", "unlisted", Some(retries(2, &["connect-failure"])), None),
        ],
        vec![h2_cluster("listed"), h2_cluster("unlisted")],
    );
    assert_eq!(success_count(&proxy, "/listed", 60, 2).await, 60, "every refused stream moved on");
    let refused_before = refusing.seen.requests();
    assert!(refused_before >= 20, "round robin sent the refusing endpoint {refused_before} streams");
    let ok = success_count(&proxy, "/unlisted", 60, 2).await;
    let refused = refusing.seen.requests() - refused_before;
    assert!(refused > 0 && ok == 60 - refused, "a refused stream is not a connect failure: {ok} ok, {refused} refused");
}

fn post_stream(proxy: &Proxy, path: &str, chunk: usize, chunks: usize) -> Request<Body> {
    let frames: Vec<Result<Frame<Bytes>, hyper::Error>> =
        (0..chunks).map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + (i % 26) as u8; chunk])))).collect();
    Request::post(format!("http://{}{path}", proxy.addr(PORT)))
        .header("host", "svc")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_not_retried_and_still_arrives_whole() {
    let broken = faulty(Fault::FailAlways).await;
    let proxy = gateway(
        vec![route_to("/", "broken", Some(retries(3, &["5xx"])), None)],
        vec![cluster_of("broken", &[&broken], LoadBalancer::RoundRobin)],
    );
    let c = client(false);
    // A streamed (chunked) body: nothing announces its size; the replay copy overflows on the way.
    let (status, _, _) = send(&c, post_stream(&proxy, "/", 16 * 1024, 7)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(broken.seen.body_sizes(), [7 * 16 * 1024], "one attempt, the whole 112 KiB");
    // A body whose content-length announces more than the bound is never wrapped.
    let big = Request::post(format!("http://{}/", proxy.addr(PORT)))
        .header("host", "svc")
        .body(body(vec![b'z'; 100 * 1024]))
        .expect("request");
    assert_eq!(send(&c, big).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(broken.seen.body_sizes(), [7 * 16 * 1024, 100 * 1024]);
    // A small streamed body is replayed whole to every attempt.
    let (status, _, _) = send(&c, post_stream(&proxy, "/", 4 * 1024, 3)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(&broken.seen.body_sizes()[2..], [12 * 1024; 4], "the first attempt and three retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_body_reaches_the_endpoint_that_answers_intact() {
    let flaky = faulty(Fault::FailEveryOther).await;
    let proxy = gateway(
        vec![route_to("/", "flaky", Some(retries(2, &["5xx"])), None)],
        vec![cluster_of("flaky", &[&flaky], LoadBalancer::RoundRobin)],
    );
    let c = client(false);
    for _ in 0..10 {
        let (status, _, echoed) = send(&c, post_stream(&proxy, "/", 1000, 30)).await;
        assert_eq!(status, StatusCode::OK);
        let expected: Vec<u8> = (0..30).flat_map(|i| vec![b'a' + (i % 26) as u8; 1000]).collect();
        assert_eq!(echoed, expected);
    }
}

/// Sends `concurrency` GETs at once and returns the wall time until all are answered.
async fn burst(proxy: &Proxy, path: &str, concurrency: usize) -> Duration {
    let started = Instant::now();
    let c = client(false);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, req) = (c.clone(), get(proxy, path));
        tasks.push(tokio::spawn(async move { send(&c, req).await.0 }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::SERVICE_UNAVAILABLE, "a full outage");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_full_outage_the_retry_budget_and_max_retries_cap_retries_in_flight() {
    const FAIL_AFTER: Duration = Duration::from_millis(200);
    const CALLERS: usize = 40;
    const ATTEMPTS: u32 = 5;
    let budgeted = faulty(Fault::FailSlowly(FAIL_AFTER)).await;
    let capped = faulty(Fault::FailSlowly(FAIL_AFTER)).await;
    let unlimited = faulty(Fault::FailSlowly(FAIL_AFTER)).await;
    let mut with_budget = cluster_of("budgeted", &[&budgeted], LoadBalancer::RoundRobin);
    with_budget.retry_budget = Some(RetryBudget { percent: 0.0, min_retry_concurrency: 2 });
    let mut with_max = cluster_of("capped", &[&capped], LoadBalancer::RoundRobin);
    with_max.connection_pool = Some(ConnectionPool { max_retries: Some(1), ..Default::default() });
    let policy = Some(retries(ATTEMPTS, &["5xx"]));
    let proxy = gateway(
        vec![
            route_to("/budgeted", "budgeted", policy.clone(), None),
            route_to("/capped", "capped", policy.clone(), None),
            route_to("/unlimited", "unlimited", policy, None),
        ],
        vec![with_budget, with_max, cluster_of("unlimited", &[&unlimited], LoadBalancer::RoundRobin)],
    );
    // Without a cap every caller retries every time.
    burst(&proxy, "/unlimited", CALLERS).await;
    assert_eq!(unlimited.seen.requests(), CALLERS * (1 + ATTEMPTS as usize));
    // A retry holds its place for at least FAIL_AFTER, so `cap` places allow at most
    // cap * (elapsed / FAIL_AFTER + 1) retries over the whole burst.
    for (path, server, cap, name) in [("/budgeted", &budgeted, 2usize, "budgeted"), ("/capped", &capped, 1, "capped")] {
        let elapsed = burst(&proxy, path, CALLERS).await;
        let retried = server.seen.requests() - CALLERS;
        let bound = cap * (elapsed.as_millis() / FAIL_AFTER.as_millis() + 1) as usize;
        eprintln!(
            "{name}: {retried} retries for {CALLERS} callers in {elapsed:?} (bound {bound}; uncapped: {})",
            CALLERS * 5
        );
        assert!(retried >= 1, "{name}: the cap still lets {cap} retries through");
        assert!(retried <= bound, "{name}: {retried} retries in {elapsed:?} exceed {cap} in flight (bound {bound})");
        assert!(retried < CALLERS, "{name}: {retried} retries, far below the {} an uncapped outage sends", CALLERS * 5);
        assert_eq!(counter(&proxy, "retries", name) as usize, retried);
        let overflow = counter(&proxy, "retry_overflow", name) as usize;
        assert!(overflow >= CALLERS - 2 * cap, "{name}: {overflow} refused retries counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_abandons_a_hanging_endpoint_for_another() {
    let hanging = faulty(Fault::Hang).await;
    let healthy = faulty(Fault::Healthy).await;
    let mut policy = retries(2, &["gateway-error"]);
    policy.per_try_timeout = Some(Duration::from_millis(200));
    let proxy = gateway(
        vec![route_to("/", "both", Some(policy), None)],
        vec![cluster_of("both", &[&hanging, &healthy], LoadBalancer::RoundRobin)],
    );
    let c = client(false);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let (status, headers, _) = send(&c, get(&proxy, "/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-upstream"], healthy.addr.to_string().as_str());
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("per-try timeout 200 ms: slowest of 20 requests {slowest:?}");
    assert!(hanging.seen.requests() >= 5, "round robin sent first tries to the hanging endpoint");
    assert!(slowest >= Duration::from_millis(200), "a try was abandoned only after its timeout: {slowest:?}");
    assert!(slowest < Duration::from_secs(3), "and not much later: {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_answers_504_in_time_and_covers_the_retries() {
    let hanging = faulty(Fault::Hang).await;
    let mut policy = retries(5, &["gateway-error"]);
    policy.per_try_timeout = Some(Duration::from_millis(150));
    let proxy = gateway(
        vec![
            route_to("/plain", "hang", None, Some(Duration::from_millis(300))),
            route_to("/retried", "hang", Some(policy), Some(Duration::from_millis(400))),
        ],
        vec![cluster_of("hang", &[&hanging], LoadBalancer::RoundRobin)],
    );
    let c = client(false);
    for (path, timeout) in [("/plain", 300), ("/retried", 400)] {
        let started = Instant::now();
        let (status, _, text) = send(&c, get(&proxy, path)).await;
        let elapsed = started.elapsed();
        eprintln!("{path}: {status} after {elapsed:?} (route timeout {timeout} ms)");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{path}");
        assert_eq!(text, "upstream request timeout\n", "{path}");
        assert!(elapsed >= Duration::from_millis(timeout), "{path}: answered after {elapsed:?}");
        assert!(elapsed < Duration::from_millis(timeout) + Duration::from_secs(1), "{path}: {elapsed:?}");
    }
    // 150 ms tries within 400 ms: the route timeout cut the retries short.
    assert!((2..=4).contains(&(hanging.seen.requests() - 1)), "{} tries", hanging.seen.requests() - 1);
}

/// Parses a `grpc-timeout` value (`<digits><unit>`).
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().expect("digits");
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        other => panic!("unit {other:?}"),
    }
}

/// A unary gRPC call (one empty message) to service `svc` through the proxy, over HTTP/2 with
/// `:authority: svc`, carrying `grpc-timeout`.
async fn grpc_call(proxy: &Proxy, path: &str, timeout: &str) -> (StatusCode, http::HeaderMap) {
    let stream = tokio::net::TcpStream::connect(proxy.addr(PORT)).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let req = Request::post(format!("http://svc{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(body(&b"\0\0\0\0\0"[..]))
        .expect("request");
    let response =
        tokio::time::timeout(REQUEST_LIMIT, sender.send_request(req)).await.expect("in time").expect("response");
    (response.status(), response.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_deadline_is_honoured_and_sent_upstream_with_the_time_left() {
    let slow = faulty(Fault::Slow(Duration::from_secs(3))).await;
    let healthy = faulty(Fault::Healthy).await;
    let grpc = |name: &str, server: &Faulty| {
        let mut c = cluster_of(name, &[server], LoadBalancer::RoundRobin);
        c.protocol = Protocol::Grpc;
        c
    };
    let proxy = gateway(
        vec![
            route_to("/slow", "slow", None, None),
            route_to("/fast/capped", "fast", None, Some(Duration::from_secs(1))),
            route_to("/fast", "fast", None, None),
        ],
        vec![grpc("slow", &slow), grpc("fast", &healthy)],
    );
    // The client's 300 ms deadline passes long before the slow upstream answers.
    let started = Instant::now();
    let (status, headers) = grpc_call(&proxy, "/slow", "300m").await;
    let elapsed = started.elapsed();
    eprintln!(
        "grpc-timeout 300m against a 3 s upstream: grpc-status {:?} after {elapsed:?}",
        headers.get("grpc-status")
    );
    assert_eq!(status, StatusCode::OK, "gRPC errors travel in grpc-status");
    assert_eq!(headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(slow.seen.grpc_timeouts().len(), 1);
    // The deadline travels upstream as the time left, never more than the client gave.
    let (status, headers) = grpc_call(&proxy, "/fast", "2S").await;
    assert_eq!((status, headers["grpc-status"].to_str().expect("text")), (StatusCode::OK, "0"));
    let seen = grpc_timeout(headers["x-seen-grpc-timeout"].to_str().expect("text"));
    assert!(seen <= Duration::from_secs(2) && seen > Duration::from_millis(1500), "upstream saw {seen:?}");
    // A shorter route timeout caps the client's deadline.
    let (_, headers) = grpc_call(&proxy, "/fast/capped", "10S").await;
    let seen = grpc_timeout(headers["x-seen-grpc-timeout"].to_str().expect("text"));
    assert!(seen <= Duration::from_secs(1) && seen > Duration::from_millis(500), "upstream saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_whose_every_try_times_out_hears_deadline_exceeded() {
    let hanging = faulty(Fault::Hang).await;
    let mut policy = retries(1, &["reset"]);
    policy.per_try_timeout = Some(Duration::from_millis(150));
    let mut cluster = cluster_of("hang", &[&hanging], LoadBalancer::RoundRobin);
    cluster.protocol = Protocol::Grpc;
    let proxy = gateway(vec![route_to("/", "hang", Some(policy), None)], vec![cluster]);
    // The client's deadline is far away: the tries' own timeouts end the call.
    let started = Instant::now();
    let (status, headers) = grpc_call(&proxy, "/", "20S").await;
    let elapsed = started.elapsed();
    eprintln!(
        "two 150 ms tries against a hanging upstream: {status}, grpc-status {:?} after {elapsed:?}",
        headers.get("grpc-status")
    );
    assert_eq!(status, StatusCode::OK, "gRPC errors travel in grpc-status");
    assert_eq!(headers["grpc-status"], "4", "DEADLINE_EXCEEDED, not a 504");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(hanging.seen.requests(), 2, "the first try and one retry");
}
