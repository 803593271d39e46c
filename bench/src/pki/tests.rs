use std::os::unix::fs::PermissionsExt as _;

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::X509Certificate;

use super::*;

fn pems(text: &str) -> Vec<Pem> {
    Pem::iter_from_buffer(text.as_bytes()).collect::<Result<_, _>>().expect("PEM")
}

fn cert(pem: &Pem) -> X509Certificate<'_> {
    pem.parse_x509().expect("X.509 DER")
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().expect("one SAN extension").expect("a SAN extension");
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => (*uri).to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

#[test]
fn the_leaves_carry_one_spiffe_id_each_and_chain_to_the_root() {
    let pki = MeshPki::generate().expect("pki");
    let roots = pems(&pki.roots_pem);
    assert_eq!(roots.len(), 1);
    let root = cert(&roots[0]);
    assert!(root.is_ca(), "the root is a CA");
    for (leaf, id) in [
        (&pki.client, "spiffe://cluster.local/ns/bench/sa/client"),
        (&pki.app, "spiffe://cluster.local/ns/bench/sa/app"),
    ] {
        assert_eq!(leaf.spiffe_id, id);
        let pem = pems(&leaf.cert_pem);
        assert_eq!(pem.len(), 1, "one certificate per leaf");
        let x509 = cert(&pem[0]);
        assert_eq!(uri_sans(&x509), vec![id.to_owned()]);
        assert!(!x509.is_ca());
        assert_eq!(x509.subject().iter().count(), 0, "{id}: no subject, the URI SAN is the identity");
        let eku = x509.extended_key_usage().expect("one EKU extension").expect("an EKU extension").value;
        assert!(eku.server_auth && eku.client_auth, "{id}: serverAuth and clientAuth");
        assert_eq!(x509.issuer(), root.subject());
        x509.verify_signature(Some(root.public_key())).expect("signed by the root");
        assert!(x509.validity().is_valid(), "{id} is valid now");
        // The key file holds the certificate's key.
        let key = KeyPair::from_pem(&leaf.key_pem).expect("PEM key");
        assert_eq!(key.public_key_raw(), &*x509.public_key().subject_public_key.data);
    }
}

#[test]
fn each_run_gets_its_own_root() {
    let (a, b) = (MeshPki::generate().expect("a"), MeshPki::generate().expect("b"));
    assert_ne!(a.roots_pem, b.roots_pem);
    let b_root = pems(&b.roots_pem);
    let a_app = pems(&a.app.cert_pem);
    assert!(cert(&a_app[0]).verify_signature(Some(cert(&b_root[0]).public_key())).is_err());
}

#[test]
fn the_files_hold_what_proxies_and_haproxy_read_and_keys_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = MeshPki::generate().expect("pki");
    pki.write(dir.path()).expect("write");
    // Written twice: a rerun replaces the files.
    let files = pki.write(dir.path()).expect("write again");
    let read = |path: &Path| std::fs::read_to_string(path).expect("read");
    assert_eq!(read(&files.roots), pki.roots_pem);
    assert_eq!(read(&files.app.cert), pki.app.cert_pem);
    assert_eq!(read(&files.app.key), pki.app.key_pem);
    let bundle = pems(&read(&files.client.bundle));
    let labels: Vec<&str> = bundle.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, vec!["CERTIFICATE", "PRIVATE KEY"], "HAProxy's crt: certificate and key in one file");
    assert_eq!(uri_sans(&cert(&bundle[0])), vec![pki.client.spiffe_id.clone()]);
    for key in [&files.client.key, &files.client.bundle, &files.app.key, &files.app.bundle] {
        let mode = std::fs::metadata(key).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let flags = files.app.trellis_flags(&files.roots);
    assert_eq!(flags[0], "--tls-cert");
    assert_eq!(flags[1], files.app.cert.display().to_string());
    assert_eq!(flags[2..4], ["--tls-key".to_owned(), files.app.key.display().to_string()]);
    assert_eq!(flags[4..6], ["--tls-roots".to_owned(), files.roots.display().to_string()]);
}
