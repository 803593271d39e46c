use std::collections::BTreeMap;

use trellis_api::proxy_config::{Cluster, Endpoint, LoadBalancer, Protocol, UpstreamTls, VirtualHost, WeightedCluster};
use trellis_api::push::{diff, normalize};

use super::*;

#[test]
fn the_reconnect_delay_doubles_up_to_its_cap_and_is_fully_jittered() {
    let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(15) };
    let caps: Vec<u128> = (0..10).map(|attempt| backoff.delay(attempt, 1.0).as_millis()).collect();
    assert_eq!(caps, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000]);
    assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(15), "no overflow after many failures");
    for unit in [0.1, 0.7, 1.0 - f64::EPSILON] {
        assert!(backoff.delay(2, unit) <= Duration::from_millis(400), "never above the cap");
    }
    for attempt in [0, 3, 40] {
        assert_eq!(backoff.delay(attempt, 0.0), Duration::ZERO, "full jitter reaches zero");
        assert_eq!(backoff.delay(attempt, 0.5) * 2, backoff.delay(attempt, 1.0), "uniform below the cap");
    }
    assert_eq!(Backoff::default(), Backoff { base: RECONNECT_BASE_DELAY, max: RECONNECT_MAX_DELAY });
}

#[test]
fn a_hello_names_this_build_of_the_proxy() {
    let node = Node { id: "web-1.shop".into(), ..Node::default() };
    let hello = hello(node.clone(), ProxyMode::Gateway, vec!["10.0.0.7".parse().expect("ip")]);
    assert_eq!(
        (hello.node, hello.mode, hello.proxy_version.as_str()),
        (node, ProxyMode::Gateway, env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_discovery_address_is_host_and_port_with_or_without_a_scheme() {
    let target = |host: &str, port, scheme| Target { host: host.into(), port, scheme, ca: None };
    let cases = [
        ("trellisd.trellis-system.svc:15012", target("trellisd.trellis-system.svc", 15012, None)),
        ("http://127.0.0.1:9000", target("127.0.0.1", 9000, Some(Scheme::Http))),
        ("http://[::1]:9000/", target("::1", 9000, Some(Scheme::Http))),
        ("https://trellisd", target("trellisd", DEFAULT_PORT, Some(Scheme::Https))),
        ("trellisd", target("trellisd", DEFAULT_PORT, None)),
    ];
    for (text, expected) in cases {
        assert_eq!(Target::parse(text).expect(text), expected, "{text}");
    }
    assert_eq!(target("::1", 9000, None).to_string(), "[::1]:9000");
    assert_eq!(target("trellisd", 15012, None).to_string(), "trellisd:15012");
    let bad = ["", "ftp://trellisd:15012", "trellisd:99999", "trellisd:15012/v1", "user@trellisd", "[::1", "::1"];
    for bad in bad {
        let err = Target::parse(bad).expect_err(bad).to_string();
        assert!(err.starts_with("invalid value for --discovery-address: "), "{bad}: {err}");
    }
}

#[test]
fn tls_is_used_for_https_or_when_roots_are_given_unless_the_address_says_http() {
    let with = |text: &str, ca: Option<&str>| Target::parse(text).expect(text).with_ca(ca.map(Into::into));
    assert!(!with("trellisd", None).expect("plain").uses_tls());
    assert!(with("trellisd", Some("roots.pem")).expect("roots").uses_tls());
    assert!(!with("http://trellisd", Some("roots.pem")).expect("http").uses_tls());
    assert!(with("https://trellisd", Some("roots.pem")).expect("https").uses_tls());
    let err = with("https://trellisd", None).expect_err("https without roots").to_string();
    assert!(err.contains("--discovery-ca"), "{err}");
    assert_eq!(with("https://trellisd:1", Some("r")).expect("https").uri("/v1/x"), "https://trellisd:1/v1/x");
}

fn cluster(name: &str, port: u16) -> Cluster {
    Cluster {
        name: name.into(),
        service: "backend.shop.svc.cluster.local".into(),
        port: 80,
        subset: String::new(),
        protocol: Protocol::Http,
        endpoints: vec![Endpoint {
            address: format!("127.0.0.1:{port}").parse().expect("address"),
            labels: BTreeMap::new(),
            identity: String::new(),
            weight: 1,
            meshed: false,
        }],
        load_balancer: LoadBalancer::default(),
        connection_pool: None,
        outlier_detection: None,
        tls: UpstreamTls::Auto,
        retry_budget: None,
    }
}

/// A config of `version` whose one virtual host sends TCP to `target`, with clusters `a` and `b`.
fn config(version: &str, target: &str, port: u16) -> ProxyConfig {
    let node = Node { id: "web-1.shop".into(), namespace: "shop".into(), ..Node::default() };
    let mut config = ProxyConfig::new(version, node, ProxyMode::Sidecar);
    config.clusters = vec![cluster("a", port), cluster("b", port)];
    config.outbound.virtual_hosts = vec![VirtualHost {
        name: "backend.shop.svc.cluster.local".into(),
        port: 80,
        protocol: Protocol::Tcp,
        domains: Vec::new(),
        addresses: Vec::new(),
        routes: Vec::new(),
        tcp: vec![WeightedCluster {
            cluster: target.into(),
            weight: 1,
            request_headers: Default::default(),
            response_headers: Default::default(),
        }],
    }];
    normalize(&mut config);
    config
}

fn delta(old: &ProxyConfig, new: &ProxyConfig) -> ServerMessage {
    ServerMessage::Delta(Box::new(diff(old, new).expect("a change")))
}

fn serving(store: &Store) -> (String, u16) {
    let current = store.current().expect("a config is serving");
    (current.config.version.clone(), current.config.clusters[0].endpoints[0].address.port())
}

#[test]
fn snapshots_and_deltas_are_applied_acknowledged_or_refused_keeping_the_last_good_config() {
    let (store, metrics) = (Store::default(), Metrics::new());
    let mut held = Held::Nothing;
    let v1 = config("1", "a", 8001);
    let answer = held.receive(delta(&v1, &config("2", "a", 8002)), &store, &metrics);
    assert!(matches!(answer, ClientMessage::Resync { ref error, .. } if error == "a delta before any snapshot"));
    assert!(!store.is_loaded());

    let answer = held.receive(ServerMessage::Snapshot(Box::new(v1.clone())), &store, &metrics);
    assert_eq!(answer, ClientMessage::Ack { version: "1".into() });
    assert!(store.is_loaded(), "ready after the first config");

    let v2 = config("2", "a", 8002);
    assert_eq!(held.receive(delta(&v1, &v2), &store, &metrics), ClientMessage::Ack { version: "2".into() });
    assert_eq!(serving(&store), ("2".into(), 8002));

    let v3 = config("3", "missing", 8003);
    let ClientMessage::Nack { version, error } = held.receive(delta(&v2, &v3), &store, &metrics) else {
        panic!("a config that does not compile is refused");
    };
    assert_eq!(version, "3");
    assert!(error.contains("unknown cluster \"missing\""), "{error}");
    assert_eq!(serving(&store), ("2".into(), 8002), "the last good config keeps serving");

    let v4 = config("4", "b", 8004);
    assert_eq!(held.receive(delta(&v3, &v4), &store, &metrics), ClientMessage::Ack { version: "4".into() });
    assert_eq!(serving(&store), ("4".into(), 8004), "the delta after a refusal builds on the refused config");

    let ClientMessage::Resync { version, error } = held.receive(delta(&v2, &v4), &store, &metrics) else {
        panic!("a delta on another base asks for a snapshot");
    };
    assert_eq!(version, "4");
    assert!(error.contains(r#"based on version "2" but the proxy holds "4""#), "{error}");
    assert_eq!(serving(&store), ("4".into(), 8004));
}
