use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use trellis_controlplane::ca::{CaService, DEFAULT_WORKLOAD_CERT_TTL, Identity, mint_token};
use trellis_controlplane::push::tls::{ServingNames, ServingTls};
use trellis_controlplane::push::{self, FnSource, PushServer};

use super::*;
use crate::drain::Drain;

/// How long a test waits for a certificate that should come.
const WAIT: Duration = Duration::from_secs(10);

/// trellisd's push server with a local-mode CA in `dir`, on a loopback port.
async fn trellisd(dir: &Path) -> (SocketAddr, PushServer) {
    serve(dir, false).await
}

/// [`trellisd`] with TLS on its port, its certificate issued by its own CA.
async fn trellisd_tls(dir: &Path) -> (SocketAddr, PushServer) {
    serve(dir, true).await
}

async fn serve(dir: &Path, tls: bool) -> (SocketAddr, PushServer) {
    let ca = Arc::new(CaService::local(dir, "cluster.local", DEFAULT_WORKLOAD_CERT_TTL).expect("a CA"));
    let tls = tls.then(|| {
        let names = ServingNames::for_namespace("trellis-system", "127.0.0.1".parse().expect("an IP"), &[]);
        Arc::new(ServingTls::new(ca.clone(), "trellis-system", names).expect("a serving certificate"))
    });
    let (_generations, receiver) = watch::channel(0);
    let source = FnSource::new(receiver, |_: &trellis_api::push::Hello| Err("no configs here".to_owned()));
    let options = push::Options { ca: Some(ca), tls, ..push::Options::default() };
    let server = PushServer::new(Arc::new(source), options);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (addr, server)
}

fn shop_inventory() -> Identity {
    Identity::new("shop", "inventory").expect("valid names")
}

fn serial(identity: &WorkloadIdentity) -> String {
    x509_parser::parse_x509_certificate(identity.chain[0].as_ref()).expect("X.509").1.raw_serial_as_string()
}

/// Waits for the next identity published on `watch` that satisfies `check`.
async fn next(
    watch: &mut IdentityWatch,
    check: impl Fn(&Option<Arc<WorkloadIdentity>>) -> bool,
) -> Option<Arc<WorkloadIdentity>> {
    tokio::time::timeout(WAIT, watch.wait_for(|current| check(current)))
        .await
        .expect("published in time")
        .expect("the source is alive")
        .clone()
}

/// A test CA's key and a certificate it issued for `spiffe_id`, as PEM (chain, key, roots).
fn issue_files(spiffe_id: &str) -> (String, String, String) {
    let root_key = rcgen::KeyPair::generate().expect("a key");
    let mut root = rcgen::CertificateParams::default();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).expect("a root");
    let issuer = rcgen::Issuer::new(root, root_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut leaf = rcgen::CertificateParams::default();
    leaf.subject_alt_names.push(rcgen::SanType::URI(spiffe_id.try_into().expect("IA5")));
    let cert = leaf.signed_by(&key, &issuer).expect("a leaf");
    (cert.pem(), key.serialize_pem(), root_cert.pem())
}

#[test]
fn renewal_comes_at_half_life_a_little_early_and_never_in_the_past() {
    let (chain, key, roots) = issue_files("spiffe://cluster.local/ns/shop/sa/inventory");
    let mut identity = WorkloadIdentity::from_pem(chain.as_bytes(), key.as_bytes(), roots.as_bytes()).expect("valid");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    identity.not_before = start;
    identity.not_after = start + Duration::from_secs(24 * 3600);
    assert_eq!(renewal_delay(&identity, start, 0.0), Duration::from_secs(12 * 3600));
    let earliest = Duration::from_secs(12 * 3600) - Duration::from_secs(24 * 3600).mul_f64(RENEW_JITTER_FRACTION);
    assert_eq!(renewal_delay(&identity, start, 1.0), earliest);
    let jittered = renewal_delay(&identity, start, 0.5);
    assert!(earliest < jittered && jittered < Duration::from_secs(12 * 3600));
    assert_eq!(renewal_delay(&identity, start + Duration::from_secs(13 * 3600), 0.0), Duration::ZERO, "overdue");
}

#[tokio::test]
async fn a_proxy_gets_a_certificate_from_trellisd_and_renews_it_before_it_expires() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (addr, server) = trellisd(dir.path()).await;
    let token_file = mint_token(dir.path(), &shop_inventory()).expect("minted");
    let mut client =
        CaClient::new(Target::parse(&addr.to_string()).expect("an address"), token_file).expect("an address");
    client.requested_ttl = Some(Duration::from_secs(4));
    let (publish, mut watch) = channel();
    let drain = Drain::new();
    tokio::spawn(client.run(publish, drain.watch()));

    let first = next(&mut watch, Option::is_some).await.expect("a certificate");
    let arrived = SystemTime::now();
    assert_eq!(first.spiffe_id, "spiffe://cluster.local/ns/shop/sa/inventory");
    let lifetime = first.not_after.duration_since(first.not_before).expect("ordered");
    assert!(lifetime <= Duration::from_secs(5), "the 4 s asked for (plus backdating): {lifetime:?}");
    assert!(first.renew_at() > arrived - Duration::from_secs(1), "its renewal is ahead");

    let first_serial = serial(&first);
    let second = next(&mut watch, |current| current.as_ref().is_some_and(|id| serial(id) != first_serial))
        .await
        .expect("a renewed certificate, never a withdrawal");
    let renewed = SystemTime::now();
    assert!(renewed < first.not_after, "renewed before the first expired: {renewed:?} vs {:?}", first.not_after);
    assert!(second.not_after > first.not_after);
    assert_eq!(second.spiffe_id, first.spiffe_id);
    assert_eq!(second.roots, first.roots, "the same trust bundle");
    assert!(second.key.secret_der() != first.key.secret_der(), "a new key for each certificate");
    drain.start();
    server.shutdown();
}

#[tokio::test]
async fn a_missing_token_is_retried_until_it_appears() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (addr, server) = trellisd(dir.path()).await;
    let token_file = dir.path().join("later.token");
    let mut client =
        CaClient::new(Target::parse(&addr.to_string()).expect("an address"), token_file.clone()).expect("an address");
    client.backoff = Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100) };
    let err = client.fetch().await.expect_err("no token yet");
    assert!(err.to_string().contains("reading the CA token"), "{err}");
    let (publish, mut watch) = channel();
    let drain = Drain::new();
    tokio::spawn(client.run(publish, drain.watch()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(watch.borrow().is_none());
    let minted = mint_token(dir.path(), &shop_inventory()).expect("minted");
    std::fs::copy(minted, &token_file).expect("copied");
    let identity = next(&mut watch, Option::is_some).await.expect("a certificate");
    assert_eq!(identity.spiffe_id, "spiffe://cluster.local/ns/shop/sa/inventory");
    drain.start();
    server.shutdown();
}

#[tokio::test]
async fn a_refused_renewal_keeps_the_old_certificate_until_it_expires_then_withdraws_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (addr, server) = trellisd(dir.path()).await;
    // The proxy's copy of its token (the CA's own file is the registry it checks against).
    let token_file = dir.path().join("proxy.token");
    std::fs::copy(mint_token(dir.path(), &shop_inventory()).expect("minted"), &token_file).expect("copied");
    let mut client =
        CaClient::new(Target::parse(&addr.to_string()).expect("an address"), token_file.clone()).expect("an address");
    client.requested_ttl = Some(Duration::from_secs(2));
    client.backoff = Backoff { base: Duration::from_millis(50), max: Duration::from_millis(200) };
    let (publish, mut watch) = channel();
    let drain = Drain::new();
    tokio::spawn(client.clone().run(publish, drain.watch()));
    let first = next(&mut watch, Option::is_some).await.expect("a certificate");

    std::fs::write(&token_file, "revoked").expect("written");
    let err = client.fetch().await.expect_err("refused");
    assert!(err.to_string().contains("refused with 401 Unauthorized: not authenticated"), "{err}");
    // A renewal may have landed before the token was revoked (a loaded machine is slow to get
    // here); follow the published certificates until one is withdrawn.
    let mut last = first;
    loop {
        let serial_now = serial(&last);
        let changed = next(&mut watch, |current| current.as_ref().is_none_or(|id| serial(id) != serial_now)).await;
        match changed {
            Some(renewed) => last = renewed,
            None => break,
        }
    }
    assert!(SystemTime::now() >= last.not_after, "the last certificate is withdrawn only once it expired");
    drain.start();
    server.shutdown();
}

#[tokio::test]
async fn identity_files_are_read_and_reloaded_when_they_change_keeping_the_last_good_ones() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let files = IdentityFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        roots: dir.path().join("roots.pem"),
    };
    let write = |(chain, key, roots): &(String, String, String)| {
        std::fs::write(&files.cert, chain).expect("written");
        std::fs::write(&files.key, key).expect("written");
        std::fs::write(&files.roots, roots).expect("written");
    };
    let err = files.load().expect_err("no files yet");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    write(&issue_files("spiffe://example.org/ns/shop/sa/inventory"));
    let first = files.load().expect("valid");
    assert_eq!(first.spiffe_id, "spiffe://example.org/ns/shop/sa/inventory");

    let (publish, mut watch) = channel();
    publish.send_replace(Some(Arc::new(first)));
    let drain = Drain::new();
    tokio::spawn(files.clone().watch(Duration::from_millis(20), publish, drain.watch()));
    std::fs::write(&files.cert, "not a certificate, and longer than before to change the length").expect("written");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kept = watch.borrow().clone().expect("still an identity");
    assert_eq!(kept.spiffe_id, "spiffe://example.org/ns/shop/sa/inventory", "a bad rewrite keeps the last good one");

    write(&issue_files("spiffe://example.org/ns/shop/sa/orders"));
    let reloaded =
        next(&mut watch, |current| current.as_ref().is_some_and(|id| id.spiffe_id.ends_with("/sa/orders"))).await;
    assert!(reloaded.is_some());
    drain.start();
}

#[tokio::test]
async fn certificates_come_over_tls_verified_with_the_trust_bundle_by_name_or_address() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (addr, server) = trellisd_tls(dir.path()).await;
    let token_file = mint_token(dir.path(), &shop_inventory()).expect("minted");
    let roots = dir.path().join("root-cert.pem");
    for address in [format!("https://localhost:{}", addr.port()), addr.to_string()] {
        let target = Target::parse(&address).expect("an address").with_ca(Some(roots.clone())).expect("roots");
        assert!(target.uses_tls());
        let client = CaClient::new(target, token_file.clone()).expect("a client");
        let identity = client.fetch().await.expect("a certificate over TLS");
        assert_eq!(identity.spiffe_id, "spiffe://cluster.local/ns/shop/sa/inventory");
    }

    // Another mesh's roots do not verify this trellisd.
    let other = tempfile::tempdir().expect("a temp dir");
    CaService::local(other.path(), "cluster.local", DEFAULT_WORKLOAD_CERT_TTL).expect("another CA");
    let target =
        Target::parse(&addr.to_string()).expect("an address").with_ca(Some(other.path().join("root-cert.pem")));
    let err = CaClient::new(target.expect("roots"), token_file.clone()).expect("a client").fetch().await;
    let err = err.expect_err("an unknown issuer").to_string();
    assert!(err.contains("handshake with control plane"), "{err}");

    // An identity outside the expected trust domain is refused by the proxy.
    let target = Target::parse(&addr.to_string()).expect("an address").with_ca(Some(roots));
    let mut client = CaClient::new(target.expect("roots"), token_file).expect("a client");
    client.trust_domain = Some("example.org".to_owned());
    let err = client.fetch().await.expect_err("another trust domain").to_string();
    assert!(err.contains("not in trust domain \"example.org\""), "{err}");
    server.shutdown();
}

#[tokio::test]
async fn with_tls_on_plain_text_is_still_served_to_loopback_peers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (addr, server) = trellisd_tls(dir.path()).await;
    let token_file = mint_token(dir.path(), &shop_inventory()).expect("minted");
    let target = Target::parse(&format!("http://{addr}")).expect("an address");
    let identity = CaClient::new(target, token_file).expect("a client").fetch().await.expect("plain text");
    assert_eq!(identity.spiffe_id, "spiffe://cluster.local/ns/shop/sa/inventory");
    server.shutdown();
}
