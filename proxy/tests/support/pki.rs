//! A test PKI: a mesh root and workload certificates with SPIFFE URI SANs, written as the PEM files
//! `trellis-proxy --tls-cert/--tls-key/--tls-roots` reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A certificate authority that issues workload certificates.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh self-signed root.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("root key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed root");
        Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A workload certificate for `spiffe://cluster.local/ns/<ns>/sa/<sa>`, valid for `lifetime`.
    pub fn issue(&self, ns: &str, sa: &str, lifetime: Duration) -> Workload {
        let key = KeyPair::generate().expect("workload key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        let id = format!("spiffe://cluster.local/ns/{ns}/sa/{sa}");
        params.subject_alt_names.push(SanType::URI(id.clone().try_into().expect("IA5")));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(5);
        params.not_after = now + time::Duration::try_from(lifetime).expect("lifetime");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Workload { spiffe_id: id, cert_pem: cert.pem(), key_pem: key.serialize_pem(), roots_pem: self.cert_pem.clone() }
    }
}

/// A workload's certificate, key and trust bundle.
pub struct Workload {
    pub spiffe_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub roots_pem: String,
}

impl Workload {
    /// Writes `cert.pem`, `key.pem` and `roots.pem` into `dir` and returns the proxy flags naming them.
    pub fn write(&self, dir: &Path) -> Vec<String> {
        let path = |name: &str| -> PathBuf { dir.join(name) };
        std::fs::write(path("cert.pem"), &self.cert_pem).expect("write cert");
        std::fs::write(path("key.pem"), &self.key_pem).expect("write key");
        std::fs::write(path("roots.pem"), &self.roots_pem).expect("write roots");
        let flag = |name: &str, file: &str| [name.to_owned(), path(file).display().to_string()];
        [flag("--tls-cert", "cert.pem"), flag("--tls-key", "key.pem"), flag("--tls-roots", "roots.pem")].concat()
    }
}

/// A workload's certificate files in a folder that lives as long as the test, and the proxy flags
/// naming them.
pub struct Certs {
    _dir: tempfile::TempDir,
    pub flags: Vec<String>,
}

/// Writes `workload`'s files into a new temporary folder.
pub fn certs(workload: &Workload) -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = workload.write(dir.path());
    Certs { _dir: dir, flags }
}

/// The certificate flags of `certs` followed by `more`.
pub fn flags<'a>(certs: &'a Certs, more: &[&'a str]) -> Vec<&'a str> {
    certs.flags.iter().map(String::as_str).chain(more.iter().copied()).collect()
}
