use std::os::unix::fs::PermissionsExt as _;

use x509_parser::extensions::ParsedExtension;

use super::*;
use crate::ca::root::{self, PLUGGED_CERT_FILE, PLUGGED_KEY_FILE, ROOT_CERT_FILE, ROOT_KEY_FILE};

#[test]
fn a_csr_asking_for_other_names_gets_only_the_authenticated_identity() {
    let authority = new_authority(DEFAULT_WORKLOAD_CERT_TTL);
    let (csr, key) = csr(&["evil.example", "spiffe://cluster.local/ns/kube-system/sa/admin"]);
    let issued = authority.sign(&csr, &shop_inventory(), None, SystemTime::now()).expect("signed");
    assert_eq!(issued.spiffe_id, "spiffe://cluster.local/ns/shop/sa/inventory");
    let (names, is_ca) = names_of(&issued.chain_pem);
    assert_eq!(names, ["URI:spiffe://cluster.local/ns/shop/sa/inventory"]);
    assert!(!is_ca);

    let der = ders(&issued.chain_pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    assert_eq!(cert.subject().iter().count(), 0, "the CSR's common name is not copied");
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw(), "the CSR's key");
    let usage = cert.key_usage().expect("valid").expect("a key usage").value;
    assert!(usage.digital_signature() && usage.key_encipherment() && !usage.key_cert_sign());
    let eku = cert.extended_key_usage().expect("valid").expect("an EKU").value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let san_critical = cert
        .extensions()
        .iter()
        .any(|e| matches!(e.parsed_extension(), ParsedExtension::SubjectAlternativeName(_)) && e.critical);
    assert!(san_critical, "an empty subject makes the SAN critical");
    rustls_accepts(&issued.chain_pem, &issued.roots_pem).expect("the chain verifies against the root");
}

#[test]
fn a_certificate_lives_24_hours_by_default_and_starts_a_little_early() {
    let authority = new_authority(DEFAULT_WORKLOAD_CERT_TTL);
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs());
    let issued = authority.sign(&csr(&[]).0, &shop_inventory(), None, now).expect("signed");
    assert_eq!(DEFAULT_WORKLOAD_CERT_TTL, Duration::from_secs(24 * 3600));
    assert_eq!(issued.not_after.duration_since(now).expect("later"), DEFAULT_WORKLOAD_CERT_TTL);
    assert_eq!(now.duration_since(issued.not_before).expect("earlier"), crate::ca::authority::CLOCK_SKEW_BACKDATE);
    let der = ders(&issued.chain_pem).remove(0);
    let facts = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509").1;
    let seconds = |t: x509_parser::time::ASN1Time| t.timestamp();
    assert_eq!(seconds(facts.validity().not_after) - seconds(facts.validity().not_before), 24 * 3600 + 300);
}

#[test]
fn a_requested_lifetime_is_granted_up_to_the_maximum_and_a_short_one_keeps_its_half_life_ahead() {
    let authority = new_authority(DEFAULT_WORKLOAD_CERT_TTL);
    let now = SystemTime::now();
    let (csr, _) = csr(&[]);
    let short = authority.sign(&csr, &shop_inventory(), Some(Duration::from_secs(4)), now).expect("signed");
    assert_eq!(short.not_after.duration_since(now).expect("later"), Duration::from_secs(4));
    let half_life = short.not_before + short.not_after.duration_since(short.not_before).expect("ordered") / 2;
    assert!(half_life > now, "backdating is capped at a tenth of the lifetime");
    let long = authority.sign(&csr, &shop_inventory(), Some(Duration::from_secs(48 * 3600)), now).expect("signed");
    assert_eq!(long.not_after.duration_since(now).expect("later"), DEFAULT_WORKLOAD_CERT_TTL, "capped");
    let err = authority.sign(&csr, &shop_inventory(), Some(Duration::ZERO), now).expect_err("zero");
    assert!(matches!(&err, Error::BadRequest { what, .. } if what == "ttlSeconds"), "{err}");
}

#[test]
fn a_malformed_or_tampered_csr_is_a_bad_request_naming_the_csr() {
    let authority = new_authority(DEFAULT_WORKLOAD_CERT_TTL);
    let (good, _) = csr(&[]);
    let mut block = pem::parse(&good).expect("PEM");
    let mut contents = block.contents().to_vec();
    let last = contents.len() - 1;
    contents[last] ^= 0x01; // inside the signature
    block = pem::Pem::new(block.tag(), contents);
    let tampered = pem::encode(&block);
    let wrong_label = pem::encode(&pem::Pem::new("CERTIFICATE", pem::parse(&good).expect("PEM").into_contents()));
    for (bad, expected) in [
        ("not pem at all", "not a PEM block"),
        (wrong_label.as_str(), "not a CERTIFICATE REQUEST"),
        (tampered.as_str(), "signature does not verify"),
    ] {
        let err = authority.sign(bad, &shop_inventory(), None, SystemTime::now()).expect_err("refused");
        let Error::BadRequest { what, message } = &err else { panic!("a bad request: {err}") };
        assert_eq!(what, "csr");
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn a_root_is_made_once_in_the_folder_readable_by_the_owner_and_reused_after_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca_dir = dir.path().join(".trellis-ca");
    let now = SystemTime::now();
    let first = root::load_or_create_dir(&ca_dir, TRUST_DOMAIN, now).expect("made");
    for file in [ROOT_CERT_FILE, ROOT_KEY_FILE] {
        let mode = std::fs::metadata(ca_dir.join(file)).expect("written").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(ca_dir.join(".gitignore").is_file(), "a new CA folder keeps itself out of git");
    let again = root::load_or_create_dir(&ca_dir, TRUST_DOMAIN, now).expect("read");
    assert_eq!(again, first, "the same root after a restart");
    let before = Authority::new(&first, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, now).expect("valid");
    let after = Authority::new(&again, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, now).expect("valid");
    let issued = after.sign(&csr(&[]).0, &shop_inventory(), None, now).expect("signed");
    rustls_accepts(&issued.chain_pem, before.roots_pem()).expect("old trust bundles still trust new certificates");
    let (root_names, root_is_ca) = names_of(before.roots_pem());
    assert!(root_names.is_empty() && root_is_ca);
}

#[test]
fn a_root_the_user_puts_in_the_folder_is_used_as_it_is() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mine = CaMaterial::generate("example.org", SystemTime::now()).expect("a root");
    std::fs::write(dir.path().join(ROOT_CERT_FILE), &mine.cert_pem).expect("written");
    std::fs::write(dir.path().join(ROOT_KEY_FILE), &mine.key_pem).expect("written");
    let loaded = root::load_or_create_dir(dir.path(), TRUST_DOMAIN, SystemTime::now()).expect("read");
    assert_eq!(loaded, mine);
}

#[test]
fn a_plugged_in_intermediate_signs_and_the_root_beside_it_is_the_trust_bundle() {
    let now = SystemTime::now();
    let root_key = rcgen::KeyPair::generate().expect("a key");
    let mut root_params = rcgen::CertificateParams::default();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root_cert = root_params.self_signed(&root_key).expect("a root");
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let intermediate_key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "cert-manager intermediate");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let intermediate = params.signed_by(&intermediate_key, &root_issuer).expect("an intermediate");

    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join(PLUGGED_CERT_FILE), intermediate.pem()).expect("written");
    std::fs::write(dir.path().join(PLUGGED_KEY_FILE), intermediate_key.serialize_pem()).expect("written");
    let err = root::load_or_create_dir(dir.path(), TRUST_DOMAIN, now).expect_err("no root beside it");
    assert!(err.to_string().contains(ROOT_CERT_FILE), "{err}");
    std::fs::write(dir.path().join(ROOT_CERT_FILE), root_cert.pem()).expect("written");
    let material = root::load_or_create_dir(dir.path(), TRUST_DOMAIN, now).expect("read");
    let authority = Authority::new(&material, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, now).expect("valid");
    assert_eq!(authority.roots_pem(), root_cert.pem());
    let issued = authority.sign(&csr(&[]).0, &shop_inventory(), None, now).expect("signed");
    let chain = ders(&issued.chain_pem);
    assert_eq!(chain.len(), 2, "the leaf and the intermediate");
    assert_eq!(chain[1].as_ref(), intermediate.der().as_ref());
    rustls_accepts(&issued.chain_pem, &issued.roots_pem).expect("the chain verifies against the user's root");
    let other = new_authority(DEFAULT_WORKLOAD_CERT_TTL);
    assert!(rustls_accepts(&issued.chain_pem, other.roots_pem()).is_err(), "another root does not trust it");
}

#[test]
fn half_a_key_pair_in_the_folder_is_an_error_naming_the_missing_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mine = CaMaterial::generate(TRUST_DOMAIN, SystemTime::now()).expect("a root");
    std::fs::write(dir.path().join(ROOT_CERT_FILE), &mine.cert_pem).expect("written");
    let err = root::load_or_create_dir(dir.path(), TRUST_DOMAIN, SystemTime::now()).expect_err("no key");
    assert!(err.to_string().contains(ROOT_KEY_FILE), "{err}");
}

#[test]
fn a_certificate_that_is_not_a_ca_a_foreign_key_or_a_bad_trust_domain_is_refused() {
    let now = SystemTime::now();
    let leaf_key = rcgen::KeyPair::generate().expect("a key");
    let leaf = rcgen::CertificateParams::default().self_signed(&leaf_key).expect("a leaf");
    let not_ca = CaMaterial { cert_pem: leaf.pem(), key_pem: leaf_key.serialize_pem(), roots_pem: None };
    let err = Authority::new(&not_ca, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, now).expect_err("not a CA");
    assert!(err.to_string().contains("is not a CA"), "{err}");
    let mut foreign = CaMaterial::generate(TRUST_DOMAIN, now).expect("a root");
    foreign.key_pem = leaf_key.serialize_pem();
    let err = Authority::new(&foreign, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, now).expect_err("wrong key");
    assert!(err.to_string().contains("does not belong"), "{err}");
    let good = CaMaterial::generate(TRUST_DOMAIN, now).expect("a root");
    let err = Authority::new(&good, "cluster.local/ns/x", DEFAULT_WORKLOAD_CERT_TTL, now).expect_err("a path");
    assert!(err.to_string().contains("trust domain"), "{err}");
    let later = now + root::ROOT_LIFETIME + Duration::from_secs(1);
    let err = Authority::new(&good, TRUST_DOMAIN, DEFAULT_WORKLOAD_CERT_TTL, later).expect_err("expired");
    assert!(err.to_string().contains("not valid now"), "{err}");
}
