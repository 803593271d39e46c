use std::path::Path;

use trellis_api::proxy_config::{InboundMtls, UpstreamTls};

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("addr")
}

#[test]
fn the_trellis_client_routes_every_host_to_one_meshed_endpoint_in_plain_text() {
    let inbound = addr("127.90.1.3:15006");
    let config = trellis_client_config(inbound, None).expect("valid config");
    let cluster = &config.clusters[0];
    assert_eq!(cluster.endpoints.len(), 1);
    assert!(cluster.endpoints[0].meshed, "meshed, so the proxies speak HTTP/2 to each other");
    assert_eq!(cluster.endpoints[0].address, inbound);
    assert_eq!(cluster.tls, UpstreamTls::Disable);
    assert_eq!(config.gateway_listeners[0].virtual_hosts[0].domains, vec!["*".to_owned()]);
    let server = trellis_server_config(false).expect("valid config");
    assert!(server.inbound.is_empty(), "no inbound listener: PERMISSIVE, plain text without a certificate");
}

#[test]
fn the_resilient_client_configures_every_resilience_feature_and_none_fires() {
    let config = trellis_resilient_client_config(addr("127.90.1.10:15006"), addr("127.90.0.1:8080")).expect("valid");
    let route = &config.gateway_listeners[0].virtual_hosts[0].routes[0];
    assert!(route.timeout.is_some() && route.retries.is_some());
    let fault = route.fault.as_ref().expect("a fault");
    assert_eq!(fault.delay.as_ref().map(|d| d.percentage), Some(0.0), "configured, never firing");
    assert_eq!(fault.abort.as_ref().map(|a| a.percentage), Some(0.0));
    assert_eq!(route.mirrors.len(), 1);
    assert_eq!(route.mirrors[0].percentage, 0.0);
    let cluster = &config.clusters[0];
    assert!(cluster.connection_pool.is_some() && cluster.outlier_detection.is_some());
    assert_eq!(config.clusters.len(), 2, "the mirror's cluster");
    let server = trellis_resilient_server_config().expect("valid");
    assert_eq!(server.inbound[0].rate_limits.len(), 1, "a rate limit the load never reaches");
    assert_eq!(server.inbound[0].rate_limits[0].max_tokens, 1_000_000);
}

#[test]
fn the_trellis_mtls_client_insists_on_mutual_tls_with_the_apps_identity() {
    let inbound = addr("127.90.1.6:15006");
    let app = "spiffe://cluster.local/ns/bench/sa/app";
    let config = trellis_client_config(inbound, Some(app)).expect("valid config");
    let cluster = &config.clusters[0];
    assert_eq!(cluster.tls, UpstreamTls::IstioMutual, "never falls back to plain text");
    assert_eq!(cluster.endpoints[0].identity, app);
    assert!(cluster.endpoints[0].meshed);
    assert_eq!(config.node.identity, "spiffe://cluster.local/ns/bench/sa/client");
}

#[test]
fn the_trellis_mtls_server_is_strict_on_every_port() {
    let config = trellis_server_config(true).expect("valid config");
    assert_eq!(config.inbound.len(), 1);
    assert_eq!(config.inbound[0].port, INBOUND_CATCH_ALL_PORT, "the catch-all listener covers the app's port");
    assert_eq!(config.inbound[0].mtls, InboundMtls::Strict);
    assert_eq!(config.node.identity, "spiffe://cluster.local/ns/bench/sa/app");
}

#[test]
fn the_haproxy_pair_speaks_h2_between_its_two_sides() {
    let (a, b, app) = (addr("127.0.0.2:8080"), addr("127.0.0.3:8080"), addr("127.0.0.4:8080"));
    let client = haproxy_client_config(a, b, 2, None);
    assert!(client.contains("bind 127.0.0.2:8080\n"), "{client}");
    assert!(client.contains("server server_side 127.0.0.3:8080 proto h2\n"), "{client}");
    assert!(client.contains("nbthread 2"), "{client}");
    assert!(!client.contains("ssl"), "{client}");
    let server = haproxy_server_config(b, app, 1, None);
    assert!(server.contains("bind 127.0.0.3:8080 proto h2\n"), "{server}");
    assert!(server.contains("server app 127.0.0.4:8080\n"), "{server}");
}

#[test]
fn the_haproxy_tls_pair_presents_and_verifies_certificates_on_both_sides() {
    let (a, b, app) = (addr("127.0.0.7:8080"), addr("127.0.0.8:8080"), addr("127.0.0.4:8080"));
    let roots = Path::new("/pki/roots.pem");
    let client_tls = HaproxyTls { roots, bundle: Path::new("/pki/client-bundle.pem") };
    let client = haproxy_client_config(a, b, 2, Some(client_tls));
    assert!(client.contains("bind 127.0.0.7:8080\n"), "plain HTTP/1.1 in from oha: {client}");
    assert!(
        client.contains(
            "server server_side 127.0.0.8:8080 proto h2 ssl crt /pki/client-bundle.pem ca-file /pki/roots.pem \
             verify required ssl-min-ver TLSv1.3 alpn h2\n"
        ),
        "{client}"
    );
    let server_tls = HaproxyTls { roots, bundle: Path::new("/pki/app-bundle.pem") };
    let server = haproxy_server_config(b, app, 2, Some(server_tls));
    assert!(
        server.contains(
            "bind 127.0.0.8:8080 proto h2 ssl crt /pki/app-bundle.pem ca-file /pki/roots.pem verify required \
             ssl-min-ver TLSv1.3 alpn h2\n"
        ),
        "{server}"
    );
    assert!(server.contains("server app 127.0.0.4:8080\n"), "plain HTTP/1.1 to the app: {server}");
}

#[test]
fn setups_are_named_by_their_slugs() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_slug(kind.slug()).expect("known"), kind);
    }
    let err = Kind::from_slug("envoy").expect_err("unknown").to_string();
    assert!(err.contains("\"envoy\"") && err.contains("trellis-mtls") && err.contains("trellis-resilient"), "{err}");
    let tls: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.is_tls()).collect();
    assert_eq!(tls, vec![Kind::TrellisMtls, Kind::HaproxyTls]);
}

#[test]
fn an_address_something_listens_on_is_reported_as_taken() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("addr");
    let err = ensure_free(addr).expect_err("taken");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    drop(listener);
    ensure_free(addr).expect("free once closed");
}
