//! The workload's mesh identity as the TLS layer uses it: its certificate chain and key, the trust
//! bundle of the mesh, and the SPIFFE ID its certificate carries. Whoever obtains a certificate (the
//! CA client asking `trellisd`, or files given on the command line) publishes a [`WorkloadIdentity`]
//! on an [`IdentityWatch`]; the inbound and outbound TLS configs are rebuilt from each new one, so a
//! renewal never drops a connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::Error;

mod mesh;
mod verify;

pub use mesh::*;

/// URI scheme of mesh identities.
pub const SPIFFE_SCHEME: &str = "spiffe://";

/// A workload certificate with its key and the roots it is checked against.
#[derive(Debug)]
pub struct WorkloadIdentity {
    /// `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`, from the leaf's URI SAN.
    pub spiffe_id: String,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The mesh's trust bundle: peers' chains must end at one of these.
    pub roots: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The current identity, `None` until the first certificate arrives.
pub type IdentityWatch = watch::Receiver<Option<Arc<WorkloadIdentity>>>;

impl WorkloadIdentity {
    /// Reads an identity from PEM text: the chain (leaf first), its private key (PKCS#8, SEC1 or
    /// PKCS#1) and the trust bundle. The leaf must carry exactly one `spiffe://` URI SAN.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], roots_pem: &[u8]) -> Result<WorkloadIdentity, Error> {
        let bad = |what: &str, err: &dyn std::fmt::Display| Error::Tls(format!("{what}: {err}"));
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad("certificate chain", &err))?;
        let roots = CertificateDer::pem_slice_iter(roots_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad("trust bundle", &err))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| bad("private key", &err))?;
        let leaf = chain.first().ok_or_else(|| Error::Tls("certificate chain: no certificate in the PEM".into()))?;
        if roots.is_empty() {
            return Err(Error::Tls("trust bundle: no certificate in the PEM".into()));
        }
        let facts = leaf_facts(leaf)?;
        Ok(WorkloadIdentity {
            spiffe_id: facts.spiffe_id,
            chain,
            key,
            roots,
            not_before: facts.not_before,
            not_after: facts.not_after,
        })
    }

    /// When this certificate should be replaced: at half its lifetime, as Istio's agents do.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }
}

/// What the TLS layer needs from a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    pub spiffe_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The SPIFFE ID and validity of a DER certificate. A certificate without exactly one `spiffe://` URI
/// SAN is not a mesh identity.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<LeafFacts, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|err| Error::Tls(format!("certificate: not X.509 DER: {err}")))?;
    let spiffe_id = spiffe_id_of(&cert)?;
    let at = |time: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(time.timestamp()).unwrap_or(0))
    };
    Ok(LeafFacts { spiffe_id, not_before: at(cert.validity().not_before), not_after: at(cert.validity().not_after) })
}

/// The SPIFFE ID of a peer's leaf certificate, for policy and `x-forwarded-client-cert`.
pub fn peer_spiffe_id(der: &CertificateDer<'_>) -> Result<String, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|err| Error::Tls(format!("peer certificate: not X.509 DER: {err}")))?;
    spiffe_id_of(&cert)
}

fn spiffe_id_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<String, Error> {
    use x509_parser::extensions::GeneralName;
    let names = cert
        .subject_alternative_name()
        .map_err(|err| Error::Tls(format!("certificate: bad subjectAltName: {err}")))?
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let mut ids = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with(SPIFFE_SCHEME) => Some((*uri).to_owned()),
        _ => None,
    });
    match (ids.next(), ids.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => Err(Error::Tls("certificate: no spiffe:// URI in subjectAltName".into())),
        (Some(_), Some(_)) => Err(Error::Tls("certificate: more than one spiffe:// URI in subjectAltName".into())),
    }
}

/// The namespace of a SPIFFE ID `spiffe://<td>/ns/<ns>/sa/<sa>`, for `source.namespace`.
pub fn spiffe_namespace(spiffe_id: &str) -> Option<&str> {
    let path = spiffe_id.strip_prefix(SPIFFE_SCHEME)?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa")) => Some(ns),
        _ => None,
    }
}

/// A SPIFFE ID as Istio's `principals` name it: without the scheme (`cluster.local/ns/x/sa/y`).
pub fn principal(spiffe_id: &str) -> &str {
    spiffe_id.strip_prefix(SPIFFE_SCHEME).unwrap_or(spiffe_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(spiffe: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for id in spiffe {
            params.subject_alt_names.push(rcgen::SanType::URI((*id).try_into().expect("an IA5 string")));
        }
        let cert = params.self_signed(&key).expect("self-signed");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn an_identity_reads_its_spiffe_id_and_renews_at_half_its_lifetime() {
        let (cert, key) = issue(&["spiffe://cluster.local/ns/shop/sa/inventory"]);
        let identity = WorkloadIdentity::from_pem(cert.as_bytes(), key.as_bytes(), cert.as_bytes()).expect("valid");
        assert_eq!(identity.spiffe_id, "spiffe://cluster.local/ns/shop/sa/inventory");
        let half = identity.not_after.duration_since(identity.not_before).expect("ordered") / 2;
        assert_eq!(identity.renew_at(), identity.not_before + half);
    }

    #[test]
    fn a_certificate_without_a_spiffe_uri_is_not_an_identity() {
        let (cert, key) = issue(&[]);
        let err = WorkloadIdentity::from_pem(cert.as_bytes(), key.as_bytes(), cert.as_bytes()).expect_err("no id");
        assert!(err.to_string().contains("no spiffe:// URI"), "{err}");
        let (two, key) = issue(&["spiffe://a/ns/x/sa/y", "spiffe://a/ns/x/sa/z"]);
        let err = WorkloadIdentity::from_pem(two.as_bytes(), key.as_bytes(), two.as_bytes()).expect_err("two ids");
        assert!(err.to_string().contains("more than one"), "{err}");
    }

    #[test]
    fn empty_pem_is_refused_naming_what_is_missing() {
        let (cert, key) = issue(&["spiffe://cluster.local/ns/shop/sa/inventory"]);
        let err = WorkloadIdentity::from_pem(cert.as_bytes(), key.as_bytes(), b"").expect_err("no roots");
        assert!(err.to_string().contains("trust bundle"), "{err}");
        let err = WorkloadIdentity::from_pem(b"", key.as_bytes(), cert.as_bytes()).expect_err("no chain");
        assert!(err.to_string().contains("certificate chain"), "{err}");
    }

    #[test]
    fn principals_and_namespaces_come_from_the_spiffe_path() {
        let id = "spiffe://cluster.local/ns/shop/sa/booking";
        assert_eq!(principal(id), "cluster.local/ns/shop/sa/booking");
        assert_eq!(spiffe_namespace(id), Some("shop"));
        assert_eq!(spiffe_namespace("spiffe://cluster.local/other"), None);
    }
}
