use std::collections::BTreeMap;

use super::*;
use crate::proxy_config::{
    Cluster, Endpoint, GatewayListener, InboundListener, InboundMtls, LoadBalancer, Protocol, Telemetry,
    UnknownDestinations, UpstreamTls, VirtualHost,
};

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
    }
}

fn cluster(service: usize, subset: &str, endpoints: usize) -> Cluster {
    let fqdn = format!("svc-{service:04}.shop.svc.cluster.local");
    Cluster {
        name: format!("outbound|80|{subset}|{fqdn}"),
        service: fqdn,
        port: 80,
        subset: subset.into(),
        protocol: Protocol::Http,
        endpoints: (0..endpoints)
            .map(|e| Endpoint {
                address: format!("10.{}.{}.{}:8080", service / 250, service % 250, e + 1).parse().expect("address"),
                labels: BTreeMap::from([("version".into(), "v1".into())]),
                identity: "spiffe://cluster.local/ns/shop/sa/backend".into(),
                weight: 1,
                meshed: true,
            })
            .collect(),
        load_balancer: LoadBalancer::default(),
        connection_pool: None,
        outlier_detection: None,
        tls: UpstreamTls::Auto,
        retry_budget: None,
    }
}

fn vhost(service: usize) -> VirtualHost {
    VirtualHost {
        name: format!("svc-{service:04}.shop.svc.cluster.local"),
        port: 80,
        protocol: Protocol::Http,
        domains: vec![format!("svc-{service:04}")],
        addresses: vec![format!("10.96.{}.{}", service / 250, service % 250)],
        routes: Vec::new(),
        tcp: Vec::new(),
    }
}

/// A sidecar config that knows `services` services, ten endpoints each, clusters in name order.
fn config(version: &str, services: usize) -> ProxyConfig {
    let mut config = ProxyConfig::new(version, node("web-1.shop"), ProxyMode::Sidecar);
    config.clusters = (0..services).map(|s| cluster(s, "", 10)).collect();
    config.outbound.virtual_hosts = (0..services).map(vhost).collect();
    config.inbound = vec![InboundListener {
        port: 8080,
        protocol: Protocol::Http,
        mtls: InboundMtls::Permissive,
        authorization: Vec::new(),
        jwt: Vec::new(),
        rate_limits: Vec::new(),
    }];
    normalize(&mut config);
    config
}

/// `apply(old, diff(old, new))` gives `new` back; `None` only when nothing but the version differs.
fn assert_round_trip(old: &ProxyConfig, new: &ProxyConfig) -> Option<Delta> {
    let delta = diff(old, new);
    match &delta {
        Some(delta) => {
            assert_eq!(delta.base_version, old.version);
            assert_eq!(&apply(old, delta).expect("the delta applies to its base"), new);
            let json = serde_json::to_string(delta).expect("encode");
            assert_eq!(&serde_json::from_str::<Delta>(&json).expect("decode"), delta, "{json}");
        }
        None => assert_eq!(&ProxyConfig { version: new.version.clone(), ..old.clone() }, new),
    }
    delta
}

#[test]
fn a_delta_turns_the_old_config_into_the_new_one_whatever_changed() {
    let old = config("1", 20);
    let mut changes: Vec<(&str, ProxyConfig)> = Vec::new();
    let mut new = config("2", 20);
    new.clusters[3].endpoints.pop();
    changes.push(("one cluster's endpoints", new));
    let mut new = config("2", 22);
    new.clusters.remove(0);
    changes.push(("clusters added and removed", new));
    let mut new = config("2", 0);
    new.inbound.clear();
    changes.push(("everything removed", new));
    let mut new = config("2", 20);
    new.outbound.unknown_destinations = UnknownDestinations::Refuse;
    new.telemetry = Telemetry { access_log: true, tracing_sampling_percent: 1.0, ..Telemetry::default() };
    new.node = node("web-2.shop");
    changes.push(("outbound, telemetry and node", new));
    let mut new = config("2", 20);
    new.mode = ProxyMode::Gateway;
    new.gateway_listeners =
        vec![GatewayListener { port: 8080, protocol: Protocol::Http, virtual_hosts: vec![vhost(1)] }];
    new.schema = "trellis.dev/proxyconfig/v1beta1".into();
    changes.push(("mode, gateway listeners and schema", new));
    let mut new = config("2", 20);
    new.clusters.insert(5, cluster(4, "", 3));
    changes.push(("a name defined twice", new));
    for (what, new) in &changes {
        let delta = assert_round_trip(&old, new).unwrap_or_else(|| panic!("{what}: a change makes a delta"));
        assert_eq!(delta.version, "2", "{what}");
        // And back again, which removes what was added.
        assert_round_trip(new, &ProxyConfig { version: "3".into(), ..old.clone() });
    }
}

#[test]
fn an_endpoint_change_sends_only_that_cluster_in_a_few_hundred_bytes() {
    let old = config("7", 1000);
    let mut new = config("8", 1000);
    new.clusters[500].endpoints[3].address = "10.2.0.99:8080".parse().expect("address");
    let delta = assert_round_trip(&old, &new).expect("a changed endpoint makes a delta");
    assert_eq!(delta.clusters.len(), 1);
    assert_eq!(delta.clusters[0].name, "outbound|80||svc-0500.shop.svc.cluster.local");
    assert!(delta.removed_clusters.is_empty() && delta.outbound.is_none() && delta.inbound.is_none());
    let delta_size = encode(&ServerMessage::Delta(Box::new(delta))).expect("encode").len();
    let snapshot_size = encode(&ServerMessage::Snapshot(Box::new(new))).expect("encode").len();
    assert!(delta_size < 2_000, "the delta takes {delta_size} bytes");
    assert!(snapshot_size > 500 * delta_size, "a snapshot takes {snapshot_size} bytes, the delta {delta_size}");
}

#[test]
fn configs_that_differ_only_in_version_need_no_delta() {
    assert_eq!(assert_round_trip(&config("1", 5), &config("2", 5)), None);
}

#[test]
fn clusters_out_of_name_order_compare_by_name() {
    let old = config("1", 5);
    let mut shuffled = config("2", 5);
    shuffled.clusters.reverse();
    assert_eq!(diff(&old, &shuffled), None, "the order of clusters carries no meaning");
    shuffled.clusters[0].port = 81;
    let delta = diff(&old, &shuffled).expect("a changed cluster makes a delta");
    assert_eq!(delta.clusters, vec![shuffled.clusters[0].clone()]);
    let mut expected = shuffled.clone();
    normalize(&mut expected);
    assert_eq!(apply(&old, &delta).expect("applies"), expected, "apply leaves clusters in name order");
}

#[test]
fn a_delta_on_another_base_is_refused_naming_both_versions() {
    let mut new = config("3", 5);
    new.clusters.pop();
    let delta = diff(&config("2", 5), &new).expect("delta");
    let err = apply(&config("1", 5), &delta).expect_err("wrong base").to_string();
    assert!(err.contains(r#"based on version "2" but the proxy holds "1""#), "{err}");
}

#[test]
fn removing_a_cluster_the_base_lacks_is_refused() {
    let mut delta = diff(&config("1", 5), &config("2", 4)).expect("delta");
    delta.removed_clusters = vec!["outbound|80||nowhere".into()];
    let err = apply(&config("1", 5), &delta).expect_err("unknown cluster").to_string();
    assert!(err.contains(r#"cluster "outbound|80||nowhere" to remove is not in version "1""#), "{err}");
    delta.clusters = vec![cluster(4, "", 1)];
    delta.removed_clusters = vec![delta.clusters[0].name.clone()];
    let err = apply(&config("1", 5), &delta).expect_err("removed and sent").to_string();
    assert!(err.contains("is both removed and sent"), "{err}");
}

#[test]
fn messages_are_one_json_object_a_line_keyed_by_their_kind() {
    let ack = encode(&ClientMessage::Ack { version: "3".into() }).expect("encode");
    assert_eq!(ack, b"{\"ack\":{\"version\":\"3\"}}\n");
    let hello = ClientMessage::Hello(Hello {
        node: node("web-1.shop"),
        mode: ProxyMode::Sidecar,
        proxy_version: "0.1.0".into(),
        ips: vec!["10.0.0.7".parse().expect("ip")],
    });
    let line = encode(&hello).expect("encode");
    let text = std::str::from_utf8(&line).expect("utf-8");
    assert!(text.starts_with(r#"{"hello":{"node":{"id":"web-1.shop""#), "{text}");
    assert!(text.contains(r#""proxyVersion":"0.1.0""#) && text.ends_with("}}\n"), "{text}");
    assert_eq!(decode::<ClientMessage>(&line[..line.len() - 1]).expect("decode"), hello);
    let mut delta = diff(&config("1", 3), &config("2", 2)).expect("delta");
    delta.telemetry = Some(Telemetry::default());
    let line = encode(&ServerMessage::Delta(Box::new(delta.clone()))).expect("encode");
    let text = std::str::from_utf8(&line).expect("utf-8");
    assert!(text.starts_with(r#"{"delta":{"version":"2","baseVersion":"1","outbound":{"#), "{text}");
    assert!(text.contains(r#""removedClusters":["outbound|80||svc-0002.shop.svc.cluster.local"]"#), "{text}");
    assert_eq!(decode::<ServerMessage>(&line).expect("decode").version(), "2");
}

#[test]
fn borrowed_encodings_match_the_owned_messages() {
    let mut full = config("2", 2);
    full.gateway_listeners =
        vec![GatewayListener { port: 80, protocol: Protocol::Http, virtual_hosts: vec![vhost(0)] }];
    full.telemetry.otlp_endpoint = Some("http://collector:4317".into());
    let mut empty = ProxyConfig::new("3", node("web-1.shop"), ProxyMode::Gateway);
    empty.outbound.unknown_destinations = UnknownDestinations::Refuse;
    for config in [config("1", 3), full, empty] {
        let owned = encode(&ServerMessage::Snapshot(Box::new(config.clone()))).expect("encode");
        assert_eq!(encode_snapshot(&config).expect("encode"), owned, "{}", String::from_utf8_lossy(&owned));
    }
    let delta = diff(&config("1", 3), &config("2", 2)).expect("delta");
    assert_eq!(encode_delta(&delta).expect("encode"), encode(&ServerMessage::Delta(Box::new(delta))).expect("encode"));
}

#[test]
fn a_hello_ignores_fields_it_does_not_know_but_a_delta_refuses_them() {
    let hello = br#"{"hello":{"node":{"id":"a","namespace":"b","serviceAccount":"c","identity":"d"},"mode":"gateway","proxyVersion":"9","zone":"eu-1"}}"#;
    let ClientMessage::Hello(hello) = decode::<ClientMessage>(hello).expect("newer proxies may say more") else {
        panic!("not a hello");
    };
    assert_eq!((hello.node.id.as_str(), hello.mode), ("a", ProxyMode::Gateway));
    let delta = br#"{"delta":{"version":"2","baseVersion":"1","listeners":[]}}"#;
    let err = decode::<ServerMessage>(delta).expect_err("an unknown section").to_string();
    assert!(err.contains("unknown field `listeners`"), "{err}");
    let err = decode::<ClientMessage>(b"{\"bye\":{}}").expect_err("an unknown message").to_string();
    assert!(err.starts_with(r#"config push: invalid message "{\"bye\":{}}": unknown variant `bye`"#), "{err}");
}

#[test]
fn lines_are_found_wherever_the_stream_is_cut() {
    let stream = b"{\"a\":1}\n\n{\"b\":22}\r\n{\"c\":333}\n{\"d\":";
    for cut in 1..stream.len() {
        let mut decoder = LineDecoder::new(64);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for chunk in stream.chunks(cut) {
            decoder.push(chunk);
            while let Some(line) = decoder.next_line().expect("short lines") {
                lines.push(line.to_vec());
            }
        }
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"{\"b\":22}\r", b"{\"c\":333}"], "chunks of {cut}");
        assert!(decoder.has_partial_line(), "chunks of {cut}");
    }
    let mut decoder = LineDecoder::new(8);
    decoder.push(b"{}\n  \n");
    assert_eq!(decoder.next_line().expect("short").map(<[u8]>::to_vec), Some(b"{}".to_vec()));
    assert_eq!(decoder.next_line().expect("blank lines are skipped"), None);
    assert!(!decoder.has_partial_line());
}

#[test]
fn a_line_longer_than_the_limit_is_an_error_before_it_ends() {
    let mut decoder = LineDecoder::new(8);
    decoder.push(b"{\"a\":");
    assert_eq!(decoder.next_line().expect("not too long yet"), None);
    decoder.push(b"12345");
    let err = decoder.next_line().expect_err("too long").to_string();
    assert!(err.contains("more than 8 bytes"), "{err}");
    let mut decoder = LineDecoder::new(4);
    decoder.push(b"{\"a\":1}\n");
    assert!(decoder.next_line().is_err(), "a complete line over the limit is refused too");
}

#[test]
fn a_status_list_reads_as_camel_case_json() {
    let list = ProxyStatusList {
        proxies: vec![ProxyStatus {
            id: "web-1.shop".into(),
            namespace: "shop".into(),
            mode: ProxyMode::Sidecar,
            proxy_version: "0.1.0".into(),
            address: "10.0.0.7:40000".into(),
            connected_at: 1_700_000_000,
            sent_version: "4".into(),
            acked_version: Some("3".into()),
            in_sync: false,
            last_error: None,
            sent_messages: 2,
            sent_bytes: 900,
        }],
    };
    let json = serde_json::to_string(&list).expect("encode");
    assert!(json.contains(r#""sentVersion":"4","ackedVersion":"3","inSync":false"#), "{json}");
    assert_eq!(serde_json::from_str::<ProxyStatusList>(&json).expect("decode"), list);
}
