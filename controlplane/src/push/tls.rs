//! TLS on the push port. trellisd asks its own mesh CA for a serving certificate (the SPIFFE ID
//! `spiffe://<trust domain>/ns/<namespace>/sa/trellisd` plus the DNS names and addresses proxies
//! dial), serves it with ALPN `h2` and `http/1.1`, and renews it at half its lifetime; a renewed
//! certificate is swapped in for new handshakes while open streams carry on. Proxies verify it with
//! the mesh's trust bundle (`--discovery-ca`), so config and the bootstrap tokens sent with
//! certificate requests never cross the network in clear.
//!
//! The first byte of a connection tells TLS (a handshake record, `0x16`) from plain text. Plain text
//! is accepted only from loopback peers (tools and local-mode proxies on the same machine) unless
//! trellisd runs without a CA.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::Error;
use crate::ca::CaService;
use crate::ca::auth::Identity;

/// The service account in trellisd's SPIFFE ID.
pub const SERVICE_ACCOUNT: &str = "trellisd";
/// The first byte of a TLS connection (a handshake record).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Retry delay after a failed renewal.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// Names a serving certificate of trellisd carries besides its SPIFFE ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// The names a proxy may use for trellisd in `namespace`: its Service's forms, `localhost` and the
    /// loopback addresses, plus `extra` (`--tls-san`: names or addresses) and `listen` when it is a
    /// specific address.
    pub fn for_namespace(namespace: &str, listen: IpAddr, extra: &[String]) -> Self {
        let mut dns = vec![
            "localhost".to_owned(),
            SERVICE_ACCOUNT.to_owned(),
            format!("{SERVICE_ACCOUNT}.{namespace}"),
            format!("{SERVICE_ACCOUNT}.{namespace}.svc"),
            format!("{SERVICE_ACCOUNT}.{namespace}.svc.cluster.local"),
        ];
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
        if !listen.is_unspecified() {
            ips.push(listen);
        }
        for name in extra.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            match name.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(name.to_owned()),
            }
        }
        dns.dedup();
        ips.sort();
        ips.dedup();
        Self { dns, ips }
    }
}

/// trellisd's serving certificate, renewed in place.
#[derive(Debug)]
pub struct ServingTls {
    current: Arc<CurrentCert>,
    config: Arc<ServerConfig>,
    ca: Arc<CaService>,
    identity: Identity,
    names: ServingNames,
}

/// The certificate handshakes use now.
#[derive(Debug)]
struct CurrentCert {
    key: ArcSwap<CertifiedKey>,
    validity: ArcSwap<(SystemTime, SystemTime)>,
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

impl ServingTls {
    /// Issues trellisd's first certificate from `ca` for the identity `trellisd` in `namespace`.
    pub fn new(ca: Arc<CaService>, namespace: &str, names: ServingNames) -> Result<Self, Error> {
        let identity = Identity::new(namespace, SERVICE_ACCOUNT).map_err(|e| Error::ca("trellisd identity", e))?;
        let (key, validity) = issue(&ca, &identity, &names)?;
        let current =
            Arc::new(CurrentCert { key: ArcSwap::from_pointee(key), validity: ArcSwap::from_pointee(validity) });
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::ca("push TLS", e))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { current, config: Arc::new(config), ca, identity, names })
    }

    /// An acceptor for the next connection (it uses whatever certificate is current at handshake).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The SPIFFE ID the certificate carries.
    pub fn spiffe_id(&self) -> String {
        self.identity.spiffe_id(self.ca.authority().trust_domain())
    }

    /// When the current certificate should be replaced: at half its lifetime.
    fn renew_at(&self) -> SystemTime {
        let (not_before, not_after) = **self.current.validity.load();
        let lifetime = not_after.duration_since(not_before).unwrap_or(Duration::ZERO);
        not_before + lifetime / 2
    }

    /// Issues a new certificate and swaps it in.
    pub fn renew(&self) -> Result<(), Error> {
        let (key, validity) = issue(&self.ca, &self.identity, &self.names)?;
        self.current.key.store(Arc::new(key));
        self.current.validity.store(Arc::new(validity));
        Ok(())
    }

    /// Renews at every half-life, for as long as the task runs.
    pub async fn keep_renewed(self: Arc<Self>) {
        loop {
            let wait = self.renew_at().duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            match self.renew() {
                Ok(()) => tracing::info!(spiffe_id = %self.spiffe_id(), "push port certificate renewed"),
                Err(err) => {
                    tracing::error!(error = %err, "renewing the push port certificate failed; retrying");
                    tokio::time::sleep(RENEW_RETRY).await;
                }
            }
        }
    }
}

/// A fresh key and certificate from `ca`, ready for rustls, with its validity.
fn issue(
    ca: &CaService,
    identity: &Identity,
    names: &ServingNames,
) -> Result<(CertifiedKey, (SystemTime, SystemTime)), Error> {
    let (issued, key_pem) = ca.authority().issue_serving(identity, &names.dns, &names.ips, SystemTime::now())?;
    let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::ca("push TLS certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::ca("push TLS key", e))?;
    let signing = any_supported_type(&key).map_err(|e| Error::ca("push TLS key", e))?;
    Ok((CertifiedKey::new(chain, signing), (issued.not_before, issued.not_after)))
}
