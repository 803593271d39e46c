//! Mutual TLS between proxies: the server and client configs built from the workload's identity,
//! swapped whole when the certificate is renewed, and the two handshakes of the data path.
//!
//! A client proxy opens TLS 1.3 to a meshed endpoint with one ALPN value saying what the connection
//! carries ([`ALPN_HTTP2`]: multiplexed HTTP/2; [`ALPN_TCP`]: one opaque stream), so the server proxy
//! needs no second protocol detection, and tells mesh TLS apart from an application's own TLS (which
//! PERMISSIVE passes through untouched), as Istio does with its `istio-*` ALPN values. Both sides
//! require a certificate chained to the mesh roots; the server learns the client's SPIFFE ID, the
//! client checks the server's against the endpoint's expected identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::verify::MeshServerVerifier;
use super::{IdentityWatch, WorkloadIdentity, peer_spiffe_id, principal, spiffe_namespace};
use crate::Error;

/// ALPN of a mesh connection carrying HTTP/2 (every HTTP request between proxies).
pub const ALPN_HTTP2: &[u8] = b"trellis-h2";
/// ALPN of a mesh connection carrying HTTP/1.1: one request that upgrades (WebSocket), which HTTP/2
/// between proxies cannot carry.
pub const ALPN_HTTP1: &[u8] = b"trellis-h1";
/// ALPN of a mesh connection carrying one opaque TCP stream.
pub const ALPN_TCP: &[u8] = b"trellis-tcp";
/// How long a mesh TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Header that tells the application who called, as Istio sets it.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";
/// [`XFCC_HEADER`] as a header name (set on every inbound request: no parsing).
pub const XFCC: http::HeaderName = http::HeaderName::from_static(XFCC_HEADER);

/// What a mesh connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeshProtocol {
    Http2,
    Http1,
    Tcp,
}

impl MeshProtocol {
    fn alpn(self) -> &'static [u8] {
        match self {
            MeshProtocol::Http2 => ALPN_HTTP2,
            MeshProtocol::Http1 => ALPN_HTTP1,
            MeshProtocol::Tcp => ALPN_TCP,
        }
    }

    /// The protocol a negotiated ALPN value names, if it is a mesh one.
    pub fn from_alpn(alpn: &[u8]) -> Option<MeshProtocol> {
        match alpn {
            ALPN_HTTP2 => Some(MeshProtocol::Http2),
            ALPN_HTTP1 => Some(MeshProtocol::Http1),
            ALPN_TCP => Some(MeshProtocol::Tcp),
            _ => None,
        }
    }
}

/// Whether a ClientHello's ALPN list (as detection reads it) asks for mesh TLS.
pub fn is_mesh_alpn(alpn: &[String]) -> bool {
    alpn.iter().any(|value| MeshProtocol::from_alpn(value.as_bytes()).is_some())
}

/// The TLS configs of one certificate.
#[derive(Debug)]
pub struct TlsConfigs {
    pub identity: Arc<WorkloadIdentity>,
    server: Arc<ServerConfig>,
    /// One client config per ALPN value; they share one session-resumption store.
    client_http2: Arc<ClientConfig>,
    client_http1: Arc<ClientConfig>,
    client_tcp: Arc<ClientConfig>,
}

/// The mesh TLS state of the proxy: empty until the first certificate, then the configs of the
/// newest one. Connections already open keep the certificate they started with.
#[derive(Debug, Default)]
pub struct MeshTls {
    current: ArcSwapOption<TlsConfigs>,
}

impl MeshTls {
    /// The configs in force, if the proxy has an identity.
    pub fn current(&self) -> Option<Arc<TlsConfigs>> {
        self.current.load_full()
    }

    /// Whether the proxy has a certificate to speak mesh TLS with.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// Builds the configs of `identity` and puts them in force.
    pub fn install(&self, identity: Arc<WorkloadIdentity>) -> Result<(), Error> {
        let configs = TlsConfigs::build(identity)?;
        tracing::info!(identity = %configs.identity.spiffe_id, "mesh TLS certificate in force");
        self.current.store(Some(Arc::new(configs)));
        Ok(())
    }

    /// Installs every identity `watch` publishes, until its sender goes away. A certificate that
    /// cannot be used is logged and the previous one stays.
    pub async fn follow(self: Arc<Self>, mut watch: IdentityWatch) {
        loop {
            let identity = watch.borrow_and_update().clone();
            if let Some(identity) = identity
                && let Err(err) = self.install(identity)
            {
                tracing::error!(error = %err, "new certificate refused; keeping the previous one");
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    }
}

impl TlsConfigs {
    /// TLS 1.3 server and client configs presenting `identity` and trusting its roots.
    pub fn build(identity: Arc<WorkloadIdentity>) -> Result<TlsConfigs, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for root in &identity.roots {
            roots.add(root.clone()).map_err(|err| Error::Tls(format!("trust bundle: {err}")))?;
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = identity.chain.clone();
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| Error::Tls(format!("client verifier: {err}")))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| Error::Tls(format!("server config: {err}")))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), identity.key.clone_key())
            .map_err(|err| Error::Tls(format!("server certificate: {err}")))?;
        server.alpn_protocols = vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_TCP.to_vec()];
        let verifier = Arc::new(MeshServerVerifier::new(roots, &provider));
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| Error::Tls(format!("client config: {err}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, identity.key.clone_key())
            .map_err(|err| Error::Tls(format!("client certificate: {err}")))?;
        let with_alpn = |protocol: MeshProtocol| {
            let mut config = client.clone();
            config.alpn_protocols = vec![protocol.alpn().to_vec()];
            Arc::new(config)
        };
        Ok(TlsConfigs {
            server: Arc::new(server),
            client_http2: with_alpn(MeshProtocol::Http2),
            client_http1: with_alpn(MeshProtocol::Http1),
            client_tcp: with_alpn(MeshProtocol::Tcp),
            identity,
        })
    }

    /// Runs the server side of a mesh handshake on `stream`.
    pub async fn accept<S>(&self, stream: S) -> Result<(server::TlsStream<S>, MeshProtocol, PeerIdentity), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.server.clone());
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
        let tls = handshake
            .map_err(|_| Error::Tls("mesh handshake timed out".into()))?
            .map_err(|err| Error::Tls(format!("mesh handshake: {err}")))?;
        let (_, connection) = tls.get_ref();
        let protocol = connection
            .alpn_protocol()
            .and_then(MeshProtocol::from_alpn)
            .ok_or_else(|| Error::Tls("mesh handshake: no mesh ALPN agreed".into()))?;
        let leaf = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| Error::Tls("mesh handshake: the client sent no certificate".into()))?;
        let peer = PeerIdentity::of(leaf)?;
        Ok((tls, protocol, peer))
    }

    /// Runs the client side of a mesh handshake on `stream` to `addr`. When `expected` names a SPIFFE
    /// ID, a server presenting another identity is refused.
    pub async fn connect(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        protocol: MeshProtocol,
        expected: Option<&str>,
    ) -> Result<client::TlsStream<TcpStream>, Error> {
        let config = match protocol {
            MeshProtocol::Http2 => &self.client_http2,
            MeshProtocol::Http1 => &self.client_http1,
            MeshProtocol::Tcp => &self.client_tcp,
        };
        let connector = TlsConnector::from(config.clone());
        let name = ServerName::IpAddress(addr.ip().into());
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await;
        let tls = handshake
            .map_err(|_| Error::Tls(format!("mesh handshake with {addr} timed out")))?
            .map_err(|err| Error::Tls(format!("mesh handshake with {addr}: {err}")))?;
        let (_, connection) = tls.get_ref();
        if connection.alpn_protocol() != Some(protocol.alpn()) {
            return Err(Error::Tls(format!("mesh handshake with {addr}: the server did not agree to mesh ALPN")));
        }
        if let Some(expected) = expected.filter(|e| !e.is_empty()) {
            let leaf = connection
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or_else(|| Error::Tls(format!("mesh handshake with {addr}: no server certificate")))?;
            let presented = peer_spiffe_id(leaf)?;
            if presented != expected {
                return Err(Error::Tls(format!("{addr} presented identity {presented}, expected {expected}")));
            }
        }
        Ok(tls)
    }
}

/// Who is on the other end of a mesh connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    /// Hex SHA-256 of the peer's leaf certificate, as `x-forwarded-client-cert` carries it.
    pub cert_hash: String,
}

impl PeerIdentity {
    /// The identity in a peer's leaf certificate.
    pub fn of(leaf: &CertificateDer<'_>) -> Result<PeerIdentity, Error> {
        let spiffe_id = peer_spiffe_id(leaf)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let cert_hash = digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(PeerIdentity { spiffe_id, cert_hash })
    }

    /// Istio's principal form (`cluster.local/ns/x/sa/y`).
    pub fn principal(&self) -> &str {
        principal(&self.spiffe_id)
    }

    /// The peer's namespace.
    pub fn namespace(&self) -> Option<&str> {
        spiffe_namespace(&self.spiffe_id)
    }

    /// The `x-forwarded-client-cert` value Istio's sidecars give the application:
    /// `By=<own id>;Hash=<peer cert sha256>;Subject="";URI=<peer id>`.
    pub fn xfcc(&self, own: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("By={own};Hash={};Subject=\"\";URI={}", self.cert_hash, self.spiffe_id)).ok()
    }
}
