//! Tests of the mesh CA: signing and its key material (`authority`), tokens (`tokens`), the HTTP
//! endpoint over a real socket (`endpoint`) and the Kubernetes side against a scripted API server
//! (`kubernetes`). Shared helpers live here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::extensions::GeneralName;

use super::*;

mod authority;
mod endpoint;
mod kubernetes;
mod tokens;

const TRUST_DOMAIN: &str = "cluster.local";

fn shop_inventory() -> Identity {
    Identity::new("shop", "inventory").expect("valid names")
}

/// A CSR for a new key, asking for `sans` (DNS names or URIs) and a common name.
fn csr(sans: &[&str]) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "admin");
    for san in sans {
        let name = if san.contains("://") {
            rcgen::SanType::URI((*san).try_into().expect("IA5"))
        } else {
            rcgen::SanType::DnsName((*san).try_into().expect("IA5"))
        };
        params.subject_alt_names.push(name);
    }
    let request = params.serialize_request(&key).expect("a CSR");
    (request.pem().expect("PEM"), key)
}

/// A fresh self-signed CA.
fn new_authority(max_ttl: Duration) -> Authority {
    let now = SystemTime::now();
    let material = CaMaterial::generate(TRUST_DOMAIN, now).expect("a root");
    Authority::new(&material, TRUST_DOMAIN, max_ttl, now).expect("a valid CA")
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().expect("PEM certificates")
}

/// Whether rustls, as the mesh's TLS layer will, accepts `chain_pem` as a client certificate chained to
/// `roots_pem`.
fn rustls_accepts(chain_pem: &str, roots_pem: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for root in ders(roots_pem) {
        roots.add(root).expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().expect("a verifier");
    let chain = ders(chain_pem);
    verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map(|_| ())
}

/// The URIs and DNS names of a PEM certificate's SAN, and whether it is a CA.
fn names_of(cert_pem: &str) -> (Vec<String>, bool) {
    let der = ders(cert_pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    let names = cert
        .subject_alternative_name()
        .expect("a valid SAN")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|name| match name {
                    GeneralName::URI(uri) => format!("URI:{uri}"),
                    GeneralName::DNSName(dns) => format!("DNS:{dns}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    (names, cert.is_ca())
}
