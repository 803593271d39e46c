//! [`until_closed`] over a connection future that only ends when told to: when it is asked to close,
//! and when a connection that never started a request is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::{Activity, until_closed};
use crate::drain::Drain;

/// A connection that never finishes on its own; `graceful_shutdown` only records the request, as a
/// connection whose client ignores `GOAWAY` would.
#[derive(Default)]
struct Stubborn {
    asked: Arc<AtomicBool>,
}

impl Future for Stubborn {
    type Output = Result<(), ()>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

fn ask_to_close(connection: Pin<&mut Stubborn>) {
    connection.asked.store(true, Ordering::Relaxed);
}

const PERIOD: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_connection_that_never_sent_a_request_is_asked_to_close_and_then_dropped() {
    let drain = Drain::new();
    let watch = drain.watch();
    let connection = Stubborn::default();
    let asked = connection.asked.clone();
    let closed = until_closed(connection, ask_to_close, &watch, Activity::new(PERIOD));
    let result = tokio::time::timeout(PERIOD * 4, closed).await;
    assert!(matches!(result, Ok(Ok(()))), "dropped after its idle periods: {result:?}");
    assert!(asked.load(Ordering::Relaxed), "asked to close first");
}

#[tokio::test]
async fn a_connection_that_served_a_request_is_asked_to_close_and_left_to_finish() {
    let drain = Drain::new();
    let watch = drain.watch();
    let connection = Stubborn::default();
    let asked = connection.asked.clone();
    let activity = Activity::new(PERIOD);
    activity.counter().started();
    let closed = until_closed(connection, ask_to_close, &watch, activity);
    let result = tokio::time::timeout(PERIOD * 20, closed).await;
    assert!(result.is_err(), "a response may still be in flight: the connection is not dropped");
    assert!(asked.load(Ordering::Relaxed), "asked to close once idle");
}

#[tokio::test]
async fn requests_starting_every_period_keep_a_connection_open() {
    let drain = Drain::new();
    let watch = drain.watch();
    let connection = Stubborn::default();
    let asked = connection.asked.clone();
    let activity = Activity::new(PERIOD);
    let requests = activity.counter();
    let closed = until_closed(connection, ask_to_close, &watch, activity);
    tokio::pin!(closed);
    for _ in 0..10 {
        requests.started();
        let _ = tokio::time::timeout(PERIOD / 2, closed.as_mut()).await;
    }
    assert!(!asked.load(Ordering::Relaxed), "asked to close while requests kept coming");
}

#[tokio::test]
async fn an_idle_timeout_of_zero_never_asks_a_connection_to_close() {
    let drain = Drain::new();
    let watch = drain.watch();
    let connection = Stubborn::default();
    let asked = connection.asked.clone();
    let closed = until_closed(connection, ask_to_close, &watch, Activity::new(Duration::ZERO));
    assert!(tokio::time::timeout(PERIOD * 6, closed).await.is_err());
    assert!(!asked.load(Ordering::Relaxed));
}
