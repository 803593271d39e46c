//! The access log for real: the `trellis-proxy` binary with `telemetry.accessLog` on, its stdout read
//! line by line, in front of real upstream servers that answer, are slow, refuse connections or
//! echo TCP. Each test checks the lines a user would read: one per request (or TCP connection),
//! Envoy's text format or JSON, with the response flags the proxy decided.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::overload::Misbehaving;
use support::upstream::{Body, body, client, http_echo, tcp_echo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_api::proxy_config::{
    ConnectionPool, Fault, FaultAbort, FaultDelay, ProxyConfig, RetryPolicy, Route, Telemetry,
};

const PORT: u16 = 8080;
/// How long to wait for a line that should come (generous: the machine may be loaded).
const LINE_WAIT: Duration = Duration::from_secs(10);
/// How long to watch for a line that must not come.
const QUIET_WAIT: Duration = Duration::from_secs(1);

/// A proxy process whose stdout (the access log) is collected, line by line, as it is written.
struct LoggedProxy {
    proxy: Proxy,
    lines: Arc<Mutex<Vec<String>>>,
}

impl std::ops::Deref for LoggedProxy {
    type Target = Proxy;
    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

impl LoggedProxy {
    fn start(mode: &str, config: &ProxyConfig, extra: &[&str]) -> Self {
        let (proxy, lines) = Proxy::start_collecting_stdout(mode, config, extra);
        Self { proxy, lines }
    }

    /// The access log lines so far (text lines start with `[`, JSON ones with `{`; the rest is
    /// the proxy's own logging).
    fn log_lines(&self) -> Vec<String> {
        let lines = self.lines.lock().expect("lines");
        lines.iter().filter(|l| l.starts_with('[') || l.starts_with('{')).cloned().collect()
    }

    /// Waits until `n` access log lines are out, and returns them all.
    async fn wait_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let lines = self.log_lines();
            if lines.len() >= n || Instant::now() > deadline {
                assert!(lines.len() >= n, "expected {n} access log lines, got {lines:#?}");
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the first access log line that contains `needle`.
    async fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let lines = self.log_lines();
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no access log line contains {needle:?}: {lines:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn metrics(&self) -> String {
        http_get(self.addr(15090), "/stats/prometheus").map(|(_, body)| body).unwrap_or_default()
    }
}

/// Sends a request and reads its whole answer: status and body.
async fn send(req: Request<Body>) -> (StatusCode, Bytes) {
    let response = client().request(req).await.expect("response");
    let status = response.status();
    (status, response.into_body().collect().await.expect("body").to_bytes())
}

fn get(addr: SocketAddr, host: &str, path: &str) -> Request<Body> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .header("user-agent", "access-log-test/1")
        .header("x-request-id", "req-1234")
        .body(body(""))
        .expect("request")
}

fn logging(json: bool) -> Telemetry {
    Telemetry { access_log: true, access_log_json: json, ..Telemetry::default() }
}

/// A gateway config with one route `shop` to cluster `main` at `endpoints`, changed by `edit`.
fn shop(endpoints: &[SocketAddr], telemetry: Telemetry, edit: impl FnOnce(&mut Route)) -> ProxyConfig {
    let mut only = route("shop", Vec::new(), forward(vec![to("main", 1)]));
    edit(&mut only);
    let mut config =
        gateway_config(PORT, vec![vhost("shop", PORT, &["shop"], vec![only])], vec![cluster("main", endpoints)]);
    config.telemetry = telemetry;
    config
}

/// An address nothing listens on: a port bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(SocketAddr::new(unique_ip(), 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_envoy_text_line_with_method_path_status_flags_and_upstream_host() {
    let echo = http_echo(SocketAddr::new(unique_ip(), 0), "main").await;
    let proxy = LoggedProxy::start("gateway", &shop(&[echo], logging(false), |_| {}), &[]);
    let req = Request::post(format!("http://{}/items?id=7", proxy.addr(PORT)))
        .header("host", "shop")
        .header("user-agent", "access-log-test/1")
        .header("x-request-id", "req-1234")
        .body(body("hello"))
        .expect("request");
    let (status, answer) = send(req).await;
    assert_eq!((status, &answer[..]), (StatusCode::OK, &b"hello"[..]), "the echo answers");
    let lines = proxy.wait_lines(1).await;
    assert_eq!(lines.len(), 1, "one line per request: {lines:#?}");
    let line = &lines[0];
    assert!(
        line.starts_with('[') && line.contains("Z] \"POST /items?id=7 HTTP/1.1\" 200 - via_upstream - \"-\" 5 5 "),
        "{line}"
    );
    assert!(line.contains("\"access-log-test/1\" \"req-1234\" \"shop\""), "{line}");
    assert!(line.contains(&format!("\"{echo}\" main - {} ", proxy.addr(PORT))), "{line}");
    assert!(line.ends_with(" - shop"), "route name last: {line}");

    // A host the gateway does not know: 404 and NR, as Envoy logs it.
    let (status, _) = send(get(proxy.addr(PORT), "elsewhere", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let line = proxy.wait_line("\"elsewhere\"").await;
    assert!(line.contains("\"GET / HTTP/1.1\" 404 NR route_not_found "), "{line}");
    let metrics = proxy.metrics();
    assert_eq!(
        metric(&metrics, r#"trellis_responses_flagged_total{direction="Gateway",cluster="-",response_flags="NR"}"#),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_encoding_writes_one_parseable_object_per_request_with_istios_keys() {
    let echo = http_echo(SocketAddr::new(unique_ip(), 0), "main").await;
    let proxy = LoggedProxy::start("gateway", &shop(&[echo], logging(true), |_| {}), &[]);
    let (status, _) = send(get(proxy.addr(PORT), "shop", "/items")).await;
    assert_eq!(status, StatusCode::OK);
    let lines = proxy.wait_lines(1).await;
    let value: serde_json::Value = serde_json::from_str(&lines[0]).expect("the line is JSON");
    assert_eq!(value["method"], "GET");
    assert_eq!(value["path"], "/items");
    assert_eq!(value["protocol"], "HTTP/1.1");
    assert_eq!(value["response_code"], 200);
    assert!(value["response_flags"].is_null(), "no flag: {value}");
    assert_eq!(value["response_code_details"], "via_upstream");
    assert_eq!(value["upstream_host"], echo.to_string());
    assert_eq!(value["upstream_cluster"], "main");
    assert_eq!(value["user_agent"], "access-log-test/1");
    assert_eq!(value["request_id"], "req-1234");
    assert_eq!(value["authority"], "shop");
    assert_eq!(value["route_name"], "shop");
    assert!(value["duration"].as_u64().is_some() && value["bytes_sent"].as_u64().is_some(), "{value}");
    assert!(value["x_forwarded_for"].is_null(), "unknown values are null: {value}");

    // A request without an id is logged with the one the proxy gave it, which the upstream saw too.
    let req = Request::get(format!("http://{}/anonymous", proxy.addr(PORT))).header("host", "shop").body(body(""));
    let response = client().request(req.expect("request")).await.expect("response");
    let seen = response.headers().get("x-seen-x-request-id").expect("the upstream got an id").to_str().expect("text");
    let seen = seen.to_owned();
    response.into_body().collect().await.expect("body");
    let line = proxy.wait_line("/anonymous").await;
    let value: serde_json::Value = serde_json::from_str(&line).expect("the line is JSON");
    assert_eq!(value["request_id"], seen.as_str(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_circuit_breaker_rejects_are_logged_with_uo() {
    let slow = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "slow", 200, Duration::from_secs(2)).await;
    let mut config = shop(&[slow.addr], logging(false), |_| {});
    config.clusters[0].connection_pool =
        Some(ConnectionPool { max_connections: Some(1), max_pending_requests: Some(1), ..ConnectionPool::default() });
    // One worker: connection pools (and so connection counts) are per worker.
    let proxy = LoggedProxy::start("gateway", &config, &["--concurrency", "1"]);
    let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(send(get(proxy.addr(PORT), "shop", "/work")))).collect();
    let mut rejected = 0;
    for task in tasks {
        if task.await.expect("request task").0 == StatusCode::SERVICE_UNAVAILABLE {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 2, "one in service and one pending are served, two rejected");
    let lines = proxy.wait_lines(4).await;
    let overflowed: Vec<_> =
        lines.iter().filter(|l| l.contains("\" 503 UO upstream_reset_before_response_started{overflow} ")).collect();
    assert_eq!(overflowed.len(), 2, "{lines:#?}");
    assert!(overflowed.iter().all(|l| l.contains("\"-\" main - ")), "the cluster that overflowed: {overflowed:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("\" 200 - via_upstream ")).count(), 2, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_abort_is_logged_with_fi() {
    let echo = http_echo(SocketAddr::new(unique_ip(), 0), "main").await;
    let config = shop(&[echo], logging(false), |r| {
        let abort = FaultAbort { http_status: Some(418), grpc_status: None, percentage: 100.0 };
        r.fault = Some(Fault { delay: None, abort: Some(abort) });
    });
    let proxy = LoggedProxy::start("gateway", &config, &[]);
    let (status, _) = send(get(proxy.addr(PORT), "shop", "/items")).await;
    assert_eq!(status.as_u16(), 418);
    let lines = proxy.wait_lines(1).await;
    assert!(lines[0].contains("\"GET /items HTTP/1.1\" 418 FI fault_filter_abort "), "{lines:#?}");
    assert!(lines[0].contains("\"-\" - - "), "no upstream was asked: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_logged_with_uf_and_with_urx_once_retries_run_out() {
    let nowhere = closed_port();
    let proxy = LoggedProxy::start("gateway", &shop(&[nowhere], logging(false), |_| {}), &[]);
    let (status, _) = send(get(proxy.addr(PORT), "shop", "/once")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let line = proxy.wait_line("/once").await;
    assert!(line.contains("\" 503 UF upstream_reset_before_response_started{connection_failure} "), "{line}");
    assert!(line.contains(&format!("\"{nowhere}\" main ")), "the endpoint tried: {line}");

    let retried = shop(&[nowhere], logging(false), |r| {
        r.retries = Some(RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec!["connect-failure".to_owned()],
            backoff: Some(Duration::from_millis(5)),
            allow_previous_hosts: true,
            remote_localities: false,
        });
    });
    let path = proxy.config_path.clone();
    write_config(&path, &retried);
    // The new config is in force once a request is retried: wait for a line that says so.
    let deadline = Instant::now() + LINE_WAIT;
    loop {
        let (status, _) = send(get(proxy.addr(PORT), "shop", "/retried")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if proxy.log_lines().iter().any(|l| l.contains("UF,URX")) {
            break;
        }
        assert!(Instant::now() < deadline, "no UF,URX line: {:#?}", proxy.log_lines());
    }
    let line = proxy.wait_line("UF,URX").await;
    assert!(
        line.contains(
            "\"GET /retried HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} "
        ),
        "{line}"
    );
    let metrics = proxy.metrics();
    assert!(
        metric(&metrics, r#"trellis_responses_flagged_total{direction="Gateway",cluster="main",response_flags="URX"}"#)
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_is_one_line_with_its_bytes_both_ways() {
    let app = tcp_echo(SocketAddr::new(unique_ip(), 0)).await;
    let mut config = sidecar_config("db", Vec::new(), Vec::new());
    config.telemetry = logging(false);
    let proxy = LoggedProxy::start("sidecar", &config, &["--inbound-target", &app.to_string()]);
    let mut stream = tokio::net::TcpStream::connect(proxy.addr(15006)).await.expect("connect");
    stream.write_all(b"ping ").await.expect("write");
    stream.write_all(b"pong").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut reply = Vec::new();
    tokio::time::timeout(LINE_WAIT, stream.read_to_end(&mut reply)).await.expect("reply in time").expect("read");
    assert_eq!(reply, b"ping pongbye");
    drop(stream);
    let lines = proxy.wait_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert!(line.contains("\"- - -\" 0 - - - \"-\" 9 12 "), "9 bytes received, 12 sent: {line}");
    assert!(line.contains(&format!("\"{app}\" inbound|{}|| ", app.port())), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_means_no_lines_and_a_new_config_turns_the_log_on_and_off_without_a_restart() {
    let echo = http_echo(SocketAddr::new(unique_ip(), 0), "main").await;
    let proxy = LoggedProxy::start("gateway", &shop(&[echo], Telemetry::default(), |_| {}), &[]);
    for _ in 0..20 {
        assert_eq!(send(get(proxy.addr(PORT), "shop", "/quiet")).await.0, StatusCode::OK);
    }
    tokio::time::sleep(QUIET_WAIT).await;
    assert!(proxy.log_lines().is_empty(), "the log is off: {:#?}", proxy.log_lines());

    write_config(&proxy.config_path, &shop(&[echo], logging(false), |_| {}));
    let deadline = Instant::now() + LINE_WAIT;
    while !proxy.log_lines().iter().any(|l| l.contains("/loud")) {
        assert!(Instant::now() < deadline, "the log never came on");
        assert_eq!(send(get(proxy.addr(PORT), "shop", "/loud")).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.log_lines().iter().all(|l| !l.contains("/quiet")), "nothing from when it was off");

    write_config(&proxy.config_path, &shop(&[echo], Telemetry::default(), |_| {}));
    // Once a request is not logged the log is off again; then none after it is.
    let deadline = Instant::now() + LINE_WAIT;
    loop {
        let before = proxy.log_lines().len();
        assert_eq!(send(get(proxy.addr(PORT), "shop", "/probe")).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if proxy.log_lines().len() == before {
            break;
        }
        assert!(Instant::now() < deadline, "the log never went off");
    }
    let before = proxy.log_lines().len();
    for _ in 0..20 {
        assert_eq!(send(get(proxy.addr(PORT), "shop", "/quiet-again")).await.0, StatusCode::OK);
    }
    tokio::time::sleep(QUIET_WAIT).await;
    assert_eq!(proxy.log_lines().len(), before, "off again: {:#?}", proxy.log_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_delay_is_logged_with_di_and_a_route_timeout_with_ut() {
    let slow = Misbehaving::start(SocketAddr::new(unique_ip(), 0), "slow", 200, Duration::ZERO).await;
    let config = shop(&[slow.addr], logging(false), |r| {
        let delay = FaultDelay { fixed_delay: Duration::from_millis(20), percentage: 100.0 };
        r.fault = Some(Fault { delay: Some(delay), abort: None });
        r.timeout = Some(Duration::from_millis(300));
    });
    let proxy = LoggedProxy::start("gateway", &config, &[]);
    assert_eq!(send(get(proxy.addr(PORT), "shop", "/fast")).await.0, StatusCode::OK);
    let line = proxy.wait_line("/fast").await;
    assert!(line.contains("\"GET /fast HTTP/1.1\" 200 DI via_upstream "), "{line}");
    let duration: u64 = line.split(' ').nth(11).and_then(|d| d.parse().ok()).expect("a duration in ms");
    assert!(duration >= 20, "the delay is part of the duration: {line}");

    slow.set_delay(Duration::from_secs(3));
    assert_eq!(send(get(proxy.addr(PORT), "shop", "/slow")).await.0, StatusCode::GATEWAY_TIMEOUT);
    let line = proxy.wait_line("/slow").await;
    assert!(line.contains("\"GET /slow HTTP/1.1\" 504 UT,DI upstream_response_timeout "), "{line}");
    let metrics = proxy.metrics();
    assert!(metrics.contains("trellis_access_log_dropped_total 0"), "nothing dropped: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_log_the_application_cluster_a_rate_limit_as_rl_and_a_denial_as_rbac() {
    use trellis_api::istio::authorization_policy::Rule;
    use trellis_api::proxy_config::RateLimit;
    use trellis_api::proxy_config::{AuthorizationAction, AuthorizationRule, InboundListener, InboundMtls, Protocol};
    let app = http_echo(SocketAddr::new(unique_ip(), 0), "app").await;
    let rules: Vec<Rule> = serde_saphyr::from_str("- to: [{operation: {paths: [/secret]}}]").expect("rules YAML");
    let deny = AuthorizationRule { policy: "default/no-secrets".into(), action: AuthorizationAction::Deny, rules };
    let limit = RateLimit {
        policy: "default/one-only".into(),
        rule: 0,
        paths: vec!["/limited".into()],
        methods: Vec::new(),
        ports: Vec::new(),
        max_tokens: 1,
        tokens_per_fill: 1,
        fill_interval: Duration::from_secs(3600),
        per_source: false,
        status_code: 429,
        quota_headers: false,
    };
    let mut config = sidecar_config("inventory", Vec::new(), Vec::new());
    config.inbound = vec![InboundListener {
        port: app.port(),
        protocol: Protocol::Http,
        mtls: InboundMtls::Disable,
        authorization: vec![deny],
        jwt: Vec::new(),
        rate_limits: vec![limit],
    }];
    config.telemetry = logging(false);
    let proxy = LoggedProxy::start("sidecar", &config, &["--inbound-target", &app.to_string()]);
    let inbound = proxy.addr(15006);
    assert_eq!(send(get(inbound, "inventory", "/limited")).await.0, StatusCode::OK);
    assert_eq!(send(get(inbound, "inventory", "/limited")).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(send(get(inbound, "inventory", "/secret")).await.0, StatusCode::FORBIDDEN);
    let lines = proxy.wait_lines(3).await;
    assert!(lines[0].contains("\" 200 - via_upstream "), "{lines:#?}");
    assert!(lines[0].contains(&format!("\"{app}\" inbound|{}|| ", app.port())), "{lines:#?}");
    assert!(lines[1].contains("\"GET /limited HTTP/1.1\" 429 RL local_rate_limited "), "{lines:#?}");
    assert!(lines[2].contains("\"GET /secret HTTP/1.1\" 403 - rbac_access_denied "), "{lines:#?}");
    let metrics = proxy.metrics();
    assert_eq!(
        metric(&metrics, r#"trellis_responses_flagged_total{direction="Inbound",cluster="-",response_flags="RL"}"#),
        Some(1.0),
        "{metrics}"
    );
}
