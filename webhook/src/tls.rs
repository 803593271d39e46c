//! The webhook's serving certificate, reloaded from its PEM files when they change (cert-manager and
//! the operator rotate them in place): a rustls certificate resolver whose key pair is swapped
//! atomically. A pair that does not load (half written, key not matching) is logged and the last
//! good one stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::Error;

/// How often the files are compared with what is being served.
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(2);

/// The served key pair and the file contents it came from.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// A certificate resolver reading `cert` and `key` (PEM), reloading them on [`ReloadingCert::reload`].
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: ArcSwap<Loaded>,
}

impl ReloadingCert {
    /// Loads the pair now; an error names the file that is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, Error> {
        let loaded = load_pair(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Re-reads the files; swaps the pair in when they changed and load. `Ok(true)` when swapped.
    pub fn reload(&self) -> Result<bool, Error> {
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let current = self.loaded.load();
        if current.cert_pem == cert_pem && current.key_pem == key_pem {
            return Ok(false);
        }
        let loaded = parse_pair(&self.cert, cert_pem, key_pem)?;
        self.loaded.store(Arc::new(loaded));
        Ok(true)
    }

    /// Reloads every `poll` for as long as the process runs.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.cert.display(), "serving certificate reloaded"),
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "serving certificate not reloaded; the previous one stays"),
            }
        }
    }

    /// A rustls server configuration serving this pair, offering HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let mut config = builder.with_no_client_auth().with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded.load().key.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })
}

fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, Error> {
    parse_pair(cert, read(cert)?, read(key)?)
}

fn parse_pair(cert_path: &Path, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Loaded, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|err| Error::Tls(format!("{}: {err}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", cert_path.display())));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| Error::Tls(format!("the key: {err}")))?;
    let signing = any_supported_type(&private).map_err(|err| Error::Tls(format!("the key: {err}")))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|err| Error::Tls(format!("the key does not match {}: {err}", cert_path.display())))?;
    Ok(Loaded { key: Arc::new(key), cert_pem, key_pem })
}
