//! Shared by the webhook's HTTPS tests and its bench driver: a test CA (rcgen) issuing serving
//! certificates for `localhost`, and an HTTPS client (rustls, ring) that trusts only that CA and
//! keeps one connection alive.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA that issues `localhost` serving certificates.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM.
pub struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Serving {
    /// The certificate's DER, to compare with what a server presents.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("a PEM certificate").to_vec()
    }

    /// Writes `cert.pem` and `key.pem` into `dir`, each replaced in one rename.
    pub fn write(&self, dir: &Path) {
        for (name, text) in [("key.pem", &self.key_pem), ("cert.pem", &self.cert_pem)] {
            let staging = dir.join(format!(".{name}.new"));
            std::fs::write(&staging, text).expect("write a PEM file");
            std::fs::rename(&staging, dir.join(name)).expect("rename a PEM file into place");
        }
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, "trellis webhook test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A serving certificate for `localhost` and 127.0.0.1 named `name` (its common name).
    pub fn serving(&self, name: &str) -> Serving {
        let key = KeyPair::generate().expect("serving key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Serving { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A TLS connector trusting only this CA, offering HTTP/1.1.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("the CA certificate");
        roots.add(ca).expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// One kept-alive HTTPS connection to the webhook.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    /// The certificate the server presented (leaf, DER).
    pub served: Vec<u8>,
}

impl Client {
    pub async fn connect(ca: &TestCa, addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect to the webhook");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("localhost").expect("a server name");
        let tls = ca.connector().connect(name, tcp).await.expect("TLS handshake with the test CA's certificate");
        let served = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("a certificate").to_vec();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("HTTP/1.1");
        tokio::spawn(connection);
        Client { sender, served }
    }

    /// `method path` with `body`; the status and the response body.
    pub async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.sender.ready().await.expect("the connection is usable");
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = self.sender.send_request(request).await.expect("a response");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("the body").to_bytes().to_vec();
        (status, body)
    }
}
