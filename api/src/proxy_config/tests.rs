use std::time::Duration;

use super::*;

fn sample() -> ProxyConfig {
    let node = Node {
        id: "booking-v1.default".into(),
        namespace: "default".into(),
        service_account: "booking".into(),
        identity: "spiffe://cluster.local/ns/default/sa/booking".into(),
        labels: BTreeMap::from([("app".into(), "booking-service".into())]),
    };
    let mut config = ProxyConfig::new("42", node, ProxyMode::Sidecar);
    let cluster = |subset: &str| Cluster {
        name: format!("outbound|80|{subset}|shipping-service.default.svc.cluster.local"),
        service: "shipping-service.default.svc.cluster.local".into(),
        port: 80,
        subset: subset.into(),
        protocol: Protocol::Http,
        endpoints: vec![Endpoint {
            address: "127.0.1.3:8080".parse().expect("address"),
            labels: BTreeMap::from([("version".into(), subset.into())]),
            identity: "spiffe://cluster.local/ns/default/sa/shipping".into(),
            weight: 1,
            meshed: true,
        }],
        load_balancer: LoadBalancer::default(),
        connection_pool: Some(ConnectionPool {
            max_connections: Some(1),
            connect_timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(180),
            max_ejection_percent: 100,
            min_health_percent: 0,
        }),
        tls: UpstreamTls::Auto,
        retry_budget: None,
    };
    config.clusters = vec![cluster("v1"), cluster("v2")];
    let weighted = |subset: &str, weight| WeightedCluster {
        cluster: format!("outbound|80|{subset}|shipping-service.default.svc.cluster.local"),
        weight,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    };
    config.outbound.virtual_hosts = vec![VirtualHost {
        name: "shipping-service.default.svc.cluster.local".into(),
        port: 80,
        protocol: Protocol::Http,
        domains: vec!["shipping-service".into(), "shipping-service.default".into()],
        addresses: vec!["10.96.0.10".into()],
        routes: vec![Route {
            name: "default/shipping-service#0".into(),
            matches: vec![RouteMatch { uri: Some(StringMatcher::Prefix("/".into())), ..Default::default() }],
            action: RouteAction::Forward { clusters: vec![weighted("v1", 90), weighted("v2", 10)], rewrite: None },
            timeout: Some(Duration::from_secs(3)),
            retries: Some(RetryPolicy {
                attempts: 2,
                per_try_timeout: None,
                retry_on: vec!["5xx".into()],
                backoff: None,
                allow_previous_hosts: false,
                remote_localities: false,
            }),
            fault: None,
            mirrors: Vec::new(),
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }],
        tcp: Vec::new(),
    }];
    config
}

#[test]
fn a_proxy_config_round_trips_through_json_unchanged() {
    let config = sample();
    let json = serde_json::to_string_pretty(&config).expect("serialize");
    let back: ProxyConfig = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, config);
    assert!(json.contains("\"timeout\": \"3s\""), "durations are Go-style text: {json}");
    assert!(json.contains(PROXY_CONFIG_SCHEMA));
}

#[test]
fn a_consistent_config_passes_its_own_check() {
    assert!(!sample().check().has_errors(), "{:?}", sample().check());
}

#[test]
fn a_route_to_a_missing_cluster_is_reported_at_its_path() {
    let mut config = sample();
    config.clusters.remove(1);
    let issues = config.check().into_vec();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path.to_string(), "outbound.virtualHosts[0].routes[0].action.clusters[1].cluster");
}

#[test]
fn all_zero_weights_and_a_foreign_schema_are_errors() {
    let mut config = sample();
    config.schema = "something/else".into();
    if let RouteAction::Forward { clusters, .. } = &mut config.outbound.virtual_hosts[0].routes[0].action {
        clusters.iter_mut().for_each(|c| c.weight = 0);
    }
    let paths: Vec<String> = config.check().iter().map(|i| i.path.to_string()).collect();
    assert_eq!(paths, ["schema", "outbound.virtualHosts[0].routes[0].action.clusters"]);
}

#[test]
fn unknown_fields_in_a_proxy_config_are_refused() {
    let mut json = serde_json::to_value(sample()).expect("serialize");
    json["surprise"] = serde_json::json!(true);
    let err = serde_json::from_value::<ProxyConfig>(json).expect_err("unknown field");
    assert!(err.to_string().contains("surprise"), "{err}");
}

#[test]
fn port_protocols_follow_istios_naming_rules() {
    assert_eq!(Protocol::for_port(Some("http"), None), Protocol::Http);
    assert_eq!(Protocol::for_port(Some("http-web"), None), Protocol::Http);
    assert_eq!(Protocol::for_port(Some("HTTP2-api"), None), Protocol::Http2);
    assert_eq!(Protocol::for_port(Some("grpc-web-ui"), None), Protocol::Grpc);
    assert_eq!(Protocol::for_port(Some("tcp-db"), None), Protocol::Tcp);
    assert_eq!(Protocol::for_port(Some("mysql"), None), Protocol::Tcp);
    assert_eq!(Protocol::for_port(Some("tls-passthrough"), None), Protocol::Tls);
    assert_eq!(Protocol::for_port(Some("web"), None), Protocol::Detect);
    assert_eq!(Protocol::for_port(Some("httpx"), None), Protocol::Detect);
    assert_eq!(Protocol::for_port(None, None), Protocol::Detect);
    assert_eq!(Protocol::for_port(Some("web"), Some("grpc")), Protocol::Grpc, "appProtocol wins");
    assert_eq!(Protocol::for_port(Some("http"), Some("kubernetes.io/h2c")), Protocol::Http2);
}

#[test]
fn a_retry_budget_percent_outside_0_to_100_is_refused_naming_the_field() {
    let mut config = sample();
    config.clusters[1].retry_budget = Some(RetryBudget { percent: 120.0, min_retry_concurrency: 3 });
    config.clusters[0].retry_budget = Some(RetryBudget { percent: 100.0, min_retry_concurrency: 0 });
    let issues = config.check().into_vec();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path.to_string(), "clusters[1].retryBudget.percent");
    assert!(issues[0].message.contains("120"), "{}", issues[0].message);
}

#[test]
fn a_cluster_retry_budget_round_trips_with_envoys_defaults() {
    let mut config = sample();
    config.clusters[0].retry_budget = Some(RetryBudget::default());
    let json = serde_json::to_string(&config).expect("serialize");
    assert!(json.contains(r#""retryBudget":{"percent":20.0,"minRetryConcurrency":3}"#), "{json}");
    assert_eq!(serde_json::from_str::<ProxyConfig>(&json).expect("parse"), config);
}
