//! Unit tests of the demo's pure parts: the plan and its local-mode YAML (translated by the real control
//! plane), the tutorial steps, the checks on made-up observations, and the report text.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_api::proxy_config::ProxyMode;
use trellis_api::push::ProxyStatus;
use trellis_controlplane::ca::{Identity, token_path};
use trellis_controlplane::index::load;
use trellis_controlplane::translate::cluster_name;
use trellis_controlplane::{Index, ProxyIdentity, translate};

use super::checks::{self, Answer, Dependency, Feature, Reply, Split, Verdict};
use super::issuer::Issuer;
use super::plan::{self, BOOKING, Plan, SHIPPING_V1, Subnet, WORKLOADS};
use super::report::{self, LiveStats};
use super::steps::{self, STEPS, Sync};

fn plan() -> Plan {
    Plan { subnet: plan::DEFAULT_SUBNET.parse().expect("default subnet"), gateway_port: 80 }
}

fn booking(shipping: &str) -> Reply {
    Reply {
        status: Some(200),
        service: Some("booking".into()),
        version: Some("v1".into()),
        inventory: Some(Dependency { status: Some(200), version: Some("v1".into()), proxy_error: None }),
        shipping: Some(Dependency { status: Some(200), version: Some(shipping.into()), proxy_error: None }),
        ..Reply::default()
    }
}

fn bookings(v1: usize, v2: usize) -> Vec<Reply> {
    std::iter::repeat_n(booking("v1"), v1).chain(std::iter::repeat_n(booking("v2"), v2)).collect()
}

fn unanswered(error: &str) -> Reply {
    Reply { error: Some(error.into()), ..Reply::default() }
}

fn from_proxy(status: u16, reason: &str) -> Reply {
    Reply { status: Some(status), trellis_error: Some(reason.into()), ..Reply::default() }
}

/// The demo's workloads and the tutorial, indexed as trellisd indexes its folder.
fn mesh_index() -> Index {
    let mut index = Index::new();
    let mut texts = vec![("00-local-workloads.yaml".to_owned(), plan().local_workloads_yaml())];
    texts.extend(STEPS.iter().map(|s| (s.file.to_owned(), s.embedded.to_owned())));
    for (name, text) in texts {
        let loaded = load::yaml(&name, &text);
        assert!(loaded.problems.is_empty(), "{name}: {:?}", loaded.problems);
        index.apply_all(loaded.changes);
    }
    index
}

fn identity_of(workload: &plan::Workload) -> ProxyIdentity {
    ProxyIdentity {
        id: Plan::proxy_id(workload),
        mode: ProxyMode::Sidecar,
        namespace: plan::NAMESPACE.into(),
        service_account: workload.service_account.into(),
        labels: [("app", workload.service), ("version", workload.version)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        addresses: vec![IpAddr::V4(plan().ip(workload))],
    }
}

#[test]
fn the_default_subnet_gives_each_process_its_own_loopback_address() {
    let plan = plan();
    assert_eq!(plan.ip(&BOOKING), Ipv4Addr::new(127, 0, 1, 1));
    assert_eq!(plan.gateway_ip(), Ipv4Addr::new(127, 0, 1, 10));
    assert_eq!(plan.trellisd_addr(), SocketAddr::from(([127, 0, 1, 100], 15012)));
    let mut ips: Vec<Ipv4Addr> = WORKLOADS.iter().map(|w| plan.ip(w)).collect();
    ips.extend(plan::SERVICES.iter().map(|s| plan.subnet.ip(s.virtual_host)));
    ips.push(plan.gateway_ip());
    ips.push(Ipv4Addr::new(127, 0, 1, 100));
    let count = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), count, "no two processes share an address");
    let mut addrs: Vec<SocketAddr> = plan.listen_addrs().into_iter().map(|(_, a)| a).collect();
    let count = addrs.len();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), count, "no two listeners collide");
}

#[test]
fn a_subnet_is_a_loopback_slash_24_away_from_127_0_0() {
    let parsed: Subnet = "127.42.7.0/24".parse().expect("valid");
    assert_eq!(parsed.ip(5), Ipv4Addr::new(127, 42, 7, 5));
    assert_eq!("127.42.7".parse::<Subnet>(), Ok(parsed));
    assert_eq!(parsed.to_string(), "127.42.7.0/24");
    for (bad, why) in [
        ("10.0.1.0/24", "not in 127.0.0.0/8"),
        ("127.0.0.0/24", "127.0.0.0/24"),
        ("127.0.1.5", "last octet"),
        ("127.0.300", "not an address"),
        ("localhost", "not an address"),
    ] {
        let error = bad.parse::<Subnet>().expect_err(bad);
        assert!(error.contains(bad) && error.contains(why), "{bad}: {error}");
    }
}

#[test]
fn each_sidecar_stands_in_front_of_its_app_and_booking_calls_through_its_explicit_proxy() {
    let plan = plan();
    let ca_dir = Plan::ca_dir(std::path::Path::new("/tmp/mesh"));
    let sidecar = plan.sidecar(&BOOKING, &ca_dir);
    let flag = |name: &str| {
        let at = sidecar.args.iter().position(|a| a == name).unwrap_or_else(|| panic!("no {name}"));
        sidecar.args[at + 1].clone()
    };
    assert_eq!(sidecar.args[0], "sidecar");
    assert_eq!(flag("--inbound-target"), "127.0.1.1:8080");
    assert_eq!(flag("--explicit-proxy-addr"), "127.0.1.1:15080");
    assert_eq!(flag("--listen-ip"), "127.0.1.1");
    assert_eq!(flag("--instance-ip"), "127.0.1.1");
    assert_eq!(flag("--admin-addr"), "127.0.1.1:15000");
    assert_eq!(flag("--discovery-address"), "127.0.1.100:15012");
    assert_eq!(flag("--discovery-ca"), "/tmp/mesh/.trellis-ca/root-cert.pem", "config and certificates over TLS");
    assert_eq!(flag("--node-id"), "booking-v1.default");
    assert_eq!(flag("--labels"), "app=booking-service,version=v1");
    assert_eq!(flag("--ca-token-file"), "/tmp/mesh/.trellis-ca/tokens/default.booking.token");
    let app = plan.app(&BOOKING);
    assert_eq!(app.env, [("HTTP_PROXY".to_owned(), "http://127.0.1.1:15080".to_owned())]);
    assert!(app.args.windows(2).any(|w| w == ["--listen", "127.0.1.1:8080"]));
    assert!(plan.app(&SHIPPING_V1).env.is_empty(), "only booking calls other services");
    let gateway = plan.gateway(&ca_dir);
    assert_eq!(gateway.args[0], "gateway");
    assert!(gateway.args.windows(2).any(|w| w
        == ["--ca-token-file", "/tmp/mesh/.trellis-ca/tokens/istio-system.trellis-ingressgateway.token"]));
    assert!(gateway.args.windows(2).any(|w| w == ["--labels", "istio=ingressgateway"]));
    assert!(gateway.args.windows(2).any(|w| w == ["--namespace", "istio-system"]));
    assert_eq!(plan.proxy_ids().last().map(String::as_str), Some(plan::GATEWAY_ID));
}

#[test]
fn every_proxy_gets_a_token_of_its_own_identity_and_one_identity_is_minted_once() {
    let plan = plan();
    let ca_dir = Plan::ca_dir(std::path::Path::new("/m"));
    let identities = Plan::identities();
    let names: Vec<String> = identities.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        ["default/inventory", "default/shipping", "default/booking", "istio-system/trellis-ingressgateway"],
        "the two shipping versions share one service account"
    );
    for identity in &identities {
        let checked = Identity::new(&identity.namespace, &identity.service_account).expect("Kubernetes names");
        assert_eq!(&checked, identity);
    }
    let mut launches: Vec<(Identity, plan::Launch)> =
        WORKLOADS.iter().map(|w| (Plan::identity(w), plan.sidecar(w, &ca_dir))).collect();
    launches.push((Plan::gateway_identity(), plan.gateway(&ca_dir)));
    for (identity, launch) in launches {
        let at = launch.args.iter().position(|a| a == "--ca-token-file").expect("a token file");
        assert_eq!(launch.args[at + 1], token_path(&ca_dir, &identity).display().to_string(), "{}", launch.name);
        assert!(launch.args.windows(2).any(|w| w == ["--service-account", identity.service_account.as_str()]));
        assert!(launch.args.windows(2).any(|w| w == ["--namespace", identity.namespace.as_str()]));
    }
}

#[test]
fn the_generated_workloads_send_the_mesh_through_each_sidecars_inbound_listener() {
    let index = mesh_index();
    let booking = translate(&index, &identity_of(&BOOKING));
    assert!(booking.skipped.is_empty(), "{:?}", booking.skipped);
    let host = "shipping-service.default.svc.cluster.local";
    for (subset, ip) in [("v1", [127, 0, 1, 3]), ("v2", [127, 0, 1, 4])] {
        let name = cluster_name(80, subset, host);
        let cluster = booking.config.clusters.iter().find(|c| c.name == name).expect("shipping subset cluster");
        let addresses: Vec<SocketAddr> = cluster.endpoints.iter().map(|e| e.address).collect();
        assert_eq!(addresses, [SocketAddr::from((ip, plan::INBOUND_PORT))], "{name}");
    }
    let vhost = booking.config.outbound.virtual_hosts.iter().find(|v| v.name == host).expect("shipping's host");
    assert_eq!(vhost.addresses, ["127.0.1.203"], "a virtual address, so the explicit proxy never asks DNS");
    let shipping = translate(&index, &identity_of(&SHIPPING_V1));
    let ports: Vec<u16> = shipping.config.inbound.iter().map(|l| l.port).filter(|p| *p != 0).collect();
    assert_eq!(
        ports,
        [plan::INBOUND_PORT],
        "the inbound listener's port is the one the mesh calls (0: STRICT's catch-all)"
    );
    assert_eq!(shipping.config.node.identity, "spiffe://cluster.local/ns/default/sa/shipping");
}

#[test]
fn the_gateway_port_moves_only_in_gateway_documents() {
    let text = STEPS[steps::GATEWAY_STEP].embedded;
    let adapted = steps::with_gateway_port(text, 80, 8080).expect("the tutorial's Gateway listens on 80");
    assert!(adapted.contains("        number: 8080\n        name: http\n"), "{adapted}");
    assert!(!adapted.contains("number: 80\n"));
    let virtual_service = &adapted[adapted.find("kind: VirtualService").expect("VirtualService")..];
    let original = &text[text.find("kind: VirtualService").expect("VirtualService")..];
    assert_eq!(virtual_service, original, "the VirtualService's destination port stays");
    assert_eq!(adapted.len(), text.len() + 2);
    assert_eq!(steps::with_gateway_port(STEPS[2].embedded, 80, 8080), None, "no Gateway in step 03");
}

#[test]
fn every_tutorial_step_is_built_in_and_can_be_read_from_a_folder() {
    assert_eq!(STEPS.map(|s| &s.file[..2]), ["01", "02", "03", "04", "05", "06"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(STEPS[0].file), "kind: Changed\n").expect("write");
    assert_eq!(STEPS[0].text(Some(dir.path())).expect("readable"), "kind: Changed\n");
    let missing = STEPS[1].text(Some(dir.path())).expect_err("missing file");
    assert!(missing.contains("--tutorial") && missing.contains("02-booking-gateway.yaml"), "{missing}");
    assert!(STEPS[2].text(None).expect("built in").contains("weight: 90"));
}

fn status(id: &str, sent: &str, acked: Option<&str>, error: Option<&str>) -> ProxyStatus {
    ProxyStatus {
        id: id.into(),
        namespace: "default".into(),
        mode: ProxyMode::Sidecar,
        proxy_version: "test".into(),
        address: "127.0.0.1:1".into(),
        connected_at: 0,
        sent_version: sent.into(),
        acked_version: acked.map(str::to_owned),
        in_sync: acked == Some(sent),
        last_error: error.map(str::to_owned),
        sent_messages: 1,
        sent_bytes: 1,
    }
}

#[test]
fn the_proxies_are_in_sync_when_every_one_acknowledged_and_changes_are_named() {
    let expected = vec!["a.default".to_owned(), "b.default".to_owned()];
    let before: BTreeMap<String, String> = [("a.default".into(), "3".into()), ("b.default".into(), "3".into())].into();
    let missing = steps::sync_state(&expected, &[status("a.default", "3", Some("3"), None)], &before);
    assert!(matches!(missing, Sync::Waiting(ref why) if why.contains("b.default is not connected")), "{missing:?}");
    let behind = [status("a.default", "4", Some("3"), None), status("b.default", "3", Some("3"), None)];
    assert!(matches!(steps::sync_state(&expected, &behind, &before), Sync::Waiting(_)));
    let refused =
        [status("a.default", "4", Some("3"), Some("unknown cluster")), status("b.default", "3", Some("3"), None)];
    let state = steps::sync_state(&expected, &refused, &before);
    assert!(matches!(state, Sync::Refused(ref e) if e.contains("a.default") && e.contains("unknown cluster")));
    let synced = [status("a.default", "4", Some("4"), None), status("b.default", "3", Some("3"), None)];
    assert_eq!(steps::sync_state(&expected, &synced, &before), Sync::Synced { changed: vec!["a.default".into()] });
}

#[test]
fn a_booking_answer_is_read_from_its_headers_and_body() {
    let body = r#"{"service":"booking","version":"v1",
        "inventory":{"status":null,"proxyError":"circuit breaker open"},
        "shipping":{"status":200,"version":"v2"}}"#;
    let answer = Answer {
        status: 503,
        headers: [("x-ordering-service".to_owned(), "booking".to_owned()), ("x-ordering-version".into(), "v1".into())]
            .into(),
        body: body.as_bytes().to_vec(),
    };
    let reply = Reply::from_answer(&answer);
    assert!(!reply.booked());
    assert_eq!(reply.inventory.as_ref().and_then(|i| i.proxy_error.as_deref()), Some("circuit breaker open"));
    assert_eq!(reply.describe(), "503 from booking v1 (inventory: proxy said circuit breaker open, shipping v2)");
    assert_eq!(booking("v2").shipping_version(), Some("v2"));
    assert_eq!(from_proxy(404, "no route").describe(), "404 from the proxy (no route)");
    assert_eq!(Reply::from_result(Err("connection refused".into())).describe(), "no answer (connection refused)");
}

#[test]
fn the_route_check_wants_every_booking_through_the_gateway_and_a_404_for_other_paths() {
    let url = "http://127.0.1.10/api/v1/booking";
    let other = "http://127.0.1.10/api/v1/unknown";
    let passed = checks::route(url, &bookings(3, 1), other, &from_proxy(404, "no route"), Split::of(&bookings(3, 1)));
    assert_eq!(passed.verdict, Verdict::Pass, "{passed:?}");
    assert!(passed.summary.contains("-> 200 from booking v1") && passed.summary.contains("4 of 4"), "{passed:?}");
    assert!(passed.details.iter().any(|d| d.contains("shipping answered v1 75.0%, v2 25.0%")), "{passed:?}");
    let mut some_failed = bookings(3, 0);
    some_failed.push(unanswered("connection refused"));
    let failed = checks::route(url, &some_failed, other, &from_proxy(404, "no route"), Split::default());
    assert_eq!(failed.verdict, Verdict::Fail);
    assert!(failed.summary.contains("no answer (connection refused)"), "{failed:?}");
    let app_404 = Reply { status: Some(404), service: Some("booking".into()), ..Reply::default() };
    assert_eq!(checks::route(url, &bookings(1, 0), other, &app_404, Split::default()).verdict, Verdict::Fail);
    assert_eq!(checks::route(url, &[], other, &from_proxy(404, "x"), Split::default()).verdict, Verdict::Fail);
}

#[test]
fn the_split_check_accepts_ninety_ten_within_its_tolerance_and_nothing_else() {
    assert_eq!(checks::split(&bookings(450, 50)).verdict, Verdict::Pass);
    assert_eq!(checks::split(&bookings(460, 40)).verdict, Verdict::Pass, "8% is within 4 sigmas of 10% over 500");
    assert_eq!(checks::split(&bookings(250, 250)).verdict, Verdict::Fail, "an even split is not 90/10");
    assert_eq!(checks::split(&bookings(500, 0)).verdict, Verdict::Fail, "no v2 at all");
    let mut with_error = bookings(450, 50);
    with_error.push(from_proxy(503, "no healthy upstream"));
    let failed = checks::split(&with_error);
    assert_eq!(failed.verdict, Verdict::Fail);
    assert!(failed.summary.contains("1 failed") && failed.details[0].contains("no healthy upstream"), "{failed:?}");
    assert_eq!(checks::split(&[]).verdict, Verdict::Fail);
    let summary = checks::split(&bookings(451, 49)).summary;
    assert!(summary.starts_with("shipping v1 90.2%, v2 9.8% of 500 bookings"), "{summary}");
}

#[test]
fn the_split_tolerance_shrinks_with_more_requests_but_never_below_its_floor() {
    let small = checks::split_tolerance(100, 10.0);
    let large = checks::split_tolerance(500, 10.0);
    assert!((small - 12.0).abs() < 0.01, "{small}");
    assert!((large - 5.37).abs() < 0.01, "{large}");
    assert_eq!(checks::split_tolerance(1_000_000, 10.0), checks::MIN_SPLIT_TOLERANCE);
    assert_eq!(checks::split_tolerance(0, 10.0), 100.0);
}

/// A booking whose inventory call booking's sidecar rejected with its overflow answer.
fn rejected_booking() -> Reply {
    let mut rejected = booking("v1");
    rejected.status = Some(503);
    rejected.inventory = Some(Dependency {
        status: Some(503),
        proxy_error: Some("upstream overflow: circuit breaker open".into()),
        ..Default::default()
    });
    rejected
}

/// A booking whose inventory call answered 503 itself.
fn failing_booking() -> Reply {
    let mut failing = booking("v1");
    failing.status = Some(503);
    failing.inventory = Some(Dependency { status: Some(503), ..Default::default() });
    failing
}

fn ejected(ejected: bool) -> checks::Ejection {
    checks::Ejection {
        cluster: "outbound|80||inventory-service.default.svc.cluster.local".into(),
        endpoint: "127.0.1.12:8080".into(),
        ejected,
        ejected_for_ms: Some(179_400),
    }
}

#[test]
fn circuit_breaking_passes_on_overflow_rejected_by_the_sidecar_and_an_ejected_inventory() {
    assert!(Feature::CircuitBreaking.enforced());
    let mut overflow = bookings(2, 0);
    overflow.extend(std::iter::repeat_n(rejected_booking(), 8));
    let check = checks::circuit_breaking(&overflow, &failing_booking(), Some(&ejected(true)));
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(check.summary.contains("2 booked, 8 rejected by booking's sidecar (upstream overflow"), "{check:?}");
    assert!(check.summary.ends_with("booking's sidecar ejected 127.0.1.12:8080 for 180 s"), "{check:?}");

    let nothing_rejected = checks::circuit_breaking(&bookings(10, 0), &failing_booking(), Some(&ejected(true)));
    assert_eq!(nothing_rejected.verdict, Verdict::Fail);
    let mut other_errors = bookings(2, 0);
    let mut refused = rejected_booking();
    refused.inventory = Some(Dependency { proxy_error: Some("upstream connect error".into()), ..Default::default() });
    other_errors.push(refused);
    let not_overflow = checks::circuit_breaking(&other_errors, &failing_booking(), Some(&ejected(true)));
    assert_eq!(not_overflow.verdict, Verdict::Fail, "a failed connection is not the breaker: {not_overflow:?}");
    let not_ejected = checks::circuit_breaking(&overflow, &failing_booking(), None);
    assert_eq!(not_ejected.verdict, Verdict::Fail);
    assert!(not_ejected.summary.ends_with("ejected no inventory endpoint"), "{not_ejected:?}");
    let unenforced = checks::circuit_breaking(&overflow, &failing_booking(), Some(&ejected(false)));
    assert_eq!(unenforced.verdict, Verdict::Fail);
}

#[test]
fn the_ejected_endpoint_is_read_from_the_callers_config_dump() {
    let dump = serde_json::json!({"clusterState": [
        {"name": "outbound|80||shipping-service.default.svc.cluster.local", "endpoints": [
            {"address": "127.0.1.13:8080", "ejected": true, "outlier": {"ejectedForMs": 5}}]},
        {"name": "outbound|80||inventory-service.default.svc.cluster.local", "endpoints": [
            {"address": "127.0.1.11:8080", "ejected": false, "outlier": {"ejections": 0}},
            {"address": "127.0.1.12:8080", "ejected": true, "outlier": {"ejections": 1, "ejectedForMs": 179400}}]},
    ]});
    assert_eq!(checks::ejection(&dump, "inventory-service"), Some(ejected(true)));
    assert_eq!(checks::ejection(&dump, "order-service"), None);
    assert_eq!(checks::ejection(&serde_json::json!({"config": {}}), "inventory-service"), None);
}

fn certificate(sa: &str) -> Option<checks::Certificate> {
    Some(checks::Certificate {
        spiffe_id: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
        serial: "0a:1b".to_owned(),
    })
}

#[test]
fn strict_mtls_passes_only_when_plain_text_gets_no_answer_the_mesh_books_and_every_proxy_holds_a_certificate() {
    let verdict = |check: checks::Check| check.verdict;
    let ids = [("booking-v1 sidecar".to_owned(), certificate("booking")), ("gateway".to_owned(), certificate("gw"))];
    let refused = unanswered("connection closed before message completed");
    let pass = checks::mtls("shipping-v1 sidecar", &refused, &booking("v1"), &ids);
    assert_eq!(pass.verdict, Verdict::Pass, "{pass:?}");
    assert!(pass.summary.contains("refused, no answer (connection closed"), "{pass:?}");
    assert_eq!(pass.details[0], "booking-v1 sidecar: spiffe://cluster.local/ns/default/sa/booking (serial 0a:1b)");
    let app = Reply { status: Some(200), service: Some("shipping".into()), ..Reply::default() };
    assert_eq!(verdict(checks::mtls("s", &app, &booking("v1"), &ids)), Verdict::Fail, "plain text reached the app");
    let proxy_answer = from_proxy(503, "upstream connect error");
    assert_eq!(
        verdict(checks::mtls("s", &proxy_answer, &booking("v1"), &ids)),
        Verdict::Fail,
        "an answer is no refusal"
    );
    assert_eq!(verdict(checks::mtls("s", &refused, &unanswered("reset"), &ids)), Verdict::Fail, "the mesh broke too");
    let without = [("booking-v1 sidecar".to_owned(), certificate("booking")), ("gateway".to_owned(), None)];
    let missing = checks::mtls("s", &refused, &booking("v1"), &without);
    assert_eq!(missing.verdict, Verdict::Fail);
    assert!(missing.summary.ends_with("; no certificate: gateway"), "{missing:?}");
    assert_eq!(verdict(checks::mtls("s", &refused, &booking("v1"), &[])), Verdict::Fail, "no proxy was asked");
}

#[test]
fn the_jwt_check_wants_403_without_a_token_401_with_a_malformed_one_and_a_booking_with_a_valid_one() {
    let denied_answer = Answer { status: 403, headers: BTreeMap::new(), body: b"RBAC: access denied".to_vec() };
    let denied = Reply::from_answer(&denied_answer);
    assert_eq!(denied.describe(), "403 \"RBAC: access denied\" (not from the ordering app)");
    let unauthenticated = from_proxy(401, "Jwt verification fails");
    let about = vec!["the valid token: the demo's".to_owned()];
    let pass = checks::jwt(&denied, &unauthenticated, &booking("v1"), about.clone());
    assert_eq!(pass.verdict, Verdict::Pass, "{pass:?}");
    assert_eq!(pass.details, about);
    let verdict =
        |without: &Reply, malformed: &Reply, valid: &Reply| checks::jwt(without, malformed, valid, vec![]).verdict;
    assert_eq!(verdict(&denied, &unauthenticated, &denied), Verdict::Fail, "a valid token must book");
    assert_eq!(verdict(&booking("v1"), &unauthenticated, &booking("v1")), Verdict::Fail, "no token must be denied");
    assert_eq!(verdict(&denied, &denied, &booking("v1")), Verdict::Fail, "a malformed token is a 401");
    let other_403 = from_proxy(403, "forbidden");
    assert_eq!(verdict(&other_403, &unauthenticated, &booking("v1")), Verdict::Fail, "403 from authorization only");
}

#[test]
fn step_06_fetches_its_keys_from_the_demo_and_nothing_else_changes() {
    let text = STEPS[steps::JWT_STEP].embedded;
    assert_eq!(STEPS[steps::JWT_STEP].file, "06-require-jwt.yaml");
    let uri = "http://127.0.1.101:8080/jwks.json";
    let adapted = steps::with_jwks_uri(text, uri).expect("the step names a jwksUri");
    assert!(adapted.contains(&format!("      jwksUri: {uri}\n")), "{adapted}");
    assert!(!adapted.contains("githubusercontent"), "{adapted}");
    let lines = |t: &str| t.lines().filter(|l| !l.contains("jwksUri")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(lines(&adapted), lines(text), "every other line is kept");
    let inline = "kind: RequestAuthentication\nspec:\n  jwtRules:\n    - jwksUri: https://a/keys\n      issuer: x\n";
    assert_eq!(steps::with_jwks_uri(inline, uri).as_deref(), Some(&*inline.replace("https://a/keys", uri)));
    let elsewhere = "kind: ConfigMap\ndata:\n  jwksUri: https://a/keys\n---\nkind: RequestAuthentication\n";
    assert_eq!(steps::with_jwks_uri(elsewhere, uri), None, "only RequestAuthentications change");
    let index = {
        let mut index = Index::new();
        for (name, t) in
            [("00.yaml".to_owned(), plan().local_workloads_yaml()), ("06.yaml".to_owned(), adapted.clone())]
        {
            let loaded = load::yaml(&name, &t);
            assert!(loaded.problems.is_empty(), "{name}: {:?}", loaded.problems);
            index.apply_all(loaded.changes);
        }
        index
    };
    let booking = translate(&index, &identity_of(&BOOKING));
    let mut providers: Vec<_> = booking.config.inbound.iter().flat_map(|l| l.jwt.clone()).collect();
    assert!(!providers.is_empty() && providers.iter().all(|p| p.jwks_uri.as_deref() == Some(uri)), "{providers:?}");
    // What trellisd pushes once it fetched the key set: the demo's token then names the principal the
    // tutorial's AuthorizationPolicy allows.
    let issuer = Issuer::generate().expect("a key");
    for provider in &mut providers {
        provider.jwks = Some(issuer.jwks().expect("a key set"));
    }
    let authenticator = trellis_proxy::jwt::JwtAuthenticator::compile(&providers).expect("compiles");
    let token = issuer.token(std::time::SystemTime::now()).expect("a token");
    let verified = authenticator
        .authenticate(
            &http::Request::get("/api/v1/booking")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .expect("a request")
                .into_parts()
                .0,
        )
        .expect("verifies")
        .expect("found");
    assert_eq!(verified.principal.as_deref(), Some("testing@secure.istio.io/testing@secure.istio.io"));
}

#[test]
fn the_metrics_check_reads_the_sidecars_request_counters_per_cluster() {
    let host = "shipping-service.default.svc.cluster.local";
    let (v1, v2) = (cluster_name(80, "v1", host), cluster_name(80, "v2", host));
    let text = format!(
        "# TYPE trellis_requests_total counter\n\
         trellis_requests_total{{direction=\"Outbound\",cluster=\"{v1}\",code_class=\"2xx\"}} 440\n\
         trellis_requests_total{{direction=\"Outbound\",cluster=\"{v1}\",code_class=\"5xx\"}} 10\n\
         trellis_requests_total{{direction=\"Outbound\",cluster=\"{v2}\",code_class=\"2xx\"}} 50\n\
         trellis_requests_total_other{{cluster=\"{v2}\"}} 7\n"
    );
    assert_eq!(checks::counter_sum(&text, checks::REQUESTS_METRIC, "cluster", &v1), 450.0);
    let answer = Ok(Answer { status: 200, headers: BTreeMap::new(), body: text.into_bytes() });
    let clusters = [("shipping v1", v1.clone()), ("shipping v2", v2.clone())];
    let url = "http://127.0.1.1:15090/stats/prometheus";
    let check = checks::metrics(url, &answer, &clusters, 500);
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(check.summary.contains("counted requests 450 to shipping v1 and 50 to shipping v2"), "{check:?}");
    assert_eq!(checks::metrics(url, &answer, &clusters, 501).verdict, Verdict::Fail, "fewer than sent");
    assert_eq!(checks::metrics(url, &Err("connection refused".into()), &clusters, 1).verdict, Verdict::Fail);
    let escaped = "trellis_requests_total{cluster=\"a\\\"b\",x=\"y\"} 2\n";
    assert_eq!(checks::counter_sum(escaped, checks::REQUESTS_METRIC, "cluster", "a\"b"), 2.0);
}

#[test]
fn a_config_dump_tells_the_hosts_a_proxy_knows_and_certs_its_certificate() {
    let dump = serde_json::json!({"config": {"node": {"identity": "spiffe://cluster.local/ns/default/sa/booking"},
        "outbound": {"virtualHosts": [{"name": "order-service.default.svc.cluster.local"}]}}});
    assert!(checks::knows_host(&dump, "order-service.default.svc.cluster.local"));
    assert!(!checks::knows_host(&dump, "other.default.svc.cluster.local"));
    assert!(!checks::knows_host(&serde_json::Value::Null, "order-service.default.svc.cluster.local"));
    let certs = serde_json::json!({"spiffeId": "spiffe://cluster.local/ns/default/sa/booking", "serial": "0a"});
    assert_eq!(
        checks::certificate(&certs),
        certificate("booking").map(|c| checks::Certificate { serial: "0a".into(), ..c })
    );
    assert_eq!(checks::certificate(&serde_json::json!({"spiffeId": null, "error": "no certificate yet"})), None);
    assert_eq!(checks::certificate(&serde_json::Value::Null), None);
    let known = [("a".to_owned(), true), ("b".to_owned(), false)];
    let check = checks::discovery("order-service.default.svc.cluster.local", &known);
    assert_eq!(check.verdict, Verdict::Fail);
    assert!(check.summary.contains("missing from the config of b"), "{check:?}");
}

#[test]
fn the_report_counts_passed_failed_and_skipped_checks() {
    let checks = vec![
        checks::split(&bookings(450, 50)),
        checks::split(&bookings(250, 250)),
        checks::Check { verdict: Verdict::Skip, ..checks::split(&bookings(450, 50)) },
    ];
    let text = report::report(&checks);
    assert!(text.contains("  PASS  split "), "{text}");
    assert!(text.contains("  FAIL  split "), "{text}");
    assert!(text.contains("  SKIP  split "), "{text}");
    assert!(text.ends_with("3 checks: 1 passed, 1 failed, 1 skipped (not enforced yet)"), "{text}");
    assert!(!report::all_passed(&checks));
    assert!(report::all_passed(&checks[2..]), "a skipped check does not fail the run");
    assert_eq!(report::progress(std::time::Duration::from_millis(1234), "hello"), "[  1.2s] hello");
    let try_it = report::try_it(&plan(), "/tmp/mesh", "/tmp/booking.jwt");
    let with_token = "\n  curl -H \"authorization: Bearer $(cat /tmp/booking.jwt)\" http://127.0.1.10/api/v1/booking  ";
    assert!(try_it.contains(with_token), "{try_it}");
    assert!(try_it.contains("\n  curl http://127.0.1.10/api/v1/booking  "), "{try_it}");
    assert!(try_it.contains("trellis proxy-status --control-plane 127.0.1.100:15012"), "{try_it}");
}

#[test]
fn the_live_line_shows_the_last_seconds_rate_the_windows_split_and_all_errors() {
    let mut stats = LiveStats::default();
    assert_eq!(stats.line(), "live: 0 req/s | shipping - (last 0 s) | errors 0 of 0 | Ctrl-C stops");
    for reply in bookings(9, 1) {
        stats.record(&reply);
    }
    stats.record(&unanswered("timeout"));
    stats.rotate();
    assert_eq!(stats.line(), "live: 11 req/s | shipping v1 90% v2 10% (last 1 s) | errors 1 of 11 | Ctrl-C stops");
    for _ in 0..report::LIVE_WINDOW_SECONDS {
        stats.record(&booking("v2"));
        stats.rotate();
    }
    assert_eq!(stats.line(), "live: 1 req/s | shipping v1 0% v2 100% (last 10 s) | errors 1 of 21 | Ctrl-C stops");
}

#[test]
fn the_gateway_url_leaves_out_port_80() {
    let mut plan = plan();
    assert_eq!(plan.gateway_url("/api/v1/booking"), "http://127.0.1.10/api/v1/booking");
    plan.gateway_port = 8080;
    assert_eq!(plan.gateway_url("/api/v1/booking"), "http://127.0.1.10:8080/api/v1/booking");
    assert_eq!(plan.metrics_url(&BOOKING), "http://127.0.1.1:15090/stats/prometheus");
}

#[test]
fn binaries_are_looked_up_in_order_and_a_missing_one_is_named_with_how_to_build_it() {
    use super::procs::Binaries;
    let (first, second) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    std::fs::write(second.path().join("trellisd"), "").expect("write");
    let dirs = [first.path().to_owned(), second.path().to_owned()];
    assert_eq!(crate::binaries::locate("trellisd", &dirs), Some(second.path().join("trellisd")));
    std::fs::write(first.path().join("trellisd"), "").expect("write");
    assert_eq!(
        crate::binaries::locate("trellisd", &dirs),
        Some(first.path().join("trellisd")),
        "the first folder wins"
    );
    assert_eq!(crate::binaries::locate("trellis-proxy", &dirs), None);
    let joined = std::env::join_paths([first.path(), second.path()]).expect("join");
    assert_eq!(crate::binaries::path_dirs(Some(&joined)), dirs);
    assert!(crate::binaries::path_dirs(None).is_empty());
    let error = Binaries::find(Some(first.path())).expect_err("trellis-proxy is missing").to_string();
    assert!(error.contains("cannot find trellis-proxy, trellis-ordering"), "{error}");
    assert!(error.contains("cargo build --release -p trellis-proxy -p trellis-ordering"), "{error}");
}
