use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use trellis_api::proxy_config::HashKey;

use super::*;

const ALGORITHMS: [fn() -> LoadBalancer; 5] = [
    || LoadBalancer::PeakEwma,
    || LoadBalancer::RoundRobin,
    || LoadBalancer::Random,
    || LoadBalancer::LeastRequest,
    || LoadBalancer::ConsistentHash(HashKey::SourceIp),
];

fn addr(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 8080)
}

fn endpoint(i: u8, weight: u32) -> Endpoint {
    Endpoint { address: addr(i), labels: BTreeMap::new(), identity: String::new(), weight, meshed: false }
}

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights.iter().enumerate().map(|(i, &w)| endpoint(i as u8 + 1, w)).collect()
}

/// How often each address is picked in `n` picks, each dropped at once.
fn tally(balancer: &Balancer, n: usize, hash: impl Fn(usize) -> Option<u64>) -> HashMap<SocketAddr, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let pick = balancer.pick(hash(i)).expect("an endpoint");
        *counts.entry(pick.addr).or_insert(0) += 1;
    }
    counts
}

/// A pick of the endpoint at `target`, held by the caller.
fn pick_of(balancer: &Balancer, target: SocketAddr) -> Pick {
    let others: Vec<SocketAddr> = balancer.slots.iter().map(|s| s.endpoint.address).filter(|&a| a != target).collect();
    let pick = balancer.pick_excluding(None, &others).expect("the target");
    assert_eq!(pick.addr, target);
    pick
}

fn in_flight(balancer: &Balancer, target: SocketAddr) -> usize {
    balancer.loads().iter().find(|l| l.addr == target).map(|l| l.in_flight).expect("the endpoint")
}

fn owners(balancer: &Balancer, keys: u64) -> Vec<SocketAddr> {
    (0..keys).map(|k| balancer.pick(Some(hash_bytes(&k.to_be_bytes()))).expect("an endpoint").addr).collect()
}

#[test]
fn weighted_round_robin_visits_each_endpoint_exactly_as_often_as_its_weight() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(&[1, 2, 3, 4]));
    let counts = tally(&balancer, 10_000, |_| None);
    for (i, expected) in [1000, 2000, 3000, 4000].into_iter().enumerate() {
        assert_eq!(counts[&addr(i as u8 + 1)], expected, "endpoint {}", i + 1);
    }
}

#[test]
fn round_robin_interleaves_endpoints_instead_of_repeating_one() {
    // Equal weights of any size reduce to one turn each per lap.
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(&[5, 5, 5]));
    let picks: Vec<SocketAddr> = (0..300).map(|_| balancer.pick(None).expect("an endpoint").addr).collect();
    for window in picks.windows(3) {
        assert!(window[0] != window[1] && window[1] != window[2] && window[0] != window[2], "{window:?}");
    }
    // With weights 1:3 the light endpoint never gets two turns in a row.
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(&[1, 3]));
    let picks: Vec<SocketAddr> = (0..400).map(|_| balancer.pick(None).expect("an endpoint").addr).collect();
    assert!(picks.windows(2).all(|w| !(w[0] == addr(1) && w[1] == addr(1))));
}

#[test]
fn weighted_random_matches_the_weights_within_three_percent() {
    let balancer = Balancer::new(&LoadBalancer::Random, &endpoints(&[1, 2, 3, 4]));
    let counts = tally(&balancer, 10_000, |_| None);
    for (i, expected) in [1000usize, 2000, 3000, 4000].into_iter().enumerate() {
        let got = counts.get(&addr(i as u8 + 1)).copied().unwrap_or(0);
        assert!(got.abs_diff(expected) < 300, "endpoint {} got {got}, expected about {expected}", i + 1);
    }
}

#[test]
fn least_request_avoids_the_endpoint_with_requests_in_flight() {
    let balancer = Balancer::new(&LoadBalancer::LeastRequest, &endpoints(&[1, 1, 1]));
    let _held: Vec<Pick> = (0..10).map(|_| pick_of(&balancer, addr(1))).collect();
    let counts = tally(&balancer, 1000, |_| None);
    assert_eq!(counts.get(&addr(1)), None, "{counts:?}");
    assert!(counts[&addr(2)] > 350 && counts[&addr(3)] > 350, "{counts:?}");
}

#[test]
fn least_request_spreads_held_requests_evenly() {
    let balancer = Balancer::new(&LoadBalancer::LeastRequest, &endpoints(&[1, 1, 1, 1]));
    let held: Vec<Pick> = (0..400).map(|_| balancer.pick(None).expect("an endpoint")).collect();
    let loads: Vec<usize> = balancer.loads().iter().map(|l| l.in_flight).collect();
    let (min, max) = (loads.iter().min().copied().unwrap_or(0), loads.iter().max().copied().unwrap_or(0));
    assert!(max - min <= 4, "{loads:?}");
    drop(held);
    assert!(balancer.loads().iter().all(|l| l.in_flight == 0));
}

#[test]
fn peak_ewma_prefers_the_faster_endpoint() {
    let balancer = Balancer::new(&LoadBalancer::PeakEwma, &endpoints(&[1, 1]));
    for _ in 0..5 {
        pick_of(&balancer, addr(1)).record_latency(Duration::from_millis(1));
        pick_of(&balancer, addr(2)).record_latency(Duration::from_millis(50));
    }
    let counts = tally(&balancer, 1000, |_| None);
    assert_eq!(counts.get(&addr(1)), Some(&1000), "{counts:?}");
}

#[test]
fn peak_ewma_turns_away_from_a_fast_endpoint_with_many_requests_in_flight() {
    let balancer = Balancer::new(&LoadBalancer::PeakEwma, &endpoints(&[1, 1]));
    pick_of(&balancer, addr(1)).record_latency(Duration::from_millis(1));
    pick_of(&balancer, addr(2)).record_latency(Duration::from_millis(5));
    // Cost of 1 ms with 10 in flight (11 ms) exceeds 5 ms with none.
    let _held: Vec<Pick> = (0..10).map(|_| pick_of(&balancer, addr(1))).collect();
    let counts = tally(&balancer, 1000, |_| None);
    assert_eq!(counts.get(&addr(2)), Some(&1000), "{counts:?}");
}

#[test]
fn peak_ewma_prefers_a_measured_fast_endpoint_over_an_unmeasured_one() {
    let balancer = Balancer::new(&LoadBalancer::PeakEwma, &endpoints(&[1]));
    pick_of(&balancer, addr(1)).record_latency(Duration::from_millis(1));
    let balancer = balancer.update(&endpoints(&[1, 1]));
    let counts = tally(&balancer, 1000, |_| None);
    assert_eq!(counts.get(&addr(1)), Some(&1000), "{counts:?}");
}

#[test]
fn a_slower_sample_replaces_the_estimate_at_once() {
    let t0 = Instant::now();
    let rtt = RttEstimate::new(Duration::from_millis(10), DEFAULT_EWMA_DECAY, t0);
    rtt.observe(Duration::from_millis(200), t0 + Duration::from_millis(1));
    assert_eq!(rtt.estimate(t0 + Duration::from_millis(1)), 200e6);
}

#[test]
fn a_faster_sample_is_blended_in_by_the_time_since_the_last_one() {
    let t0 = Instant::now();
    let rtt = RttEstimate::new(Duration::from_millis(100), Duration::from_secs(10), t0);
    let t1 = t0 + Duration::from_secs(10);
    rtt.observe(Duration::from_millis(10), t1);
    let decay = (-1.0f64).exp();
    let expected = 100e6 * decay + 10e6 * (1.0 - decay);
    assert!((rtt.estimate(t1) - expected).abs() < 1.0, "{} vs {expected}", rtt.estimate(t1));
    // A sample right after the last one barely moves the estimate.
    rtt.observe(Duration::from_millis(1), t1 + Duration::from_millis(1));
    assert!((rtt.estimate(t1 + Duration::from_millis(1)) - expected).abs() < expected * 0.001);
}

#[test]
fn an_idle_estimate_decays_toward_zero() {
    let t0 = Instant::now();
    let rtt = RttEstimate::new(Duration::from_millis(30), Duration::from_secs(10), t0);
    assert_eq!(rtt.estimate(t0), 30e6);
    let later = rtt.estimate(t0 + Duration::from_secs(10));
    assert!((later - 30e6 * (-1.0f64).exp()).abs() < 1.0, "{later}");
    assert!(rtt.estimate(t0 + Duration::from_secs(600)) < 1.0);
}

#[test]
fn the_same_key_always_reaches_the_same_endpoint() {
    let lb = LoadBalancer::ConsistentHash(HashKey::Header("x-user".into()));
    let balancer = Balancer::new(&lb, &endpoints(&[1; 10]));
    let first = owners(&balancer, 1000);
    assert_eq!(owners(&balancer, 1000), first);
    // Another proxy with the endpoints in another order agrees.
    let mut reversed = endpoints(&[1; 10]);
    reversed.reverse();
    assert_eq!(owners(&Balancer::new(&lb, &reversed), 1000), first);
    // And the keys are spread over all endpoints.
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert_eq!(distinct.len(), 10);
}

#[test]
fn removing_one_of_ten_endpoints_moves_only_the_keys_it_had() {
    let lb = LoadBalancer::ConsistentHash(HashKey::SourceIp);
    let all = endpoints(&[1; 10]);
    let balancer = Balancer::new(&lb, &all);
    let before = owners(&balancer, 10_000);
    let without: Vec<Endpoint> = all.iter().filter(|e| e.address != addr(4)).cloned().collect();
    let after = owners(&balancer.update(&without), 10_000);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(*b, addr(4), "a key moved from {b} to {a}");
            moved += 1;
        }
    }
    assert_eq!(moved, before.iter().filter(|&&a| a == addr(4)).count());
}

#[test]
fn adding_an_eleventh_endpoint_moves_about_an_eleventh_of_the_keys_to_it() {
    let lb = LoadBalancer::ConsistentHash(HashKey::SourceIp);
    let balancer = Balancer::new(&lb, &endpoints(&[1; 10]));
    let before = owners(&balancer, 10_000);
    let after = owners(&balancer.update(&endpoints(&[1; 11])), 10_000);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(*a, addr(11), "a key moved from {b} to {a}");
            moved += 1;
        }
    }
    // 1/11 is about 909 of 10,000.
    assert!((600..1300).contains(&moved), "{moved} keys moved");
}

#[test]
fn consistent_hash_gives_keys_in_proportion_to_weight() {
    let lb = LoadBalancer::ConsistentHash(HashKey::SourceIp);
    let balancer = Balancer::new(&lb, &endpoints(&[1, 3]));
    assert_eq!(balancer.ring.len() as u64, 4 * VNODES_PER_WEIGHT);
    let on_first = owners(&balancer, 10_000).iter().filter(|&&a| a == addr(1)).count();
    assert!((1800..3200).contains(&on_first), "{on_first} of 10,000 keys on the weight-1 endpoint");
}

#[test]
fn a_huge_consistent_hash_ring_is_capped() {
    let lb = LoadBalancer::ConsistentHash(HashKey::SourceIp);
    let many: Vec<Endpoint> = (1..=250u8).map(|i| endpoint(i, u32::from(i % 7) + 1)).collect();
    let balancer = Balancer::new(&lb, &many);
    assert!(balancer.ring.len() as u64 <= MAX_RING_POINTS + 250);
    assert!(balancer.pick(Some(1)).is_some());
}

#[test]
fn consistent_hash_without_a_key_still_picks_an_endpoint() {
    let lb = LoadBalancer::ConsistentHash(HashKey::Cookie { name: "session".into(), ttl: None });
    let balancer = Balancer::new(&lb, &endpoints(&[1, 1, 1]));
    let counts = tally(&balancer, 3000, |_| None);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn a_retry_on_a_consistent_hash_moves_to_the_next_endpoint_on_the_ring() {
    let lb = LoadBalancer::ConsistentHash(HashKey::SourceIp);
    let balancer = Balancer::new(&lb, &endpoints(&[1; 5]));
    let key = hash_bytes(b"10.1.2.3");
    let first = balancer.pick(Some(key)).expect("an endpoint").addr;
    let second = balancer.pick_excluding(Some(key), &[first]).expect("another endpoint").addr;
    assert_ne!(first, second);
    assert_eq!(balancer.pick_excluding(Some(key), &[first]).expect("another endpoint").addr, second);
}

#[test]
fn an_update_keeps_the_load_of_endpoints_that_stay_and_picks_of_removed_ones_stay_valid() {
    let mut with_identity = endpoints(&[1, 1]);
    with_identity[1].identity = "spiffe://cluster.local/ns/a/sa/b".into();
    let balancer = Balancer::new(&LoadBalancer::LeastRequest, &with_identity);
    let kept = pick_of(&balancer, addr(1));
    kept.record_latency(Duration::from_millis(400));
    let removed = pick_of(&balancer, addr(2));

    let next = balancer.update(&[endpoint(1, 1), endpoint(3, 1)]);
    drop(balancer);
    assert_eq!(in_flight(&next, addr(1)), 1);
    let rtt = next.loads().iter().find(|l| l.addr == addr(1)).map(|l| l.rtt).expect("the endpoint");
    assert!(rtt > Duration::from_millis(300), "{rtt:?}");
    assert_eq!(removed.addr, addr(2));
    assert_eq!(removed.identity(), "spiffe://cluster.local/ns/a/sa/b");
    assert!(tally(&next, 100, |_| None).keys().all(|&a| a != addr(2)));
    drop(removed);
    drop(kept);
    assert_eq!(in_flight(&next, addr(1)), 0);
}

#[test]
fn an_update_that_changes_an_endpoints_labels_keeps_its_load() {
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &endpoints(&[1]));
    let held = pick_of(&balancer, addr(1));
    let mut relabelled = endpoint(1, 1);
    relabelled.labels.insert("version".into(), "v2".into());
    let next = balancer.update(std::slice::from_ref(&relabelled));
    assert_eq!(in_flight(&next, addr(1)), 1);
    assert_eq!(next.pick(None).expect("an endpoint").labels().get("version").map(String::as_str), Some("v2"));
    assert!(held.labels().is_empty());
    drop(held);
    assert_eq!(in_flight(&next, addr(1)), 0);
}

#[test]
fn an_empty_endpoint_set_picks_nothing() {
    for lb in ALGORITHMS {
        let balancer = Balancer::new(&lb(), &[]);
        assert!(balancer.is_empty());
        assert!(balancer.pick(Some(7)).is_none());
        assert!(balancer.pick(None).is_none());
        assert!(balancer.update(&[]).pick(None).is_none());
    }
}

#[test]
fn zero_weight_endpoints_are_never_picked_unless_all_weights_are_zero() {
    for lb in ALGORITHMS {
        let balancer = Balancer::new(&lb(), &endpoints(&[0, 1, 2]));
        let counts = tally(&balancer, 2000, |i| Some(i as u64));
        assert_eq!(counts.get(&addr(1)), None, "{:?}: {counts:?}", lb());
        let all_zero = Balancer::new(&lb(), &endpoints(&[0, 0, 0]));
        let counts = tally(&all_zero, 2000, |i| Some(i as u64));
        assert_eq!(counts.len(), 3, "{:?}: {counts:?}", lb());
    }
}

#[test]
fn excluded_endpoints_are_never_picked_and_excluding_all_picks_nothing() {
    for lb in ALGORITHMS {
        let balancer = Balancer::new(&lb(), &endpoints(&[1, 1, 1]));
        for i in 0..500u64 {
            let pick = balancer.pick_excluding(Some(i), &[addr(1), addr(3)]).expect("an endpoint");
            assert_eq!(pick.addr, addr(2), "{:?}", lb());
        }
        assert!(balancer.pick_excluding(Some(1), &[addr(1), addr(2), addr(3)]).is_none());
    }
}

#[test]
fn ejected_endpoints_are_skipped_unless_every_endpoint_is_ejected() {
    for lb in ALGORITHMS {
        let balancer = Balancer::new(&lb(), &endpoints(&[1, 1, 1]));
        assert!(balancer.set_ejected(addr(1), true));
        assert!(!balancer.set_ejected(addr(9), true));
        let counts = tally(&balancer, 500, |i| Some(i as u64));
        assert_eq!(counts.get(&addr(1)), None, "{:?}: {counts:?}", lb());
        // The mark follows the address into the next generation.
        let next = balancer.update(&endpoints(&[1, 1, 1]));
        next.set_ejected(addr(2), true);
        next.set_ejected(addr(3), true);
        assert_eq!(tally(&next, 300, |i| Some(i as u64)).len(), 3, "{:?}", lb());
        next.set_ejected(addr(1), false);
        assert_eq!(tally(&next, 300, |i| Some(i as u64)).keys().collect::<Vec<_>>(), vec![&addr(1)]);
    }
}

#[test]
fn an_endpoint_listed_twice_is_one_endpoint_with_the_weights_added() {
    let list = [endpoint(1, 1), endpoint(2, 2), endpoint(1, 1)];
    let balancer = Balancer::new(&LoadBalancer::RoundRobin, &list);
    assert_eq!(balancer.len(), 2);
    let counts = tally(&balancer, 1000, |_| None);
    assert_eq!((counts[&addr(1)], counts[&addr(2)]), (500, 500));
}

#[test]
fn a_single_endpoint_is_always_picked() {
    for lb in ALGORITHMS {
        let balancer = Balancer::new(&lb(), &endpoints(&[3]));
        assert_eq!(tally(&balancer, 100, |i| Some(i as u64)).get(&addr(1)), Some(&100));
    }
}

#[test]
fn picks_from_many_threads_leave_no_request_in_flight() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Balancer>();
    assert_send_sync::<Pick>();
    for lb in ALGORITHMS {
        let balancer = Balancer::new(&lb(), &endpoints(&[1, 2, 3, 4]));
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let balancer = &balancer;
                scope.spawn(move || {
                    for i in 0..5000u64 {
                        let pick = balancer.pick(Some(t * 10_000 + i)).expect("an endpoint");
                        pick.record_latency(Duration::from_micros(100 + i % 50));
                    }
                });
            }
        });
        assert!(balancer.loads().iter().all(|l| l.in_flight == 0), "{:?}", lb());
    }
}

#[test]
fn hash_bytes_is_stable_and_spreads_similar_inputs() {
    // Pinned: proxies of different versions must agree on where a key goes.
    assert_eq!(hash_bytes(b""), 0xefd0_1f60_ba99_2926);
    assert_eq!(hash_bytes(b"a"), 0x82a2_a958_a9be_ce5b);
    assert_eq!(hash_bytes(b"10.1.2.3"), 0xf639_2774_8f53_5d54);
    assert_ne!(hash_bytes(b"user-1"), hash_bytes(b"user-2"));
    // Keys differing in the last byte land far apart (the top bits differ).
    let differing_top_bits = (0..100u8).filter(|&i| hash_bytes(&[b'k', i]) >> 60 != hash_bytes(&[b'k', i + 1]) >> 60);
    assert!(differing_top_bits.count() > 80);
}

#[test]
fn the_round_robin_stride_is_coprime_with_every_total() {
    for total in 1..500u64 {
        let stride = coprime_stride(total);
        assert_eq!(gcd(stride, total), 1, "total {total}");
        let mut seen: Vec<u64> = (0..total).map(|i| mul_mod(i, stride, total)).collect();
        seen.sort_unstable();
        assert!(seen.iter().copied().eq(0..total), "total {total}");
    }
    assert_eq!(mul_mod(u64::MAX - 1, u64::MAX - 1, u64::MAX), 1);
}
