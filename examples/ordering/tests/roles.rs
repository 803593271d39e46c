//! The three roles as real processes on loopback: booking aggregates inventory and shipping with their
//! versions, faults asked for by query parameters happen, booking names the dependency that failed,
//! headers are propagated, and SIGTERM ends the process cleanly.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{App, get, request};

/// Inventory and shipping at the given versions, and booking v1 pointing at them.
fn ordering(inventory_version: &str, shipping_version: &str, booking_args: &[&str]) -> (App, App, App) {
    let inventory = App::start("inventory", inventory_version, &[], &[]);
    let shipping = App::start("shipping", shipping_version, &[], &[]);
    let inventory_url = inventory.url("/api/v1/inventory");
    let shipping_url = shipping.url("/api/v1/shipping");
    let mut args = vec!["--inventory-url", &inventory_url, "--shipping-url", &shipping_url];
    args.extend_from_slice(booking_args);
    let booking = App::start("booking", "v1", &args, &[]);
    (inventory, shipping, booking)
}

#[test]
fn booking_answers_with_the_versions_of_inventory_and_shipping() {
    let (_inventory, _shipping, booking) = ordering("v1", "v2", &[]);
    let reply = get(booking.addr, "/api/v1/booking");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-ordering-service"), Some("booking"));
    assert_eq!(reply.header("x-ordering-version"), Some("v1"));
    let body = reply.json();
    assert_eq!(body["service"], "booking");
    assert_eq!(body["version"], "v1");
    assert_eq!(body["inventory"]["status"], 200);
    assert_eq!(body["inventory"]["version"], "v1");
    assert_eq!(body["inventory"]["body"]["service"], "inventory");
    assert_eq!(body["shipping"]["status"], 200);
    assert_eq!(body["shipping"]["version"], "v2");
    assert_eq!(body["shipping"]["body"]["service"], "shipping");
    assert!(body.get("failed").is_none(), "{body}");
}

#[test]
fn booking_serves_post_and_paths_under_its_prefix() {
    let (_inventory, _shipping, booking) = ordering("v2", "v1", &[]);
    let reply = request(booking.addr, "POST", "/api/v1/booking/42", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!((body["method"].clone(), body["path"].clone()), (json!("POST"), json!("/api/v1/booking/42")));
    assert_eq!(body["inventory"]["version"], "v2");
    assert_eq!(body["shipping"]["version"], "v1");
}

#[test]
fn every_role_serves_healthz_with_its_identity_headers() {
    for (role, version) in [("booking", "v2"), ("inventory", "v1"), ("shipping", "v2")] {
        let app = App::start(role, version, &[], &[]);
        let reply = get(app.addr, "/healthz");
        assert_eq!(reply.status, 200, "{role}");
        assert_eq!(reply.header("x-ordering-service"), Some(role));
        assert_eq!(reply.header("x-ordering-version"), Some(version));
        assert_eq!(reply.json()["status"], "ok");
    }
}

#[test]
fn inventory_and_shipping_answer_with_their_service_and_version() {
    let inventory = App::start("inventory", "v2", &[], &[]);
    let shipping = App::start("shipping", "v1", &[], &[]);
    let reply = get(inventory.addr, "/api/v1/inventory");
    assert_eq!(reply.status, 200);
    assert_eq!((reply.json()["service"].clone(), reply.json()["version"].clone()), (json!("inventory"), json!("v2")));
    let reply = get(shipping.addr, "/api/v1/shipping");
    assert_eq!(reply.status, 200);
    assert_eq!((reply.json()["service"].clone(), reply.json()["version"].clone()), (json!("shipping"), json!("v1")));
    assert_eq!(reply.header("x-ordering-version"), Some("v1"));
}

#[test]
fn unknown_paths_get_a_json_404_with_identity_headers() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let reply = get(inventory.addr, "/api/v1/booking");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-ordering-service"), Some("inventory"));
    let error = reply.json()["error"].as_str().expect("error text").to_owned();
    assert!(error.contains("/api/v1/inventory"), "{error}");
}

#[test]
fn inventory_waits_for_the_requested_delay() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let started = Instant::now();
    let reply = get(inventory.addr, "/api/v1/inventory?delay_ms=300");
    assert!(started.elapsed() >= Duration::from_millis(300), "answered after {:?}", started.elapsed());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["delayedMs"], 300);
}

#[test]
fn inventory_fails_with_the_requested_status() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    assert_eq!(get(inventory.addr, "/api/v1/inventory?fail=1").status, 503);
    assert_eq!(get(inventory.addr, "/api/v1/inventory?status=500").status, 500);
    assert_eq!(get(inventory.addr, "/api/v1/inventory?fail=1&status=429").status, 429);
    assert_eq!(get(inventory.addr, "/api/v1/inventory?fail_percent=100").status, 503);
    assert_eq!(get(inventory.addr, "/api/v1/inventory?fail_percent=0").status, 200);
    let failed = get(inventory.addr, "/api/v1/inventory?fail=1");
    assert_eq!(failed.header("x-ordering-version"), Some("v1"), "failures carry the identity headers too");
    assert_eq!(failed.json()["version"], "v1");
}

#[test]
fn fail_percent_fails_some_requests_and_not_others() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let statuses: Vec<u16> = (0..60).map(|_| get(inventory.addr, "/api/v1/inventory?fail_percent=50").status).collect();
    // With p = 1/2 the chance of 60 equal outcomes is 2^-59.
    assert!(statuses.contains(&503) && statuses.contains(&200), "{statuses:?}");
}

#[test]
fn a_bad_fault_parameter_is_a_400_naming_it() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let reply = get(inventory.addr, "/api/v1/inventory?delay_ms=soon");
    assert_eq!(reply.status, 400);
    let error = reply.json()["error"].as_str().expect("error text").to_owned();
    assert!(error.contains("`delay_ms`") && error.contains("soon"), "{error}");
}

#[test]
fn booking_reports_the_failing_dependency_with_503() {
    let (_inventory, _shipping, booking) = ordering("v1", "v1", &[]);
    let reply = get(booking.addr, "/api/v1/booking?inventory_fail=1&inventory_status=500");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("x-ordering-service"), Some("booking"));
    let body = reply.json();
    assert_eq!(body["failed"], json!(["inventory"]));
    assert_eq!(body["inventory"]["status"], 500);
    assert_eq!(body["inventory"]["version"], "v1");
    assert_eq!(body["shipping"]["status"], 200);
    assert!(body["error"].as_str().expect("error text").contains("inventory answered 500"), "{body}");

    let reply = get(booking.addr, "/api/v1/booking?shipping_fail=1");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["failed"], json!(["shipping"]));
}

#[test]
fn booking_passes_inventory_parameters_without_their_prefix() {
    let (_inventory, _shipping, booking) = ordering("v1", "v1", &[]);
    let started = Instant::now();
    let reply = get(booking.addr, "/api/v1/booking?inventory_delay_ms=250&other=1");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["inventory"]["body"]["query"], "delay_ms=250");
    assert_eq!(body["inventory"]["body"]["delayedMs"], 250);
    assert!(body["shipping"]["body"].get("query").is_none(), "{body}");
}

#[test]
fn booking_reports_a_slow_dependency_as_failed_after_its_timeout() {
    let (_inventory, _shipping, booking) = ordering("v1", "v1", &["--upstream-timeout-ms", "300"]);
    let started = Instant::now();
    let reply = get(booking.addr, "/api/v1/booking?inventory_delay_ms=5000");
    assert!(started.elapsed() < Duration::from_secs(4), "booking waited {:?}", started.elapsed());
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["failed"], json!(["inventory"]));
    assert_eq!(body["inventory"]["status"], Value::Null);
    assert!(body["inventory"]["error"].as_str().expect("error").contains("no answer within"), "{body}");
}

#[test]
fn booking_reports_an_unreachable_dependency() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let inventory_url = inventory.url("/api/v1/inventory");
    // Nothing listens on port 1 of loopback, so the connection is refused.
    let args = ["--inventory-url", &inventory_url, "--shipping-url", "http://127.0.0.1:1/api/v1/shipping"];
    let booking = App::start("booking", "v1", &args, &[]);
    let reply = get(booking.addr, "/api/v1/booking");
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["failed"], json!(["shipping"]));
    assert!(body["error"].as_str().expect("error").starts_with("shipping unreachable: cannot connect"), "{body}");
}

#[test]
fn booking_propagates_tracing_and_identity_headers() {
    let (_inventory, _shipping, booking) = ordering("v1", "v2", &[]);
    let headers = [
        ("x-request-id", "req-7"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("traceparent", "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"),
        ("end-user", "jason"),
        ("authorization", "Bearer token"),
        ("x-not-propagated", "nope"),
    ];
    let reply = request(booking.addr, "GET", "/api/v1/booking", &headers);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    for dependency in ["inventory", "shipping"] {
        let received = &body[dependency]["body"]["received"];
        assert_eq!(received["x-request-id"], "req-7", "{dependency}: {received}");
        assert_eq!(received["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(received["x-b3-sampled"], "1");
        assert_eq!(received["traceparent"], "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01");
        assert_eq!(received["end-user"], "jason");
        assert_eq!(received["authorization"], "(redacted)");
        assert!(received.get("x-not-propagated").is_none(), "{received}");
    }
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut inventory = App::start("inventory", "v1", &[], &[]);
    assert_eq!(get(inventory.addr, "/healthz").status, 200);
    let status =
        std::process::Command::new("kill").args(["-TERM", &inventory.pid().to_string()]).status().expect("run kill");
    assert!(status.success());
    let exit = inventory.wait_exit(Duration::from_secs(10)).expect("the app exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn an_in_flight_request_finishes_during_the_drain() {
    let mut inventory = App::start("inventory", "v1", &[], &[]);
    let addr = inventory.addr;
    let slow = std::thread::spawn(move || get(addr, "/api/v1/inventory?delay_ms=700"));
    std::thread::sleep(Duration::from_millis(200));
    let status =
        std::process::Command::new("kill").args(["-TERM", &inventory.pid().to_string()]).status().expect("run kill");
    assert!(status.success());
    assert_eq!(slow.join().expect("request thread").status, 200);
    let exit = inventory.wait_exit(Duration::from_secs(10)).expect("the app exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
}
