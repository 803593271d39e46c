//! The certificates of the TLS setups: a throwaway ECDSA P-256 mesh root made fresh for each run, and
//! one leaf for each side of a pair, `spiffe://cluster.local/ns/bench/sa/client` and `.../sa/app`,
//! each with that one URI SAN and the serverAuth and clientAuth extended key usages (as a mesh
//! workload certificate: every proxy both dials and accepts). Written as the PEM files
//! `trellis-proxy --tls-cert/--tls-key/--tls-roots` reads, plus the certificate+key bundles HAProxy's
//! `crt` wants. Both TLS pairs use the same files, so they verify the same chains.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// Trust domain of the bench's identities.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// Namespace of the bench's workloads.
pub const NAMESPACE: &str = "bench";
/// Service account of the client side of a pair.
pub const CLIENT_SERVICE_ACCOUNT: &str = "client";
/// Service account of the server side of a pair (the app's).
pub const APP_SERVICE_ACCOUNT: &str = "app";
/// How long the generated certificates are valid; a bench run takes minutes.
const VALIDITY: time::Duration = time::Duration::days(1);
/// How far before "now" the certificates start being valid (clock differences do not matter on one
/// machine, but a certificate must not be "not yet valid" in the second it was made).
const BACKDATE: time::Duration = time::Duration::minutes(5);
/// Permissions of the private-key files.
const KEY_FILE_MODE: u32 = 0o600;

/// The SPIFFE ID of `service_account` in the bench namespace.
pub fn spiffe_id(service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service_account}")
}

/// One workload certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub spiffe_id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A root and the two leaves it signed, in PEM.
#[derive(Debug, Clone)]
pub struct MeshPki {
    pub roots_pem: String,
    pub client: Leaf,
    pub app: Leaf,
}

/// Where one side's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file (HAProxy's `crt`).
    pub bundle: PathBuf,
}

/// Where [`MeshPki::write`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    pub roots: PathBuf,
    pub client: LeafFiles,
    pub app: LeafFiles,
}

impl LeafFiles {
    /// `--tls-cert FILE --tls-key FILE --tls-roots FILE` for a `trellis-proxy` with this identity.
    pub fn trellis_flags(&self, roots: &Path) -> Vec<String> {
        [("--tls-cert", &self.cert), ("--tls-key", &self.key), ("--tls-roots", &roots.to_path_buf())]
            .into_iter()
            .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
            .collect()
    }
}

impl MeshPki {
    /// A fresh root and the client and app leaves.
    pub fn generate() -> Result<MeshPki> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the root key")?;
        let mut params = CertificateParams::new(Vec::<String>::new()).context("root certificate parameters")?;
        params.distinguished_name.push(DnType::CommonName, "trellis-bench mesh root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params);
        let root = params.self_signed(&root_key).context("self-signing the root")?;
        let issuer = Issuer::new(params, root_key);
        Ok(MeshPki {
            roots_pem: root.pem(),
            client: leaf(&issuer, CLIENT_SERVICE_ACCOUNT)?,
            app: leaf(&issuer, APP_SERVICE_ACCOUNT)?,
        })
    }

    /// Writes `roots.pem`, `<side>.pem`, `<side>-key.pem` and `<side>-bundle.pem` (client and app)
    /// into `dir`; key files are readable by their owner only.
    pub fn write(&self, dir: &Path) -> Result<PkiFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let roots = dir.join("roots.pem");
        write_file(&roots, &self.roots_pem, None)?;
        let side = |name: &str, leaf: &Leaf| -> Result<LeafFiles> {
            let files = LeafFiles {
                cert: dir.join(format!("{name}.pem")),
                key: dir.join(format!("{name}-key.pem")),
                bundle: dir.join(format!("{name}-bundle.pem")),
            };
            write_file(&files.cert, &leaf.cert_pem, None)?;
            write_file(&files.key, &leaf.key_pem, Some(KEY_FILE_MODE))?;
            write_file(&files.bundle, &format!("{}{}", leaf.cert_pem, leaf.key_pem), Some(KEY_FILE_MODE))?;
            Ok(files)
        };
        Ok(PkiFiles {
            client: side(CLIENT_SERVICE_ACCOUNT, &self.client)?,
            app: side(APP_SERVICE_ACCOUNT, &self.app)?,
            roots,
        })
    }
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + VALIDITY;
}

/// A workload certificate for `service_account`, signed by `issuer`.
fn leaf(issuer: &Issuer<'_, KeyPair>, service_account: &str) -> Result<Leaf> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a workload key")?;
    let id = spiffe_id(service_account);
    let mut params = CertificateParams::new(Vec::<String>::new()).context("workload certificate parameters")?;
    // No subject, as Istio's workload certificates: the identity is the URI SAN alone.
    params.distinguished_name = DistinguishedName::new();
    let uri = id.clone().try_into().with_context(|| format!("{id} as a URI SAN"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params);
    let cert = params.signed_by(&key, issuer).with_context(|| format!("signing the certificate of {id}"))?;
    Ok(Leaf { spiffe_id: id, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Writes `text` to `path`, created with `mode` when given (an existing file is replaced).
fn write_file(path: &Path, text: &str, mode: Option<u32>) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests;
