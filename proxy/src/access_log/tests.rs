use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Response, StatusCode, Uri, Version};

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address")
}

/// 2026-11-26T10:30:01.123Z.
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_795_689_001_123)
}

fn http_entry() -> Entry {
    Entry {
        start: start(),
        request: Some(RequestFacts {
            method: Method::GET,
            uri: Uri::from_static("/items?id=7"),
            version: Version::HTTP_11,
            original_path: None,
            host: Some(HeaderValue::from_static("inventory:8080")),
            forwarded_for: None,
            user_agent: Some(HeaderValue::from_static("curl/8.5.0")),
            request_id: Some(HeaderValue::from_static("b6a7")),
        }),
        status: 200,
        flags: Flags::NONE,
        details: Some(VIA_UPSTREAM),
        termination: None,
        bytes_received: 0,
        bytes_sent: 42,
        duration: Duration::from_micros(3_900),
        upstream_service_time: None,
        upstream_host: Some(addr("10.0.0.7:8080")),
        upstream_cluster: Some("outbound|8080||inventory.default.svc.cluster.local".to_owned()),
        downstream_local: addr("10.96.0.10:8080"),
        downstream_remote: addr("10.0.0.3:51234"),
        server_name: None,
        route_name: Some("default".to_owned()),
    }
}

#[test]
fn start_times_are_utc_with_milliseconds_as_envoy_writes_them() {
    assert_eq!(start_time(start()), "2026-11-26T10:30:01.123Z");
    assert_eq!(start_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
}

#[test]
fn a_request_is_one_line_in_envoys_default_format() {
    let line = text_line(&http_entry());
    assert_eq!(
        line,
        "[2026-11-26T10:30:01.123Z] \"GET /items?id=7 HTTP/1.1\" 200 - via_upstream - \"-\" 0 42 3 - \"-\" \
         \"curl/8.5.0\" \"b6a7\" \"inventory:8080\" \"10.0.0.7:8080\" outbound|8080||inventory.default.svc.cluster.local \
         - 10.96.0.10:8080 10.0.0.3:51234 - default\n"
    );
}

#[test]
fn flags_are_joined_in_envoys_order_and_absent_ones_are_a_dash() {
    let mut flags = Flags::NONE;
    assert_eq!(flags.to_string(), "-");
    flags.insert(ResponseFlag::URX);
    flags.insert(ResponseFlag::UF);
    assert_eq!(flags.to_string(), "UF,URX");
    flags.insert(ResponseFlag::DI);
    assert_eq!(flags.to_string(), "UF,DI,URX");
    assert!(flags.contains(ResponseFlag::DI) && !flags.contains(ResponseFlag::UO));
    let every: Vec<_> = ResponseFlag::ALL.iter().map(|f| f.short()).collect();
    assert_eq!(every.join(","), "UH,UT,UR,UF,UC,UO,NR,DI,FI,RL,DC,URX");
}

#[test]
fn an_http2_request_logs_its_authority_and_the_original_path_of_a_rewrite() {
    let mut entry = http_entry();
    let request = entry.request.as_mut().expect("http");
    request.uri = Uri::from_static("http://reviews.default:9080/v2/list");
    request.version = Version::HTTP_2;
    request.host = None;
    request.original_path = Some(HeaderValue::from_static("/list"));
    let line = text_line(&entry);
    assert!(line.contains("\"GET /list HTTP/2\""), "{line}");
    assert!(line.contains("\"reviews.default:9080\""), "{line}");
}

#[test]
fn a_tcp_connection_has_dashes_for_the_request_and_its_bytes_both_ways() {
    let entry = Entry {
        request: None,
        status: 0,
        details: None,
        bytes_received: 5,
        bytes_sent: 7,
        upstream_host: Some(addr("127.0.0.1:3306")),
        upstream_cluster: Some("outbound|3306||db".to_owned()),
        route_name: None,
        ..http_entry()
    };
    let line = text_line(&entry);
    assert!(
        line.starts_with("[2026-11-26T10:30:01.123Z] \"- - -\" 0 - - - \"-\" 5 7 3 - \"-\" \"-\" \"-\" \"-\""),
        "{line}"
    );
    assert!(line.ends_with("outbound|3306||db - 10.96.0.10:8080 10.0.0.3:51234 - -\n"), "{line}");
}

#[test]
fn json_lines_have_istios_keys_numbers_and_nulls() {
    let mut entry = http_entry();
    entry.flags.insert(ResponseFlag::UO);
    entry.status = 503;
    let line = json_line(&entry);
    assert!(line.ends_with('\n') && !line.trim_end().contains('\n'), "one line: {line}");
    let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(value["start_time"], "2026-11-26T10:30:01.123Z");
    assert_eq!(value["method"], "GET");
    assert_eq!(value["path"], "/items?id=7");
    assert_eq!(value["protocol"], "HTTP/1.1");
    assert_eq!(value["response_code"], 503);
    assert_eq!(value["response_flags"], "UO");
    assert_eq!(value["bytes_sent"], 42);
    assert_eq!(value["duration"], 3);
    assert_eq!(value["upstream_host"], "10.0.0.7:8080");
    assert_eq!(value["authority"], "inventory:8080");
    assert_eq!(value["downstream_remote_address"], "10.0.0.3:51234");
    assert!(value["x_forwarded_for"].is_null() && value["upstream_service_time"].is_null(), "{value}");
    assert!(value["connection_termination_details"].is_null(), "{value}");
    let unflagged: serde_json::Value = serde_json::from_str(&json_line(&http_entry())).expect("valid JSON");
    assert!(unflagged["response_flags"].is_null(), "{unflagged}");
}

#[test]
fn json_escapes_what_a_client_puts_in_its_headers() {
    let mut entry = http_entry();
    entry.request.as_mut().expect("http").user_agent = Some(HeaderValue::from_static("evil\" agent \\ x"));
    let value: serde_json::Value = serde_json::from_str(&json_line(&entry)).expect("valid JSON");
    assert_eq!(value["user_agent"], "evil\" agent \\ x");
}

#[test]
fn a_failed_exchange_reads_as_its_envoy_flag_and_details() {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.extensions_mut().insert(UpstreamFailure::Connect);
    add_flag(&mut response, ResponseFlag::URX);
    let marks = Marks::of(&response);
    assert_eq!(marks.flags.to_string(), "UF,URX");
    assert_eq!(marks.details, Some(details::CONNECTION_FAILURE));
    let mut delayed = Response::new(());
    add_flag(&mut delayed, ResponseFlag::DI);
    flag(&mut delayed, ResponseFlag::FI, details::FAULT_ABORT);
    detail(&mut delayed, details::DIRECT_RESPONSE);
    let marks = Marks::of(&delayed);
    assert_eq!((marks.flags.to_string(), marks.details), ("DI,FI".to_owned(), Some(details::FAULT_ABORT)));
    assert_eq!(Marks::of(&Response::new(())), Marks::default(), "an ordinary response carries nothing");
}

#[test]
fn the_log_follows_the_config_on_and_off_and_between_formats() {
    let metrics = Metrics::new();
    let log = AccessLog::default();
    assert_eq!(log.format(), None, "off by default");
    let mut telemetry = Telemetry { access_log: true, ..Telemetry::default() };
    log.configure(&telemetry, &metrics);
    assert_eq!(log.format(), Some(Format::Text));
    telemetry.access_log_json = true;
    log.configure(&telemetry, &metrics);
    assert_eq!(log.format(), Some(Format::Json));
    telemetry.access_log = false;
    log.configure(&telemetry, &metrics);
    assert!(!log.is_on());
    let cx = Context::plain(Side::Outbound, addr("127.0.0.1:1"), addr("127.0.0.1:2"));
    assert!(!TcpLog::start(&log, &cx, None).is_on(), "an off log starts nothing");
}

#[test]
fn a_full_queue_drops_lines_and_counts_them() {
    let dropped = Counter::default();
    let (queue, lines) = std::sync::mpsc::sync_channel(1);
    let sink = Sink { queue, dropped: dropped.clone() };
    sink.send(Format::Text, Box::new(http_entry()));
    sink.send(Format::Text, Box::new(http_entry()));
    sink.send(Format::Json, Box::new(http_entry()));
    assert_eq!(dropped.get(), 2, "the queue held one line");
    assert!(lines.try_recv().is_ok());
}

/// A logged body over `text`, and the queue its line goes to.
fn logged(text: &'static str) -> (Logged, std::sync::mpsc::Receiver<(Format, Box<Entry>)>) {
    let (queue, lines) = std::sync::mpsc::sync_channel(4);
    let pending = Pending {
        format: Format::Text,
        sink: Sink { queue, dropped: Counter::default() },
        started: Instant::now(),
        entry: Box::new(http_entry()),
    };
    (Logged { inner: crate::http::full(text), pending: Some(pending), sent: 0, upgraded: false }, lines)
}

#[tokio::test]
async fn a_body_read_to_its_end_logs_its_bytes_once() {
    let (body, lines) = logged("hello");
    let read = http_body_util::BodyExt::collect(body).await.expect("body").to_bytes();
    assert_eq!(&read[..], b"hello");
    let (_, entry) = lines.try_recv().expect("a line once the body ended");
    assert_eq!((entry.bytes_sent, entry.flags), (5, Flags::NONE));
    assert!(lines.try_recv().is_err(), "one line only");
}

#[test]
fn a_body_dropped_before_its_end_logs_dc() {
    let (body, lines) = logged("never read");
    drop(body);
    let (_, entry) = lines.try_recv().expect("a line when the client went away");
    assert_eq!((entry.bytes_sent, entry.flags.to_string()), (0, "DC".to_owned()));
}
