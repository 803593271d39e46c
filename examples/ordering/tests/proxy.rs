//! Booking behind an explicit proxy, as local mode runs it: with `HTTP_PROXY` set, its calls reach the
//! proxy in absolute form with the tutorial's service names, which only the proxy can resolve;
//! `NO_PROXY` hosts are called directly; an unusable proxy setting stops the app with a message.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;

use support::{App, Seen, TestProxy, get};

/// A proxy that knows the tutorial's names of `inventory` and `shipping`.
fn proxy_for(inventory: &App, shipping: &App) -> TestProxy {
    let names: HashMap<String, SocketAddr> =
        [("inventory-service:80".to_owned(), inventory.addr), ("shipping-service:80".to_owned(), shipping.addr)].into();
    TestProxy::start(names)
}

#[test]
fn booking_sends_its_calls_through_http_proxy_in_absolute_form() {
    let inventory = App::start("inventory", "v2", &[], &[]);
    let shipping = App::start("shipping", "v1", &[], &[]);
    let proxy = proxy_for(&inventory, &shipping);
    let proxy_url = format!("http://{}", proxy.addr);
    // No URL flags: booking uses the tutorial's names, which do not resolve here.
    let booking = App::start("booking", "v1", &[], &[("HTTP_PROXY", &proxy_url)]);

    let reply = get(booking.addr, "/api/v1/booking?inventory_delay_ms=1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["inventory"]["version"], "v2");
    assert_eq!(body["shipping"]["version"], "v1");

    let mut seen = proxy.seen();
    seen.sort_by(|a, b| a.line.cmp(&b.line));
    assert_eq!(
        seen,
        [
            Seen {
                line: "GET http://inventory-service/api/v1/inventory?delay_ms=1 HTTP/1.1".into(),
                host: "inventory-service".into()
            },
            Seen {
                line: "GET http://shipping-service/api/v1/shipping HTTP/1.1".into(),
                host: "shipping-service".into()
            },
        ]
    );

    // Again, so a second call works after the proxy closed the first connections.
    assert_eq!(get(booking.addr, "/api/v1/booking").status, 200);
    assert_eq!(proxy.seen().len(), 4);
}

#[test]
fn no_proxy_hosts_are_called_directly_with_the_lower_case_variables() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let shipping = App::start("shipping", "v2", &[], &[]);
    let proxy = proxy_for(&inventory, &shipping);
    let proxy_url = format!("http://{}", proxy.addr);
    let shipping_url = shipping.url("/api/v1/shipping");
    let booking = App::start(
        "booking",
        "v1",
        &["--shipping-url", &shipping_url],
        &[("http_proxy", &proxy_url), ("no_proxy", "localhost,127.0.0.1")],
    );

    let reply = get(booking.addr, "/api/v1/booking");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["shipping"]["version"], "v2");
    let lines: Vec<String> = proxy.seen().into_iter().map(|s| s.line).collect();
    assert_eq!(lines, ["GET http://inventory-service/api/v1/inventory HTTP/1.1"]);
}

#[test]
fn a_dependency_the_proxy_cannot_reach_is_reported_by_booking() {
    let inventory = App::start("inventory", "v1", &[], &[]);
    let shipping = App::start("shipping", "v1", &[], &[]);
    let proxy = proxy_for(&inventory, &shipping);
    let proxy_url = format!("http://{}", proxy.addr);
    let booking =
        App::start("booking", "v1", &["--inventory-url", "http://unknown-service/x"], &[("HTTP_PROXY", &proxy_url)]);
    let reply = get(booking.addr, "/api/v1/booking");
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["failed"], serde_json::json!(["inventory"]));
    assert_eq!(body["inventory"]["status"], 502);
}

#[test]
fn an_unusable_http_proxy_stops_the_app_with_a_message_naming_it() {
    let output = support::command("booking", "v1", &[], &[("HTTP_PROXY", "https://proxy:3128")])
        .stdin(Stdio::null())
        .output()
        .expect("run trellis-ordering");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HTTP_PROXY: ") && stderr.contains("https://proxy:3128"), "{stderr}");
}
