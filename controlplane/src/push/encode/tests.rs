use std::collections::BTreeMap;
use trellis_api::proxy_config::{
    Cluster, Endpoint, InboundListener, LoadBalancer, Node, Outbound, Protocol, ProxyConfig, ProxyMode, UpstreamTls,
    VirtualHost,
};
use trellis_api::push::{ServerMessage, apply, decode, diff, encode_delta, encode_snapshot};

use super::{INLINE_PIECE_BYTES, delta, line_len, snapshot};
use crate::push::{Interner, View};

fn cluster(service: usize, endpoints: usize) -> Cluster {
    let fqdn = format!("svc-{service:03}.shop.svc.cluster.local");
    Cluster {
        name: format!("outbound|80||{fqdn}"),
        service: fqdn,
        port: 80,
        subset: String::new(),
        protocol: Protocol::Http,
        endpoints: (0..endpoints)
            .map(|e| Endpoint {
                address: format!("10.1.{service}.{}:8080", e + 1).parse().expect("address"),
                labels: BTreeMap::from([("version".to_owned(), format!("v{e}"))]),
                identity: "spiffe://cluster.local/ns/shop/sa/default".to_owned(),
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

fn outbound(services: usize, marker: &str) -> Outbound {
    Outbound {
        virtual_hosts: (0..services)
            .map(|s| VirtualHost {
                name: format!("svc-{s:03}.shop.svc.cluster.local"),
                port: 80,
                protocol: Protocol::Http,
                domains: vec![format!("svc-{s:03}"), format!("svc-{s:03}.shop"), marker.to_owned()],
                addresses: Vec::new(),
                routes: Vec::new(),
                tcp: Vec::new(),
            })
            .collect(),
        ..Outbound::default()
    }
}

fn config(proxy: &str, version: &str, services: usize) -> ProxyConfig {
    let node = Node { id: proxy.into(), namespace: "shop".into(), ..Node::default() };
    let mut config = ProxyConfig::new(version, node, ProxyMode::Sidecar);
    config.clusters = (0..services).rev().map(|s| cluster(s, 3)).collect();
    config.outbound = outbound(services, "first");
    config.inbound = vec![InboundListener {
        port: 8080,
        protocol: Protocol::Http,
        mtls: Default::default(),
        authorization: Vec::new(),
        jwt: Vec::new(),
        rate_limits: Vec::new(),
    }];
    config
}

/// A change made to a config.
type Edit = fn(&mut ProxyConfig);

fn bytes_of(line: &[bytes::Bytes]) -> Vec<u8> {
    line.iter().flat_map(|piece| piece.iter().copied()).collect()
}

#[test]
fn a_snapshot_in_pieces_reads_exactly_as_the_protocol_encodes_it() {
    let interner = Interner::default();
    for services in [0, 1, 30] {
        let mut config = config("a.shop", "7", services);
        if services == 0 {
            config.inbound.clear();
        }
        let view = View::new(config, &interner);
        let line = snapshot(&view).expect("encodes");
        let whole = encode_snapshot(&view.to_config()).expect("encodes");
        assert_eq!(String::from_utf8_lossy(&bytes_of(&line)), String::from_utf8_lossy(&whole), "{services} services");
        assert_eq!(line_len(&line), whole.len());
    }
}

#[test]
fn every_change_of_a_delta_in_pieces_reads_exactly_as_the_protocol_encodes_it() {
    let interner = Interner::default();
    let old = View::new(config("a.shop", "1", 20), &interner);
    let edits: [(&str, Edit); 6] = [
        ("an endpoint", |c| {
            c.clusters.iter_mut().filter(|c| c.name.contains("svc-007")).for_each(|c| c.endpoints.truncate(1))
        }),
        ("a removed and an added cluster", |c| {
            c.clusters.retain(|c| !c.name.contains("svc-003"));
            c.clusters.push(cluster(42, 2));
        }),
        ("the outbound section", |c| c.outbound = outbound(20, "second")),
        ("the inbound section", |c| c.inbound.clear()),
        ("the node", |c| {
            c.node.labels.insert("app".into(), "a".into());
        }),
        ("the mode and the telemetry", |c| {
            c.mode = ProxyMode::Gateway;
            c.telemetry.access_log = !c.telemetry.access_log;
        }),
    ];
    for (what, edit) in edits {
        let mut next = config("a.shop", "2", 20);
        edit(&mut next);
        let new = View::new(next, &interner);
        let line = delta(&old, &new).expect("encodes").expect("a change");
        let delta = diff(&old.to_config(), &new.to_config()).expect("a change");
        let whole = encode_delta(&delta).expect("encodes");
        assert_eq!(String::from_utf8_lossy(&bytes_of(&line)), String::from_utf8_lossy(&whole), "{what}");
        let Ok(ServerMessage::Delta(sent)) = decode::<ServerMessage>(&bytes_of(&line)[..line_len(&line) - 1]) else {
            panic!("{what}: not a delta");
        };
        assert_eq!(apply(&old.to_config(), &sent).expect("applies"), new.to_config(), "{what}");
    }
    let same = View::new(config("a.shop", "3", 20), &interner);
    assert!(delta(&old, &same).expect("encodes").is_none(), "nothing but the version changed");
}

#[test]
fn proxies_sent_one_outbound_section_share_its_encoding() {
    let interner = Interner::default();
    let views: Vec<View> = ["a.shop", "b.shop"].map(|p| View::new(config(p, "1", 30), &interner)).into();
    let lines: Vec<_> = views.iter().map(|v| snapshot(v).expect("encodes")).collect();
    let large = |line: &Vec<bytes::Bytes>| -> Vec<*const u8> {
        line.iter().filter(|p| p.len() >= INLINE_PIECE_BYTES).map(|p| p.as_ptr()).collect()
    };
    assert!(!large(&lines[0]).is_empty(), "the outbound section and the clusters are pieces of their own");
    assert_eq!(large(&lines[0]), large(&lines[1]), "both lines refer to the same bytes");
    let outbound = views[0].outbound.json();
    assert!(large(&lines[0]).contains(&outbound.as_ptr()), "the outbound section's own encoding, not a copy");
}
