use std::time::Duration;

use super::*;

fn limits(connections: Option<u32>, pending: Option<u32>, requests: Option<u32>, per: Option<u32>) -> ConnectionPool {
    ConnectionPool {
        max_connections: connections,
        max_pending_requests: pending,
        max_requests: requests,
        max_requests_per_connection: per,
        ..ConnectionPool::default()
    }
}

fn breaker(limits: &ConnectionPool) -> Arc<Breaker> {
    Breaker::for_limits(limits).expect("limits that need a breaker")
}

#[test]
fn limits_the_breaker_does_not_enforce_need_no_breaker() {
    assert!(Breaker::for_limits(&ConnectionPool::default()).is_none());
    let only_timeouts = ConnectionPool { connect_timeout: Some(Duration::from_secs(1)), ..ConnectionPool::default() };
    assert!(Breaker::for_limits(&only_timeouts).is_none());
}

#[tokio::test]
async fn requests_beyond_connections_and_pending_overflow_at_once() {
    let breaker = breaker(&limits(Some(2), Some(1), None, None));
    let first = breaker.admit(false).await.expect("first connection");
    let second = breaker.admit(false).await.expect("second connection");
    let breaker_for_waiter = breaker.clone();
    let waiter = tokio::spawn(async move { breaker_for_waiter.admit(false).await.map(drop) });
    while breaker.load().pending == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(breaker.admit(false).await.err(), Some(Overflow), "queue full");
    assert_eq!(breaker.load(), BreakerLoad { admitted: 3, pending: 1, in_service: 2 });
    drop(first);
    waiter.await.expect("waiter task").expect("the waiter gets the freed connection");
    drop(second);
    assert_eq!(breaker.load(), BreakerLoad { admitted: 0, pending: 0, in_service: 0 });
}

#[tokio::test]
async fn a_waiter_that_goes_away_leaves_the_queue() {
    let breaker = breaker(&limits(Some(1), Some(1), None, None));
    let held = breaker.admit(false).await.expect("the connection");
    let waited = tokio::time::timeout(Duration::from_millis(20), breaker.admit(false)).await;
    assert!(waited.is_err(), "still waiting when cancelled");
    assert_eq!(breaker.load(), BreakerLoad { admitted: 1, pending: 0, in_service: 1 });
    drop(held);
    assert!(breaker.admit(false).await.is_ok());
}

#[tokio::test]
async fn max_requests_caps_admitted_requests_without_a_connection_limit() {
    let breaker = breaker(&limits(None, None, Some(2), None));
    let _a = breaker.admit(true).await.expect("first");
    let _b = breaker.admit(true).await.expect("second");
    assert_eq!(breaker.admit(true).await.err(), Some(Overflow));
}

#[tokio::test]
async fn multiplexed_requests_share_a_connection_up_to_its_request_limit() {
    let breaker = breaker(&limits(Some(1), Some(0), None, Some(3)));
    let held: Vec<Permit> = [(); 3]
        .iter()
        .map(|_| breaker.admit(true))
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .map(|p| p.expect("three streams on one connection-equivalent"))
        .collect();
    assert_eq!(breaker.admit(true).await.err(), Some(Overflow));
    assert_eq!(breaker.admit(false).await.err(), Some(Overflow), "an HTTP/1.1 request needs a whole one");
    drop(held);
    assert!(breaker.admit(false).await.is_ok());
}

#[test]
fn tcp_connections_beyond_max_connections_are_refused() {
    let breaker = breaker(&limits(Some(1), Some(5), None, None));
    let first = breaker.admit_connection().expect("first");
    assert_eq!(breaker.admit_connection().err(), Some(Overflow));
    drop(first);
    assert!(breaker.admit_connection().is_ok());
}

#[tokio::test]
async fn without_reuse_a_request_stays_pending_until_its_connection_is_established() {
    // The tutorial's rule: one connection, one pending, one request per connection.
    let breaker = breaker(&limits(Some(1), Some(1), None, Some(1)));
    let mut first = breaker.admit(false).await.expect("the connection-equivalent");
    assert_eq!(breaker.load(), BreakerLoad { admitted: 1, pending: 1, in_service: 1 });
    assert_eq!(breaker.admit(false).await.err(), Some(Overflow), "a second pending request is one too many");
    first.connected();
    first.connected();
    assert_eq!(breaker.load(), BreakerLoad { admitted: 1, pending: 0, in_service: 1 });
    // Now a request may wait; once it has the connection-equivalent it is pending until connected.
    let breaker_for_waiter = breaker.clone();
    let waiter = tokio::spawn(async move { breaker_for_waiter.admit(false).await });
    while breaker.load().pending == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(breaker.admit(false).await.err(), Some(Overflow), "queue full");
    drop(first);
    let second = waiter.await.expect("waiter task").expect("the waiter gets the freed connection-equivalent");
    assert_eq!(breaker.load(), BreakerLoad { admitted: 1, pending: 1, in_service: 1 });
    assert_eq!(breaker.admit(false).await.err(), Some(Overflow), "its connection is not established yet");
    drop(second);
    assert_eq!(breaker.load(), BreakerLoad { admitted: 0, pending: 0, in_service: 0 });
}

#[tokio::test]
async fn with_reuse_a_request_in_service_is_not_pending() {
    let breaker = breaker(&limits(Some(1), Some(1), None, Some(2)));
    let _first = breaker.admit(false).await.expect("the connection-equivalent");
    assert_eq!(breaker.load(), BreakerLoad { admitted: 1, pending: 0, in_service: 1 });
}
