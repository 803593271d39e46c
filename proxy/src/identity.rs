//! Where the workload's certificate comes from: the mesh CA in `trellisd`, or files. Either source
//! publishes each new [`WorkloadIdentity`] on a watch channel ([`IdentityWatch`]) that the TLS layer
//! follows, so a new certificate replaces the old one between handshakes and no connection drops.
//!
//! [`CaClient`] makes a new ECDSA P-256 key and a CSR, posts it to `trellisd` (`POST /v1/certificates`
//! on the discovery address, protocol in `trellis_api::ca`) with the token from `--ca-token-file` (in
//! Kubernetes a projected ServiceAccount token, re-read on each request because the kubelet rotates
//! it), and renews at half the certificate's lifetime, a little early with jitter so a fleet started
//! together does not renew together. A failed request is retried with exponential backoff; the old
//! certificate stays published until it expires, and only then is withdrawn. [`IdentityFiles`] reads
//! `--tls-cert`, `--tls-key` and `--tls-roots` and reloads them when they change (users with their own
//! PKI, cert-manager's CSI driver, tests); a bad rewrite keeps the last good identity.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use trellis_api::ca::{CERTIFICATES_PATH, CONTENT_TYPE, CertificateRequest, CertificateResponse, ErrorResponse};

use crate::discovery::{Backoff, Target};
use crate::settings::Settings;
use crate::tls::{IdentityWatch, WorkloadIdentity};
use crate::{Error, drain};

/// Environment variable of `--ca-token-file`.
pub const CA_TOKEN_FILE_ENV: &str = "TRELLIS_CA_TOKEN_FILE";
/// Default of `--ca-token-file`: where the injector mounts the projected token for the CA.
pub const DEFAULT_CA_TOKEN_FILE: &str = trellis_api::ca::KUBERNETES_TOKEN_PATH;
/// First retry delay cap after a failed request; each failure doubles it (uniform below the cap).
pub const RETRY_BASE_DELAY: Duration = Duration::from_secs(1);
/// Largest retry delay cap.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// Renewal comes up to this part of the lifetime before the half-life (jitter).
pub const RENEW_JITTER_FRACTION: f64 = 0.05;
/// How long one certificate request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the CA (a chain and a bundle are a few KB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The publishing side of an [`IdentityWatch`].
pub type IdentitySender = watch::Sender<Option<Arc<WorkloadIdentity>>>;

/// A new identity channel, empty until a certificate arrives.
pub fn channel() -> (IdentitySender, IdentityWatch) {
    watch::channel(None)
}

/// Starts the identity source `settings` name and returns what it publishes: files when `--tls-cert`
/// is given (read once now, so a bad file fails the start), else the CA at `--discovery-address`;
/// with neither, the watch stays empty. Sources stop when `drain` starts.
pub fn start(settings: &Settings, drain: drain::Watch) -> Result<IdentityWatch, Error> {
    let (publish, identity) = channel();
    if let (Some(cert), Some(key), Some(roots)) = (&settings.tls_cert, &settings.tls_key, &settings.tls_roots) {
        let files = IdentityFiles { cert: cert.clone(), key: key.clone(), roots: roots.clone() };
        let first = files.load()?;
        tracing::info!(spiffe_id = %first.spiffe_id, not_after = ?first.not_after, "identity from files");
        publish.send_replace(Some(Arc::new(first)));
        tokio::spawn(files.watch(settings.config_poll, publish, drain));
    } else if let Some(target) = settings.control_plane()? {
        let mut client = CaClient::new(target, settings.ca_token_file.clone())?;
        client.trust_domain = settings.trust_domain.clone();
        client.requested_ttl = settings.cert_ttl;
        tracing::info!(ca = %client.target, token_file = %client.token_file.display(), "identity from the mesh CA");
        tokio::spawn(client.run(publish, drain));
    } else {
        // No source: keep the channel open (empty) until the proxy stops.
        tokio::spawn(async move {
            drain.signaled().await;
            drop(publish);
        });
    }
    Ok(identity)
}

/// When to renew `identity`, from `now`: at its half-life, earlier by up to
/// [`RENEW_JITTER_FRACTION`] of its lifetime as `unit` (uniform in `[0, 1)`) says; at once if that
/// has passed.
pub fn renewal_delay(identity: &WorkloadIdentity, now: SystemTime, unit: f64) -> Duration {
    let lifetime = identity.not_after.duration_since(identity.not_before).unwrap_or(Duration::ZERO);
    let early = lifetime.mul_f64(RENEW_JITTER_FRACTION * unit.clamp(0.0, 1.0));
    let at = identity.renew_at().checked_sub(early).unwrap_or(identity.not_before);
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Asks the mesh CA for certificates.
#[derive(Debug, Clone)]
pub struct CaClient {
    /// `trellisd`'s address (the discovery address).
    pub target: Target,
    /// File holding the bearer token, read on each request.
    pub token_file: PathBuf,
    /// Lifetime asked for; `None` takes the CA's default (24 h).
    pub requested_ttl: Option<Duration>,
    /// Retry schedule after a failure.
    pub backoff: Backoff,
    /// The trust domain the issued identity must belong to (`--trust-domain`); any when `None`.
    pub trust_domain: Option<String>,
}

impl CaClient {
    /// A client of the CA at `target` with the token in `token_file`.
    pub fn new(target: Target, token_file: PathBuf) -> Result<Self, Error> {
        Ok(Self {
            target,
            token_file,
            requested_ttl: None,
            backoff: Backoff { base: RETRY_BASE_DELAY, max: RETRY_MAX_DELAY },
            trust_domain: None,
        })
    }

    /// Keeps `publish` holding a valid certificate until `drain` starts: gets one now, renews each
    /// at [`renewal_delay`], retries failures with backoff, and withdraws a certificate that expired
    /// before a new one came.
    pub async fn run(self, publish: IdentitySender, drain: drain::Watch) {
        let mut attempt: u32 = 0;
        let mut wait = Duration::ZERO;
        loop {
            if !pause(wait, &publish, &drain).await {
                return;
            }
            let fetched = tokio::select! {
                fetched = self.fetch() => fetched,
                () = drain.signaled() => return,
            };
            match fetched {
                Ok(identity) => {
                    attempt = 0;
                    wait = renewal_delay(&identity, SystemTime::now(), fastrand::f64());
                    tracing::info!(
                        spiffe_id = %identity.spiffe_id, not_after = ?identity.not_after, renew_in = ?wait,
                        "new workload certificate"
                    );
                    publish.send_replace(Some(Arc::new(identity)));
                }
                Err(err) => {
                    attempt = attempt.saturating_add(1);
                    wait = self.backoff.delay(attempt, fastrand::f64());
                    let serving = publish.borrow().is_some();
                    tracing::warn!(ca = %self.target, error = %err, attempt, retry_in = ?wait, serving, "certificate request failed");
                }
            }
        }
    }

    /// One request: a new key and CSR, posted with the current token; the identity it comes back as.
    pub async fn fetch(&self) -> Result<WorkloadIdentity, Error> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(Error::io(format!("reading the CA token {}", self.token_file.display())))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Tls(format!("CA token {}: the file is empty", self.token_file.display())));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| Error::Tls(format!("generating a key: {e}")))?;
        let mut params = rcgen::CertificateParams::default();
        // The CA sets the identity; the request names nothing.
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| Error::Tls(format!("making a CSR: {e}")))?;
        let request = CertificateRequest { csr, ttl_seconds: self.requested_ttl.map(|ttl| ttl.as_secs().max(1)) };
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, self.post(token, &request)).await.map_err(|_| Error::Io {
                context: format!("asking the CA at {} for a certificate", self.target),
                source: std::io::ErrorKind::TimedOut.into(),
            })??;
        let identity = WorkloadIdentity::from_pem(
            answer.certificate_chain.as_bytes(),
            key.serialize_pem().as_bytes(),
            answer.trust_bundle.as_bytes(),
        )?;
        let leaf = x509_parser::parse_x509_certificate(identity.chain[0].as_ref())
            .map_err(|e| Error::Tls(format!("certificate from the CA: {e}")))?
            .1;
        if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::Tls("certificate from the CA: it is not for the key this proxy sent".into()));
        }
        if let Some(domain) = &self.trust_domain
            && !identity.spiffe_id.strip_prefix("spiffe://").is_some_and(|rest| rest.starts_with(&format!("{domain}/")))
        {
            return Err(Error::Tls(format!(
                "certificate from the CA: {} is not in trust domain {domain:?} (--trust-domain)",
                identity.spiffe_id
            )));
        }
        Ok(identity)
    }

    /// Posts `request` and reads the answer, or the CA's refusal.
    async fn post(&self, token: &str, request: &CertificateRequest) -> Result<CertificateResponse, Error> {
        let target = &self.target;
        let context = |what: &str| format!("{what} the CA at {target}");
        let io = target.connect(REQUEST_TIMEOUT).await?;
        let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| Error::Http { context: context("HTTP/2 handshake with"), source })?;
        let connection = tokio::spawn(connection);
        let body = serde_json::to_vec(request).map_err(|e| Error::Tls(format!("encoding the request: {e}")))?;
        let request = Request::post(target.uri(CERTIFICATES_PATH))
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Tls(format!("building the request: {e}")))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| Error::Http { context: context("asking"), source })?;
            let status = response.status();
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| Error::Tls(format!("{}: {e}", context("reading the answer of"))))?
                .to_bytes();
            if status != StatusCode::OK {
                let message = serde_json::from_slice::<ErrorResponse>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_owned());
                return Err(Error::Tls(format!("the CA at {target} refused with {status}: {message}")));
            }
            serde_json::from_slice::<CertificateResponse>(&bytes)
                .map_err(|e| Error::Tls(format!("the answer of the CA at {target} is not a certificate response: {e}")))
        }
        .await;
        connection.abort();
        result
    }
}

/// Sleeps `wait` unless `drain` starts (then `false`); withdraws the published identity when it
/// expires meanwhile.
async fn pause(wait: Duration, publish: &IdentitySender, drain: &drain::Watch) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = SystemTime::now();
        let expiry = publish.borrow().as_ref().map(|identity| identity.not_after);
        let until_expiry = match expiry {
            Some(not_after) if not_after <= now => {
                tracing::error!(expired = ?not_after, "the workload certificate expired before a new one came; withdrawn");
                publish.send_replace(None);
                None
            }
            Some(not_after) => not_after.duration_since(now).ok(),
            None => None,
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return true;
        }
        // Wake at the expiry if it comes first (plus a millisecond, so it has passed).
        let step = until_expiry.map_or(remaining, |d| (d + Duration::from_millis(1)).min(remaining));
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = drain.signaled() => return false,
        }
    }
}

/// A certificate chain, its key and the trust bundle as three PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub roots: PathBuf,
}

impl IdentityFiles {
    /// Reads the three files as a [`WorkloadIdentity`].
    pub fn load(&self) -> Result<WorkloadIdentity, Error> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())));
        WorkloadIdentity::from_pem(&read(&self.cert)?, &read(&self.key)?, &read(&self.roots)?)
            .map_err(|err| Error::Tls(format!("{}: {err}", self.cert.display())))
    }

    /// Reloads the files whenever one changes (checked every `poll`), publishing each identity that
    /// reads well and keeping the last good one otherwise, until `drain` starts.
    pub async fn watch(self, poll: Duration, publish: IdentitySender, drain: drain::Watch) {
        let mut seen = self.stamp();
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = drain.signaled() => return,
            }
            let stamp = self.stamp();
            if stamp == seen {
                continue;
            }
            seen = stamp;
            match self.load() {
                Ok(identity) => {
                    tracing::info!(spiffe_id = %identity.spiffe_id, not_after = ?identity.not_after, "identity files reloaded");
                    publish.send_replace(Some(Arc::new(identity)));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "identity files changed but cannot be used; keeping the last good ones")
                }
            }
        }
    }

    /// Modification time and length of each file (following symlinks, as Kubernetes volumes swap them).
    fn stamp(&self) -> [Option<(SystemTime, u64)>; 3] {
        [&self.cert, &self.key, &self.roots]
            .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
    }
}

#[cfg(test)]
mod tests;
