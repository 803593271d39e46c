use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_api::proxy_config::{Cluster, Endpoint, LoadBalancer, Node, Protocol, ProxyConfig, ProxyMode, UpstreamTls};
use trellis_api::push::{apply, diff, normalize};

use super::{Interner, View};

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
                labels: BTreeMap::new(),
                identity: String::new(),
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

fn config(proxy: &str, version: &str, services: usize) -> ProxyConfig {
    let node = Node { id: proxy.into(), namespace: "shop".into(), ..Node::default() };
    let mut config = ProxyConfig::new(version, node, ProxyMode::Sidecar);
    config.clusters = (0..services).rev().map(|s| cluster(s, 3)).collect();
    config
}

#[test]
fn proxies_sent_equal_clusters_share_one_copy_of_each() {
    let interner = Interner::default();
    let a = View::new(config("a.shop", "1", 50), &interner);
    let b = View::new(config("b.shop", "1", 50), &interner);
    assert_eq!(interner.live_clusters(), 50);
    assert!(a.clusters.iter().zip(b.clusters.iter()).all(|(x, y)| Arc::ptr_eq(x, y)));
    drop(a);
    drop(b);
    assert_eq!(interner.live_clusters(), 0, "the interner holds nothing alive by itself");
}

#[test]
fn a_changed_config_shares_unchanged_clusters_with_the_last_view_and_the_changed_ones_across_proxies() {
    let interner = Interner::default();
    let old: Vec<View> = ["a.shop", "b.shop"].map(|p| View::new(config(p, "1", 20), &interner)).into();
    let mut new = Vec::new();
    for view in &old {
        let mut next = config(&view.node.id, "2", 21);
        next.clusters.retain(|c| !c.name.contains("svc-003"));
        next.clusters.iter_mut().filter(|c| c.name.contains("svc-007")).for_each(|c| c.endpoints.truncate(1));
        let next_view = View::new(next.clone(), &interner);
        let delta = diff(&view.to_config(), &next_view.to_config()).expect("a delta");
        assert_eq!(Some(&delta), diff(&view.to_config(), &next).as_ref(), "a view stands for its config");
        let names: Vec<&str> = delta.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["outbound|80||svc-007.shop.svc.cluster.local", "outbound|80||svc-020.shop.svc.cluster.local"]
        );
        assert_eq!(delta.removed_clusters, ["outbound|80||svc-003.shop.svc.cluster.local"]);
        normalize(&mut next);
        assert_eq!(apply(&view.to_config(), &delta).expect("applies"), next, "the delta rebuilds the new config");
        assert_eq!(next_view.to_config(), next);
        new.push(next_view);
    }
    let kept = new[0].clusters.iter().filter(|c| old[0].clusters.iter().any(|o| Arc::ptr_eq(o, c))).count();
    assert_eq!(kept, 18, "unchanged clusters are the allocation the last view holds");
    assert!(
        new[0].clusters.iter().zip(new[1].clusters.iter()).all(|(x, y)| Arc::ptr_eq(x, y)),
        "changed ones are shared"
    );
    assert_eq!(interner.live_clusters(), 22, "the old views still hold the two replaced clusters");
    drop(old);
    assert_eq!(interner.live_clusters(), 20, "only what views hold stays alive");
    assert_eq!(new[0].version, "2");
}

#[test]
fn a_view_of_the_same_config_has_no_delta() {
    let interner = Interner::default();
    let view = View::new(config("a.shop", "1", 10), &interner);
    assert!(diff(&view.to_config(), &config("a.shop", "2", 10)).is_none());
}

#[test]
fn a_query_parameter_is_found_by_name_and_percent_decoded() {
    use super::listen::query_param;
    assert_eq!(query_param("proxy=web-1.shop", "proxy").as_deref(), Some("web-1.shop"));
    assert_eq!(query_param("a=1&proxy=web%2D1.shop&proxy=x", "proxy").as_deref(), Some("web-1.shop"));
    assert_eq!(query_param("proxy=a+b%20c", "proxy").as_deref(), Some("a b c"));
    assert_eq!(query_param("proxyx=1", "proxy"), None, "a longer name is another parameter");
    assert_eq!(query_param("proxy=", "proxy"), None, "empty");
    assert_eq!(query_param("proxy=%zz", "proxy"), None, "a bad escape");
    assert_eq!(query_param("proxy=%ff", "proxy"), None, "not UTF-8");
}
