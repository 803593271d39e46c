//! Signing: a checked CA certificate and key ([`Authority`]) turn a CSR and an authenticated
//! [`Identity`] into a short-lived workload certificate. Everything here is pure but for the random
//! serial number; the caller passes the time.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber, SubjectPublicKeyInfo,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer as _;

use super::auth::Identity;
use super::root::CaMaterial;
use crate::Error;

/// Lifetime of a workload certificate unless the CA is told otherwise (`--workload-cert-ttl`).
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far in the past a certificate starts, so a peer whose clock is a little behind accepts it at
/// once. Never more than [`MAX_BACKDATE_FRACTION`] of the lifetime, so a short-lived certificate's
/// half-life (its renewal time) is still ahead when it arrives.
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The largest part of a certificate's lifetime that is backdated.
pub const MAX_BACKDATE_FRACTION: u32 = 10;
/// Bytes of randomness in a serial number (RFC 5280 allows up to 20 octets).
const SERIAL_BYTES: usize = 16;
/// PEM labels of a certificate signing request.
const CSR_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// A certificate just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM: the workload certificate, then the intermediates below the root.
    pub chain_pem: String,
    /// PEM trust bundle.
    pub roots_pem: String,
    /// The certificate's only SAN.
    pub spiffe_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A CA ready to sign: its issuer, the intermediates sent with each certificate, the trust bundle.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM intermediates appended to each workload certificate (empty when a root signs).
    intermediates_pem: String,
    roots_pem: String,
    /// End of the signing certificate's validity: no workload certificate outlives it.
    issuer_not_after: SystemTime,
    trust_domain: String,
    max_ttl: Duration,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("max_ttl", &self.max_ttl)
            .field("issuer_not_after", &self.issuer_not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Checks `material` and makes a CA that issues certificates in `trust_domain` for at most
    /// `max_ttl`: the signing certificate must be a CA, valid at `now`, and match the key.
    pub fn new(material: &CaMaterial, trust_domain: &str, max_ttl: Duration, now: SystemTime) -> Result<Self, Error> {
        if trust_domain.is_empty()
            || !trust_domain.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(Error::ca("trust domain", format!("{trust_domain:?} is not a DNS-like name")));
        }
        if max_ttl < Duration::from_secs(1) {
            return Err(Error::ca("workload certificate lifetime", "must be at least 1s"));
        }
        let certs = pem_blocks(&material.cert_pem, "CA certificate")?;
        let Some(signing) = certs.first() else {
            return Err(Error::ca("CA certificate", "no certificate in the PEM"));
        };
        let (_, cert) = x509_parser::parse_x509_certificate(signing)
            .map_err(|e| Error::ca("CA certificate", format!("not X.509: {e}")))?;
        if !cert.is_ca() {
            return Err(Error::ca("CA certificate", "is not a CA (basicConstraints CA:TRUE is missing)"));
        }
        let at = |time: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(time.timestamp()).unwrap_or(0))
        };
        let (not_before, not_after) = (at(cert.validity().not_before), at(cert.validity().not_after));
        if now < not_before || now >= not_after {
            return Err(Error::ca("CA certificate", format!("not valid now (valid {not_before:?} to {not_after:?})")));
        }
        let key = KeyPair::from_pem(&material.key_pem).map_err(|e| Error::ca("CA key", e))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(Error::ca("CA key", "does not belong to the CA certificate"));
        }
        let issuer =
            Issuer::from_ca_cert_der(&signing.clone().into(), key).map_err(|e| Error::ca("CA certificate", e))?;
        let roots_pem = match &material.roots_pem {
            Some(roots) => roots.clone(),
            None => to_pem(std::slice::from_ref(signing)),
        };
        let roots = pem_blocks(&roots_pem, "trust bundle")?;
        if roots.is_empty() {
            return Err(Error::ca("trust bundle", "no certificate in the PEM"));
        }
        let intermediates: Vec<Vec<u8>> = certs.iter().filter(|der| !roots.contains(der)).cloned().collect();
        Ok(Authority {
            issuer,
            intermediates_pem: to_pem(&intermediates),
            roots_pem,
            issuer_not_after: not_after,
            trust_domain: trust_domain.to_owned(),
            max_ttl,
        })
    }

    /// The trust bundle (PEM roots) the CA's certificates chain to.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// The trust domain of the identities this CA issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The longest lifetime this CA grants.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Signs the public key of `csr_pem` for `identity`, valid from `now` for `requested` (at most the
    /// CA's maximum, which is also the default).
    ///
    /// Only the CSR's public key is used (its signature must verify): its subject, SANs and other
    /// extensions are ignored, and the certificate's only SAN is `identity`'s SPIFFE URI.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        requested: Option<Duration>,
        now: SystemTime,
    ) -> Result<Issued, Error> {
        let public_key = csr_public_key(csr_pem)?;
        let ttl = match requested {
            Some(ttl) if ttl < Duration::from_secs(1) => {
                return Err(Error::bad_request("ttlSeconds", "must be at least 1"));
            }
            Some(ttl) => ttl.min(self.max_ttl),
            None => self.max_ttl,
        };
        let spiffe_id = identity.spiffe_id(&self.trust_domain);
        let uri = spiffe_id.clone().try_into().map_err(|e| Error::ca("SPIFFE ID", e))?;
        self.certify(&public_key, vec![SanType::URI(uri)], spiffe_id, ttl, now)
    }

    /// A key and a certificate for a server of the control plane itself (trellisd's push port):
    /// `identity`'s SPIFFE URI plus `dns_names` and `ips` as SANs, so clients verify it by the name or
    /// address they dialled. Returns the certificate and the PEM private key.
    pub fn issue_serving(
        &self,
        identity: &Identity,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        now: SystemTime,
    ) -> Result<(Issued, String), Error> {
        let key = KeyPair::generate().map_err(|e| Error::ca("serving key", e))?;
        let spiffe_id = identity.spiffe_id(&self.trust_domain);
        let uri = spiffe_id.clone().try_into().map_err(|e| Error::ca("SPIFFE ID", e))?;
        let mut sans = vec![SanType::URI(uri)];
        for name in dns_names {
            let name = name.clone().try_into().map_err(|e| Error::ca(format!("serving name {name:?}"), e))?;
            sans.push(SanType::DnsName(name));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let issued = self.certify(&key, sans, spiffe_id, self.max_ttl, now)?;
        Ok((issued, key.serialize_pem()))
    }

    /// Signs `public_key` with `sans`, valid from a little before `now` for `ttl` (never past the
    /// signing certificate's end).
    fn certify(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        sans: Vec<SanType>,
        spiffe_id: String,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Issued, Error> {
        let backdate = CLOCK_SKEW_BACKDATE.min(ttl / MAX_BACKDATE_FRACTION);
        let not_before = now - backdate;
        let not_after = (now + ttl).min(self.issuer_not_after);
        let mut params = CertificateParams::default();
        // An empty subject: the identity is the SAN, which rcgen then marks critical (RFC 5280).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(public_key, &self.issuer).map_err(|e| Error::ca("signing", e))?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.intermediates_pem),
            roots_pem: self.roots_pem.clone(),
            spiffe_id,
            not_before,
            not_after,
        })
    }
}

/// The public key of a PEM CSR whose signature verifies.
fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, Error> {
    let bad = |message: String| Error::bad_request("csr", message);
    let block = pem::parse(csr_pem)
        .map_err(|e| bad(format!("not a PEM block (expected -----BEGIN CERTIFICATE REQUEST-----): {e}")))?;
    if !CSR_LABELS.contains(&block.tag()) {
        return Err(bad(format!("a PEM {:?}, not a CERTIFICATE REQUEST", block.tag())));
    }
    let (_, csr) =
        X509CertificationRequest::from_der(block.contents()).map_err(|e| bad(format!("not a PKCS#10 request: {e}")))?;
    csr.verify_signature().map_err(|e| bad(format!("its signature does not verify: {e}")))?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| bad(format!("unsupported public key: {e}")))
}

/// The DER contents of every certificate in `text`.
fn pem_blocks(text: &str, what: &str) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(text).map_err(|e| Error::ca(what, format!("not PEM: {e}")))?;
    blocks
        .into_iter()
        .map(|block| match block.tag() {
            "CERTIFICATE" => Ok(block.into_contents()),
            other => Err(Error::ca(what, format!("a PEM {other:?} where certificates belong"))),
        })
        .collect()
}

/// DER certificates as PEM text, with Unix line endings.
fn to_pem(ders: &[Vec<u8>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.iter().map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.clone()), config)).collect()
}

/// A random positive serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; SERIAL_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::ca("serial number", "the system's random source failed"))?;
    // Positive and exactly SERIAL_BYTES long once encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
