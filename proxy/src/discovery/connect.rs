//! Connecting to the control plane: TCP, then TLS when the target asks for it, verified with the
//! mesh's trust bundle (`--discovery-ca`, re-read on each connect so a rotated bundle is picked up)
//! against the name or address the proxy dialled. The config stream and certificate requests share
//! this path, so a workload's bootstrap token never travels in clear once TLS is on.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Target;
use crate::Error;

/// ALPN of the control plane's HTTP/2 (as gRPC over TLS uses).
const ALPN_H2: &[u8] = b"h2";

/// A byte stream to the control plane: TCP or TLS over TCP.
pub trait ControlPlaneIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ControlPlaneIo for T {}

impl Target {
    /// Opens a connection, within `timeout` for TCP and TLS together.
    pub async fn connect(&self, timeout: Duration) -> Result<Box<dyn ControlPlaneIo>, Error> {
        let timed_out =
            || Error::Io { context: format!("connecting to {self}"), source: std::io::ErrorKind::TimedOut.into() };
        tokio::time::timeout(timeout, self.open()).await.map_err(|_| timed_out())?
    }

    /// The URI of `path` on the control plane, with the scheme the connection uses.
    pub fn uri(&self, path: &str) -> String {
        let scheme = if self.uses_tls() { "https" } else { "http" };
        format!("{scheme}://{self}{path}")
    }

    async fn open(&self) -> Result<Box<dyn ControlPlaneIo>, Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Error::io(format!("connecting to control plane {self}")))?;
        // Messages are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let Some(ca) = self.ca.as_ref().filter(|_| self.uses_tls()) else {
            return Ok(Box::new(tcp));
        };
        let config = client_config(ca)?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Error::Tls(format!("control plane name {:?}: {e}", self.host)))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Tls(format!("handshake with control plane {self}: {e}")))?;
        Ok(Box::new(tls))
    }
}

/// A TLS client trusting the PEM roots in `ca`.
fn client_config(ca: &std::path::Path) -> Result<ClientConfig, Error> {
    let bad = |message: String| Error::Tls(format!("--discovery-ca {}: {message}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("unusable root: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".to_owned()));
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
