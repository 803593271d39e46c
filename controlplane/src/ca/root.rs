//! The CA's own key material and where it is kept: a self-signed root made on first start (ECDSA
//! P-256, ten years) or a CA certificate and key the user provides, in a folder (local mode) or in the
//! Secret [`SECRET_NAME`] of the root namespace (Kubernetes mode, where cert-manager can write it).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::Error;

/// Lifetime of a root the CA makes itself.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Common name of a root the CA makes itself (its organization is the trust domain).
pub const ROOT_COMMON_NAME: &str = "Trellis mesh CA";
/// Root certificate file of the CA folder (local mode); the trust bundle when `ca-cert.pem` is there.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Root key file of the CA folder.
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// An intermediate CA certificate the user plugs in (Istio's `cacerts` layout); its chain up to the
/// root may follow it in the same file.
pub const PLUGGED_CERT_FILE: &str = "ca-cert.pem";
/// The key of [`PLUGGED_CERT_FILE`].
pub const PLUGGED_KEY_FILE: &str = "ca-key.pem";
/// Name of the Secret holding the CA in the root namespace (Kubernetes mode).
pub const SECRET_NAME: &str = "trellis-ca";
/// Keys of a `kubernetes.io/tls` Secret (what cert-manager writes): the CA certificate, its key, and
/// optionally the root above it.
pub const SECRET_CERT_KEY: &str = "tls.crt";
pub const SECRET_KEY_KEY: &str = "tls.key";
pub const SECRET_ROOTS_KEY: &str = "ca.crt";
/// Type of the Secret the CA creates.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// Label on the Secret the CA creates.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "trellisd");
/// Permissions of the files the CA writes: the owner's only.
const PRIVATE_FILE_MODE: u32 = 0o600;
/// Written into a CA folder the CA creates, so the key never ends up in a repository by accident.
const GITIGNORE: (&str, &str) = (".gitignore", "# The mesh CA's key: never commit it.\n*\n");
/// Permissions of the folders the CA creates.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// A CA certificate (with any intermediates above it), its private key, and the roots to trust.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// PEM: the certificate that signs workload certificates first, then its parents below the root.
    pub cert_pem: String,
    /// PEM private key of the first certificate (PKCS#8, or SEC1 for ECDSA).
    pub key_pem: String,
    /// PEM trust bundle; `None` when the signing certificate is itself the root.
    pub roots_pem: Option<String>,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("CaMaterial").field("cert_pem", &self.cert_pem).field("roots_pem", &self.roots_pem).finish()
    }
}

impl CaMaterial {
    /// A new self-signed root for `trust_domain`, valid from `now` for [`ROOT_LIFETIME`].
    pub fn generate(trust_domain: &str, now: SystemTime) -> Result<CaMaterial, Error> {
        let key = KeyPair::generate().map_err(|e| Error::ca("generating the root key", e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        name.push(DnType::CommonName, ROOT_COMMON_NAME);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(super::authority::random_serial()?);
        // A little in the past, so a peer whose clock is behind accepts it at once.
        params.not_before = (now - super::authority::CLOCK_SKEW_BACKDATE).into();
        params.not_after = (now + ROOT_LIFETIME).into();
        let cert = params.self_signed(&key).map_err(|e| Error::ca("signing the root", e))?;
        Ok(CaMaterial { cert_pem: cert.pem(), key_pem: key.serialize_pem(), roots_pem: None })
    }
}

/// The CA in folder `dir` (local mode), made there if the folder holds none.
///
/// `ca-cert.pem` and `ca-key.pem` (a CA the user plugs in) sign, with `root-cert.pem` as the trust
/// bundle; otherwise `root-cert.pem` and `root-key.pem` sign; when neither pair is there, a new root is
/// written as `root-cert.pem` and `root-key.pem`, readable by the owner only. Half a pair is an error.
pub fn load_or_create_dir(dir: &Path, trust_domain: &str, now: SystemTime) -> Result<CaMaterial, Error> {
    if !dir.is_dir() {
        create_private_dir(dir)?;
        write_private_file(&dir.join(GITIGNORE.0), GITIGNORE.1)?;
    }
    let read = |name: &str| -> Result<Option<String>, Error> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::ca(path.display().to_string(), err)),
        }
    };
    let pair = |cert: &str, key: &str| -> Result<Option<(String, String)>, Error> {
        match (read(cert)?, read(key)?) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::ca(dir.join(key).display().to_string(), format!("missing beside {cert}"))),
            (None, Some(_)) => Err(Error::ca(dir.join(cert).display().to_string(), format!("missing beside {key}"))),
        }
    };
    if let Some((cert_pem, key_pem)) = pair(PLUGGED_CERT_FILE, PLUGGED_KEY_FILE)? {
        let roots = read(ROOT_CERT_FILE)?.ok_or_else(|| {
            Error::ca(dir.join(ROOT_CERT_FILE).display().to_string(), format!("missing beside {PLUGGED_CERT_FILE}"))
        })?;
        return Ok(CaMaterial { cert_pem, key_pem, roots_pem: Some(roots) });
    }
    if let Some((cert_pem, key_pem)) = pair(ROOT_CERT_FILE, ROOT_KEY_FILE)? {
        return Ok(CaMaterial { cert_pem, key_pem, roots_pem: None });
    }
    let material = CaMaterial::generate(trust_domain, now)?;
    write_private_file(&dir.join(ROOT_KEY_FILE), &material.key_pem)?;
    write_private_file(&dir.join(ROOT_CERT_FILE), &material.cert_pem)?;
    tracing::info!(folder = %dir.display(), "made a new mesh root CA");
    Ok(material)
}

/// Creates `dir` (and its parents) readable by the owner only, if it is not there.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::ca(dir.display().to_string(), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .map_err(|e| Error::ca(dir.display().to_string(), e))
}

/// Writes a new file readable by the owner only; fails if `path` exists (so two starts never clobber
/// each other's key).
pub(crate) fn write_private_file(path: &Path, text: &str) -> Result<(), Error> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|e| Error::ca(path.display().to_string(), e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| Error::ca(path.display().to_string(), e))
}

/// The CA in the Secret [`SECRET_NAME`] of `namespace` (Kubernetes mode), made there if it is absent.
///
/// The Secret holds `tls.crt` and `tls.key` (and `ca.crt`, the root above an intermediate, as
/// cert-manager writes a CA Certificate), or Istio's `ca-cert.pem`, `ca-key.pem` and `root-cert.pem`.
/// When another `trellisd` creates it first, that one is read.
pub async fn load_or_create_secret(
    client: kube::Client,
    namespace: &str,
    trust_domain: &str,
    now: SystemTime,
) -> Result<CaMaterial, Error> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let what = format!("Secret {namespace}/{SECRET_NAME}");
    if let Some(secret) = secrets.get_opt(SECRET_NAME).await.map_err(|e| Error::ca(&what, e))? {
        return material_of(&secret, &what);
    }
    let material = CaMaterial::generate(trust_domain, now)?;
    let data = BTreeMap::from([
        (SECRET_CERT_KEY.to_owned(), ByteString(material.cert_pem.clone().into_bytes())),
        (SECRET_KEY_KEY.to_owned(), ByteString(material.key_pem.clone().into_bytes())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.0.to_owned(), MANAGED_BY_LABEL.1.to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %what, "made a new mesh root CA");
            Ok(material)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let secret = secrets.get(SECRET_NAME).await.map_err(|e| Error::ca(&what, e))?;
            material_of(&secret, &what)
        }
        Err(err) => Err(Error::ca(&what, err)),
    }
}

/// The CA material a Secret holds, or which keys it lacks.
fn material_of(secret: &Secret, what: &str) -> Result<CaMaterial, Error> {
    let data = secret.data.as_ref();
    let text = |key: &str| -> Result<Option<String>, Error> {
        data.and_then(|data| data.get(key))
            .map(|bytes| {
                String::from_utf8(bytes.0.clone()).map_err(|_| Error::ca(format!("{what}: {key}"), "not UTF-8 PEM"))
            })
            .transpose()
    };
    for (cert, key, roots) in
        [(SECRET_CERT_KEY, SECRET_KEY_KEY, SECRET_ROOTS_KEY), (PLUGGED_CERT_FILE, PLUGGED_KEY_FILE, ROOT_CERT_FILE)]
    {
        if let (Some(cert_pem), Some(key_pem)) = (text(cert)?, text(key)?) {
            let roots_pem = text(roots)?.filter(|roots| roots.trim() != cert_pem.trim());
            return Ok(CaMaterial { cert_pem, key_pem, roots_pem });
        }
    }
    Err(Error::ca(
        what,
        format!("holds neither {SECRET_CERT_KEY} and {SECRET_KEY_KEY} nor {PLUGGED_CERT_FILE} and {PLUGGED_KEY_FILE}"),
    ))
}
