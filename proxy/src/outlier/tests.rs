use std::net::SocketAddr;

use trellis_api::proxy_config::{Endpoint, LoadBalancer};

use super::*;

fn endpoints(n: u8) -> Vec<Endpoint> {
    (1..=n)
        .map(|i| Endpoint {
            address: SocketAddr::from(([10, 0, 0, i], 80)),
            labels: Default::default(),
            identity: String::new(),
            weight: 1,
            meshed: false,
        })
        .collect()
}

fn config(consecutive_5xx: Option<u32>, max_percent: u32, min_health: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: consecutive_5xx,
        consecutive_gateway_errors: None,
        consecutive_local_origin_failures: None,
        interval: Duration::from_millis(10),
        base_ejection_time: Duration::from_millis(200),
        max_ejection_percent: max_percent,
        min_health_percent: min_health,
    }
}

/// Fails `addr` `times` times with `outcome`.
fn fail(detector: &Detector, balancer: &Balancer, addr: SocketAddr, outcome: Outcome, times: usize) {
    for _ in 0..times {
        let pick = (0..1000).map(|_| balancer.pick(None).expect("a pick")).find(|p| p.addr == addr);
        let pick = pick.expect("the endpoint is picked sometimes");
        detector.record(balancer, &pick, outcome);
    }
}

fn ejected(balancer: &Balancer) -> Vec<SocketAddr> {
    balancer.loads().into_iter().filter(|l| l.ejected).map(|l| l.addr).collect()
}

#[test]
fn an_endpoint_is_ejected_after_its_consecutive_5xx_and_a_success_resets_the_count() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(3));
    let detector = Detector::new(&config(Some(3), 100, 0));
    let target = endpoints(3)[0].address;
    fail(&detector, &balancer, target, Outcome::Status(500), 2);
    fail(&detector, &balancer, target, Outcome::Status(200), 1);
    fail(&detector, &balancer, target, Outcome::Status(500), 2);
    assert!(ejected(&balancer).is_empty(), "the success reset the count");
    fail(&detector, &balancer, target, Outcome::Status(503), 1);
    assert_eq!(ejected(&balancer), vec![target]);
    assert!((0..200).all(|_| balancer.pick(None).expect("pick").addr != target), "ejected endpoints get no picks");
}

#[test]
fn local_origin_failures_count_as_503s_unless_split() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(2));
    let mut rule = config(None, 100, 0);
    rule.consecutive_gateway_errors = Some(2);
    let detector = Detector::new(&rule);
    let target = endpoints(2)[1].address;
    fail(&detector, &balancer, target, Outcome::LocalFailure, 2);
    assert_eq!(ejected(&balancer), vec![target], "two connect failures are two gateway errors");

    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(2));
    rule.consecutive_local_origin_failures = Some(3);
    let detector = Detector::new(&rule);
    fail(&detector, &balancer, target, Outcome::LocalFailure, 2);
    assert!(ejected(&balancer).is_empty(), "split: two of three local failures");
    fail(&detector, &balancer, target, Outcome::LocalFailure, 1);
    assert_eq!(ejected(&balancer), vec![target]);
}

#[test]
fn max_ejection_percent_bounds_ejections_but_one_endpoint_may_always_go() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(4));
    let detector = Detector::new(&config(Some(1), 50, 0));
    for endpoint in endpoints(4) {
        fail(&detector, &balancer, endpoint.address, Outcome::Status(500), 1);
    }
    assert_eq!(ejected(&balancer).len(), 2, "50% of 4");

    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(2));
    let detector = Detector::new(&config(Some(1), 10, 0));
    for endpoint in endpoints(2) {
        fail(&detector, &balancer, endpoint.address, Outcome::Status(500), 1);
    }
    assert_eq!(ejected(&balancer).len(), 1, "10% of 2 still ejects one");
}

#[test]
fn below_min_health_percent_ejections_are_not_enforced() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(4));
    let detector = Detector::new(&config(Some(1), 100, 60));
    let all = endpoints(4);
    fail(&detector, &balancer, all[0].address, Outcome::Status(500), 1);
    assert_eq!(ejected(&balancer).len(), 1, "75% healthy is above 60%");
    fail(&detector, &balancer, all[1].address, Outcome::Status(500), 1);
    assert!(ejected(&balancer).is_empty(), "50% healthy: every endpoint takes traffic");
    let states: Vec<HealthSnapshot> = balancer.loads().into_iter().map(|l| l.health).collect();
    assert_eq!(states.iter().filter(|s| s.ejected_for_ms.is_some()).count(), 2, "still ejected in the detector");
}

#[test]
fn an_ejection_ends_after_its_time_and_the_next_lasts_twice_as_long() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(2));
    let detector = Detector::new(&config(Some(1), 100, 0));
    let target = endpoints(2)[0].address;
    // Each ejection is timed from before the failure that causes it; the detector's clock counts whole
    // milliseconds, so an ejection may end up to 1 ms before its time measured on `Instant`.
    let started = Instant::now();
    fail(&detector, &balancer, target, Outcome::Status(500), 1);
    wait_for_return(&detector, &balancer);
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(199), "{first:?}");
    let again = Instant::now();
    fail(&detector, &balancer, target, Outcome::Status(500), 1);
    assert_eq!(balancer.loads()[0].health.ejections, 2);
    wait_for_return(&detector, &balancer);
    let second = again.elapsed();
    assert!(second >= Duration::from_millis(399), "twice the base: {second:?}");
}

/// Sweeps until no endpoint is ejected; returns how long that took.
fn wait_for_return(detector: &Detector, balancer: &Balancer) -> Duration {
    let started = Instant::now();
    while !ejected(balancer).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the endpoint never came back");
        std::thread::sleep(Duration::from_millis(5));
        detector.sweep(balancer);
    }
    started.elapsed()
}
