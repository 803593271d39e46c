//! Local rate limits (RateLimitPolicy) enforced by a real sidecar in front of a real server: a limit of
//! 100 requests per second holds under three times that load, the burst is honoured, a limited request
//! gets 429 with `retry-after` (and the `x-ratelimit-*` headers only from a rule that asks for them, on
//! allowed responses too), a config update that keeps the rule keeps its bucket, per-source buckets give
//! each client its own budget, and a port-only rule closes surplus TCP connections.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use support::upstream::{http_echo, tcp_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use trellis_api::proxy_config::{InboundListener, InboundMtls, Protocol, ProxyConfig, RateLimit};

fn limit(name: &str, max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> RateLimit {
    RateLimit {
        policy: format!("default/{name}"),
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

/// A sidecar config whose inbound listener for `app`'s port (local mode) has `limits`.
fn limited(app: SocketAddr, protocol: Protocol, limits: Vec<RateLimit>) -> ProxyConfig {
    let mut config = sidecar_config("inventory", Vec::new(), Vec::new());
    config.inbound = vec![InboundListener {
        port: app.port(),
        protocol,
        mtls: InboundMtls::Disable,
        authorization: Vec::new(),
        jwt: Vec::new(),
        rate_limits: limits,
    }];
    config
}

fn start(config: &ProxyConfig, app: SocketAddr) -> Proxy {
    Proxy::start("sidecar", config, &["--inbound-target", &app.to_string()])
}

/// A keep-alive HTTP/1.1 connection to `target` from source address `from`.
async fn connect(from: IpAddr, target: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind the source address");
    let stream = socket.connect(target).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Status, headers and body of one GET.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, http::HeaderMap, String) {
    sender.ready().await.expect("connection ready");
    let req = http::Request::get(path).header("host", "inventory").body(Empty::new()).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answered in time")
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// How many of `n` sequential GETs from `from` succeed.
async fn successes(from: IpAddr, target: SocketAddr, n: usize) -> usize {
    let mut sender = connect(from, target).await;
    let mut ok = 0;
    for _ in 0..n {
        if get(&mut sender, "/items").await.0 == 200 {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_100_per_second_holds_within_ten_percent_under_three_times_the_load() {
    const BURST: u32 = 20;
    const RUN: Duration = Duration::from_secs(4);
    const CALLERS: usize = 6;
    /// Each caller's pace: 6 callers every 20 ms offer 300 requests per second.
    const PACE: Duration = Duration::from_millis(20);
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "inventory").await;
    let rule = limit("inventory-100rps", BURST, 10, Duration::from_millis(100));
    let proxy = start(&limited(app, Protocol::Http, vec![rule]), app);
    let target = proxy.addr(15006);
    let client_ip = unique_ip();
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            tokio::spawn(async move {
                let mut sender = connect(client_ip, target).await;
                let mut ticks = tokio::time::interval(PACE);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let (mut ok, mut limited, mut other) = (0u32, 0u32, 0u32);
                while started.elapsed() < RUN {
                    ticks.tick().await;
                    match get(&mut sender, "/items").await.0 {
                        200 => ok += 1,
                        429 => limited += 1,
                        _ => other += 1,
                    }
                }
                (ok, limited, other)
            })
        })
        .collect();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for caller in callers {
        let (o, l, x) = caller.await.expect("caller");
        (ok, limited, other) = (ok + o, limited + l, other + x);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let offered = f64::from(ok + limited) / elapsed;
    let rate = f64::from(ok - BURST) / elapsed;
    println!(
        "offered {offered:.0}/s over {elapsed:.2}s: {ok} answered 200, {limited} got 429; {rate:.1}/s after the burst"
    );
    assert_eq!(other, 0, "every request is either served or limited");
    assert!(offered >= 200.0, "the load must be well above the limit to test it: {offered:.0}/s");
    assert!((90.0..=110.0).contains(&rate), "100/s within 10%: {rate:.1}/s ({ok} ok in {elapsed:.2}s)");
    let counted = metric(&proxy.metrics(), r#"trellis_rate_limited_total{policy="default/inventory-100rps"}"#);
    assert_eq!(counted, Some(f64::from(limited)), "every 429 is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_burst_passes_then_a_limited_request_gets_429_retry_after_and_the_rate_limit_headers() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "inventory").await;
    let rule = RateLimit { quota_headers: true, ..limit("burst", 50, 1, Duration::from_secs(30)) };
    let config = limited(app, Protocol::Http, vec![rule]);
    let proxy = start(&config, app);
    let mut sender = connect(unique_ip(), proxy.addr(15006)).await;
    let (status, headers, _) = get(&mut sender, "/items").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&headers["x-ratelimit-limit"], &headers["x-ratelimit-remaining"]),
        (&"50".parse().expect("v"), &"49".parse().expect("v"))
    );
    let mut ok = 1;
    for _ in 0..59 {
        if get(&mut sender, "/items").await.0 == 200 {
            ok += 1;
        }
    }
    assert!((50..=51).contains(&ok), "the burst of 50 (and at most one fill) passes: {ok}");
    let (status, headers, body) = get(&mut sender, "/items").await;
    assert_eq!(status, 429);
    assert_eq!(body, "local_rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().expect("text").parse().expect("whole seconds");
    assert!((1..=30).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-reset"].to_str().expect("text"), retry_after.to_string());

    // A config update that keeps the rule keeps its (empty) bucket.
    let mut updated = config.clone();
    updated.version = "2".into();
    proxy.update(&updated);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy.metrics(), r#"trellis_config_reloads_total{result="success"}"#) < Some(2.0) {
        assert!(Instant::now() < deadline, "the update was never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&mut sender, "/items").await.0, 429, "a config push does not refill the bucket");
}

/// The `x-ratelimit-*` header names among `headers`.
fn quota_headers(headers: &http::HeaderMap) -> Vec<String> {
    headers.keys().map(|name| name.as_str().to_owned()).filter(|name| name.starts_with("x-ratelimit-")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_headers_come_only_from_a_rule_that_asks_for_them_while_retry_after_always_does() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "inventory").await;
    let mut quiet = limit("quiet", 2, 1, Duration::from_secs(60));
    quiet.paths = vec!["/quiet*".into()];
    let loud = RateLimit {
        rule: 1,
        paths: vec!["/loud*".into()],
        quota_headers: true,
        ..limit("loud", 2, 1, Duration::from_secs(60))
    };
    let proxy = start(&limited(app, Protocol::Http, vec![quiet, loud]), app);
    let mut sender = connect(unique_ip(), proxy.addr(15006)).await;

    for _ in 0..2 {
        let (status, headers, _) = get(&mut sender, "/quiet").await;
        assert_eq!(status, 200);
        assert_eq!(quota_headers(&headers), Vec::<String>::new(), "an allowed response gets nothing added");
        assert!(!headers.contains_key("retry-after"), "retry-after is for limited responses");
        assert!(!headers.contains_key("x-envoy-ratelimited"));
    }
    let (status, headers, body) = get(&mut sender, "/quiet").await;
    assert_eq!((status, body.as_str()), (429, "local_rate_limited"));
    assert_eq!(quota_headers(&headers), Vec::<String>::new(), "a limited response gets no quota headers either");
    assert_eq!(headers["x-envoy-ratelimited"], "true", "marked as Envoy marks its local 429s");
    let retry_after: u64 = headers["retry-after"].to_str().expect("text").parse().expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");

    let expected = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];
    for remaining in ["1", "0"] {
        let (status, mut headers, _) = get(&mut sender, "/loud").await;
        assert_eq!(status, 200);
        let mut names = quota_headers(&headers);
        names.sort();
        assert_eq!(names, expected, "an allowed response reports the quota");
        assert_eq!(headers.remove("x-ratelimit-remaining").expect("remaining"), remaining);
    }
    let (status, headers, _) = get(&mut sender, "/loud").await;
    assert_eq!(status, 429);
    let mut names = quota_headers(&headers);
    names.sort();
    assert_eq!(names, expected, "a limited response reports the quota");
    assert_eq!(headers["x-ratelimit-reset"], headers["retry-after"]);
    let counted = metric(&proxy.metrics(), r#"trellis_rate_limited_total{policy="default/quiet"}"#);
    assert_eq!(counted, Some(1.0), "the quiet rule refused one request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_buckets_give_each_client_its_own_budget() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "inventory").await;
    let mut rule = limit("per-client", 5, 1, Duration::from_secs(60));
    rule.per_source = true;
    let proxy = start(&limited(app, Protocol::Http, vec![rule.clone()]), app);
    let (a, b) = (unique_ip(), unique_ip());
    assert_eq!(successes(a, proxy.addr(15006), 8).await, 5);
    assert_eq!(successes(b, proxy.addr(15006), 8).await, 5, "b is not limited by a's requests");
    assert_eq!(successes(a, proxy.addr(15006), 2).await, 0, "a's bucket is still empty, on a new connection too");

    rule.per_source = false;
    let shared = start(&limited(app, Protocol::Http, vec![rule]), app);
    assert_eq!(successes(a, shared.addr(15006), 8).await, 5);
    assert_eq!(successes(b, shared.addr(15006), 8).await, 0, "without perSource one budget serves everybody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_paths_limits_only_its_paths() {
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "inventory").await;
    let mut rule = limit("checkout", 2, 1, Duration::from_secs(60));
    rule.paths = vec!["/checkout*".into()];
    let proxy = start(&limited(app, Protocol::Http, vec![rule]), app);
    let mut sender = connect(unique_ip(), proxy.addr(15006)).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for path in ["/checkout", "/checkout/1", "/checkout?x=1", "/items", "/items"] {
            out.push(get(&mut sender, path).await.0);
        }
        out
    };
    assert_eq!(statuses, [200, 200, 429, 200, 200], "the query does not take part in the path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_only_rule_closes_tcp_connections_beyond_the_limit_at_once() {
    let app = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let mut rule = limit("db-connections", 3, 1, Duration::from_secs(60));
    rule.ports = vec![app.port()];
    let proxy = start(&limited(app, Protocol::Tcp, vec![rule]), app);
    let mut echoed = 0;
    for _ in 0..5 {
        let mut stream = TcpStream::connect(proxy.addr(15006)).await.expect("connect");
        let _ = stream.write_all(b"ping").await;
        let mut reply = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply)).await;
        match read {
            Ok(Ok(_)) => {
                assert_eq!(&reply, b"ping");
                echoed += 1;
            }
            Ok(Err(_)) => {}
            Err(_) => panic!("a limited connection must be closed at once, not left hanging"),
        }
    }
    assert_eq!(echoed, 3);
    let counted = metric(&proxy.metrics(), r#"trellis_rate_limited_total{policy="default/db-connections"}"#);
    assert_eq!(counted, Some(2.0));
}
