//! JWT validation for an inbound port's RequestAuthentication providers, as Envoy's `jwt_authn` filter
//! does it for Istio: [`JwtAuthenticator::compile`] turns the port's [`JwtProvider`]s (with their JWKS
//! inline; `trellisd` fetches `jwksUri` and fills it in) into key tables once per config, and
//! [`JwtAuthenticator::authenticate`] judges one request: no token anywhere is `Ok(None)` (authorization
//! decides later, `requestPrincipals: ["*"]` requires one), every token found must verify (`Err` is a 401
//! whose body is Envoy's text, [`JwtError::body`]), and a valid one is a [`VerifiedJwt`].
//! [`JwtAuthenticator::apply`] then makes the header side effects: the token is removed unless
//! `forwardOriginalToken`, and `outputPayloadToHeader` / `outputClaimToHeaders` are set.
//!
//! The issuer named in a token picks the provider (several with that issuer: any one may validate it).
//! Accepted algorithms are RS256/384/512, PS256/384/512, ES256/384 and EdDSA (Ed25519); `none` and every
//! HMAC algorithm are refused, so a public key can never be used as a shared secret. `kid` selects the
//! key; a token without one tries every key of its algorithm's type. `exp` and `nbf` allow
//! [`CLOCK_SKEW_SECONDS`]; `aud` must name one of the provider's audiences when it lists any.

mod challenge;

pub use challenge::{BARE_CHALLENGE, www_authenticate};

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use trellis_api::proxy_config::JwtProvider;

use crate::Error;

/// Seconds of clock difference tolerated on `exp` and `nbf` (Envoy's default `clock_skew_seconds`).
pub const CLOCK_SKEW_SECONDS: u64 = 60;
/// Claims whose string value is always a space-separated list (Istio's defaults for `spaceDelimitedClaims`).
pub const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];
/// Status of a request whose token does not verify.
pub const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;

/// base64url, with or without padding (tokens in the wild use both).
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a request's token was refused (a 401). `Display` is the detail for logs; [`JwtError::body`] is
/// the response body, Envoy's wording, as Istio users see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not `header.payload.signature` of base64url JSON objects.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is `none`, an HMAC algorithm, or unknown.
    #[error("alg {0:?} is not accepted")]
    Algorithm(String),
    /// No provider reading the token's location has the token's issuer.
    #[error("issuer {0:?} is not configured for where the token was found")]
    UnknownIssuer(String),
    /// The provider's keys are not known yet (its `jwksUri` was not fetched).
    #[error("the keys of issuer {0:?} are not available yet")]
    JwksUnavailable(String),
    /// No key of the provider fits the token's `kid` and `alg`.
    #[error("no key of issuer {issuer:?} matches kid {kid:?} and alg {alg:?}")]
    NoMatchingKey { issuer: String, kid: Option<String>, alg: Algorithm },
    /// The signature does not verify with any fitting key.
    #[error("the signature does not verify")]
    BadSignature,
    /// `exp` is past, beyond the clock skew.
    #[error("expired at {exp}, now is {now}")]
    Expired { exp: u64, now: u64 },
    /// `nbf` is ahead, beyond the clock skew.
    #[error("not valid before {nbf}, now is {now}")]
    NotYetValid { nbf: u64, now: u64 },
    /// `aud` names none of the provider's audiences.
    #[error("audiences {0:?} are not allowed")]
    Audience(Vec<String>),
}

impl JwtError {
    /// The 401 response body: the text Envoy's `jwt_authn` sends for the same failure.
    pub fn body(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            JwtError::Algorithm(_) => "Jwt header [alg] is not supported",
            JwtError::UnknownIssuer(_) => "Jwt issuer is not configured",
            JwtError::JwksUnavailable(_) => "Jwks remote fetch is failed",
            JwtError::NoMatchingKey { .. } => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::BadSignature => "Jwt verification fails",
            JwtError::Expired { .. } => "Jwt is expired",
            JwtError::NotYetValid { .. } => "Jwt not yet valid",
            JwtError::Audience(_) => "Audiences in Jwt are not allowed",
        }
    }
}

/// A token that verified: who it names and what it claims.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    /// Index of the provider (in the compiled `JwtProvider` list) that verified it.
    pub provider: usize,
    pub issuer: String,
    /// `iss/sub`, Istio's request principal; `None` when the token has no `sub`.
    pub principal: Option<String>,
    /// The whole payload.
    pub claims: Value,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// `azp`, the authorized presenter.
    pub presenter: Option<String>,
    /// The payload segment as it came (base64url), for `outputPayloadToHeader`.
    payload_segment: String,
    /// Where the request's tokens were found that are to be removed before forwarding.
    remove: Vec<usize>,
    /// Claims split on spaces besides [`SPACE_DELIMITED_CLAIMS`].
    space_delimited: Vec<String>,
}

impl VerifiedJwt {
    /// The claim at `path` (nested keys, `["org", "tenant"]`), if present.
    pub fn claim(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(&self.claims, |value, key| value.get(*key))
    }

    /// The string values of the claim at `path`, as Istio's `request.auth.claims` matches them: a string
    /// (split on spaces when it is `scope`, `permission` or a configured space-delimited claim), or each
    /// string of a list.
    pub fn claim_values(&self, path: &[&str]) -> Vec<String> {
        let split = path.last().is_some_and(|last| {
            SPACE_DELIMITED_CLAIMS.contains(last) || self.space_delimited.iter().any(|c| c == last)
        });
        match self.claim(path) {
            Some(Value::String(s)) if split => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

/// The compiled JWT providers of one inbound port.
#[derive(Debug, Default)]
pub struct JwtAuthenticator {
    providers: Vec<Provider>,
    /// Every distinct place a token is read from, with the providers reading there.
    locations: Vec<Location>,
}

#[derive(Debug)]
struct Provider {
    issuer: String,
    audiences: Vec<String>,
    /// `None` until `jwksUri` was fetched: every token of this issuer then fails.
    keys: Option<Vec<Key>>,
    forward_original_token: bool,
    output_payload_to_header: Option<HeaderName>,
    output_claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    space_delimited_claims: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

#[derive(Debug)]
struct Location {
    source: Source,
    providers: Vec<usize>,
}

/// One usable public key of a JWKS.
struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when the JWKS names one: then only that algorithm may use it.
    alg: Option<Algorithm>,
    /// The algorithms this key can verify, by its type and curve.
    fits: &'static [Algorithm],
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).field("fits", &self.fits).finish()
    }
}

const RSA_ALGORITHMS: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// A token found in a request, with the locations it was found at.
struct Found {
    token: String,
    locations: Vec<usize>,
}

impl JwtAuthenticator {
    /// Compiles a port's providers: parses inline JWKS (keys of unsupported types or curves, HMAC keys
    /// and encryption keys are left out) and the header names. A provider without `jwks` is kept with
    /// no keys, so its tokens fail with [`JwtError::JwksUnavailable`]. Errors name the issuer and field.
    pub fn compile(providers: &[JwtProvider]) -> Result<Self, Error> {
        let mut compiled = Self::default();
        for (index, provider) in providers.iter().enumerate() {
            let origin = format!("jwt provider {:?}", provider.issuer);
            let bad = |message: String| Error::Config { origin: origin.clone(), message };
            let header = |field: &str, name: &str| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(format!("{field}: {name:?} is not a header name")))
            };
            let keys = provider.jwks.as_deref().map(parse_jwks).transpose().map_err(|e| bad(format!("jwks: {e}")))?;
            let output_payload_to_header = provider
                .output_payload_to_header
                .as_deref()
                .map(|name| header("outputPayloadToHeader", name))
                .transpose()?;
            let mut output_claim_to_headers = Vec::new();
            for output in &provider.output_claim_to_headers {
                let path = output.claim.split('.').map(str::to_owned).collect();
                output_claim_to_headers.push((header("outputClaimToHeaders", &output.header)?, path));
            }
            for from in &provider.from_headers {
                let name = header("fromHeaders", &from.name)?;
                compiled.read_at(Source::Header { name, prefix: from.prefix.clone() }, index);
            }
            for param in &provider.from_params {
                compiled.read_at(Source::Param(param.clone()), index);
            }
            for cookie in &provider.from_cookies {
                compiled.read_at(Source::Cookie(cookie.clone()), index);
            }
            compiled.providers.push(Provider {
                issuer: provider.issuer.clone(),
                audiences: provider.audiences.clone(),
                keys,
                forward_original_token: provider.forward_original_token,
                output_payload_to_header,
                output_claim_to_headers,
                space_delimited_claims: provider.space_delimited_claims.clone(),
            });
        }
        Ok(compiled)
    }

    fn read_at(&mut self, source: Source, provider: usize) {
        match self.locations.iter_mut().find(|l| l.source == source) {
            Some(location) => location.providers.push(provider),
            None => self.locations.push(Location { source, providers: vec![provider] }),
        }
    }

    /// True when the port has no JWT providers (nothing to check, nothing to strip).
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Judges a request now; see [`JwtAuthenticator::authenticate_at`].
    pub fn authenticate(&self, parts: &http::request::Parts) -> Result<Option<VerifiedJwt>, JwtError> {
        self.authenticate_at(&parts.headers, &parts.uri, SystemTime::now())
    }

    /// Judges a request at time `now`: `Ok(None)` when it carries no token at any provider's location,
    /// `Ok(Some)` when every token it carries verifies (the first one found names the identity), `Err`
    /// when one does not. Every token must verify: a good token beside a bad one must not let the bad
    /// one through to the application.
    pub fn authenticate_at(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        now: SystemTime,
    ) -> Result<Option<VerifiedJwt>, JwtError> {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut first: Option<VerifiedJwt> = None;
        let mut remove = Vec::new();
        for found in self.find_tokens(headers, uri) {
            let verified = self.verify(&found, now)?;
            if !self.providers[verified.provider].forward_original_token {
                remove.extend(found.locations.iter().copied());
            }
            first.get_or_insert(verified);
        }
        Ok(first.map(|mut verified| {
            verified.remove = remove;
            verified
        }))
    }

    /// The request's side effects: headers named by any provider's outputs are cleared (a client cannot
    /// send its own), and with a verified token its locations are cleared unless the provider forwards
    /// the token, and its payload and claims are written to the configured headers.
    pub fn apply(&self, parts: &mut http::request::Parts, verified: Option<&VerifiedJwt>) {
        for provider in &self.providers {
            for name in
                provider.output_payload_to_header.iter().chain(provider.output_claim_to_headers.iter().map(|o| &o.0))
            {
                parts.headers.remove(name);
            }
        }
        let Some(verified) = verified else { return };
        for &location in &verified.remove {
            match &self.locations[location].source {
                Source::Header { name, .. } => {
                    parts.headers.remove(name);
                }
                Source::Param(param) => remove_param(&mut parts.uri, param),
                Source::Cookie(cookie) => remove_cookie(&mut parts.headers, cookie),
            }
        }
        let provider = &self.providers[verified.provider];
        if let Some(name) = &provider.output_payload_to_header
            && let Ok(value) = HeaderValue::from_str(&verified.payload_segment)
        {
            parts.headers.insert(name.clone(), value);
        }
        for (name, path) in &provider.output_claim_to_headers {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(value) = verified.claim(&path).and_then(claim_header_value) {
                parts.headers.insert(name.clone(), value);
            }
        }
    }

    /// Every distinct token at the providers' locations, in location order.
    fn find_tokens(&self, headers: &HeaderMap, uri: &Uri) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        for (index, location) in self.locations.iter().enumerate() {
            for token in extract(&location.source, headers, uri) {
                match found.iter_mut().find(|f| f.token == token) {
                    Some(f) => f.locations.push(index),
                    None => found.push(Found { token, locations: vec![index] }),
                }
            }
        }
        found
    }

    /// Verifies one token with the providers of its issuer that read where it was found.
    fn verify(&self, found: &Found, now: u64) -> Result<VerifiedJwt, JwtError> {
        let token = Token::parse(&found.token)?;
        let candidates: Vec<usize> = (0..self.providers.len())
            .filter(|p| found.locations.iter().any(|l| self.locations[*l].providers.contains(p)))
            .filter(|p| token.issuer.as_deref() == Some(self.providers[*p].issuer.as_str()))
            .collect();
        let mut failure = JwtError::UnknownIssuer(token.issuer.clone().unwrap_or_default());
        for (i, index) in candidates.into_iter().enumerate() {
            match self.verify_with(&token, index, now) {
                Ok(verified) => return Ok(verified),
                Err(err) if i == 0 => failure = err,
                Err(_) => {}
            }
        }
        Err(failure)
    }

    fn verify_with(&self, token: &Token<'_>, index: usize, now: u64) -> Result<VerifiedJwt, JwtError> {
        let provider = &self.providers[index];
        let keys = provider.keys.as_ref().ok_or_else(|| JwtError::JwksUnavailable(provider.issuer.clone()))?;
        // Envoy's rule: a key with a kid is only used for a token with that kid (or none); a key with an
        // alg only for that alg.
        let fitting: Vec<&Key> = keys
            .iter()
            .filter(|k| k.fits.contains(&token.alg))
            .filter(|k| k.alg.is_none_or(|alg| alg == token.alg))
            .filter(|k| match (&token.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        if fitting.is_empty() {
            return Err(JwtError::NoMatchingKey {
                issuer: provider.issuer.clone(),
                kid: token.kid.clone(),
                alg: token.alg,
            });
        }
        let verifies = |key: &&Key| {
            jsonwebtoken::crypto::verify(token.signature, token.message.as_bytes(), &key.key, token.alg)
                .unwrap_or(false)
        };
        if !fitting.iter().any(verifies) {
            return Err(JwtError::BadSignature);
        }
        let claims = &token.claims;
        if let Some(exp) = numeric_claim(claims, "exp")?
            && now > exp.saturating_add(CLOCK_SKEW_SECONDS)
        {
            return Err(JwtError::Expired { exp, now });
        }
        if let Some(nbf) = numeric_claim(claims, "nbf")?
            && now.saturating_add(CLOCK_SKEW_SECONDS) < nbf
        {
            return Err(JwtError::NotYetValid { nbf, now });
        }
        let audiences = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        if !provider.audiences.is_empty() && !audiences.iter().any(|a| provider.audiences.contains(a)) {
            return Err(JwtError::Audience(audiences));
        }
        let subject = claims.get("sub").and_then(Value::as_str);
        Ok(VerifiedJwt {
            provider: index,
            issuer: provider.issuer.clone(),
            principal: subject.map(|sub| format!("{}/{sub}", provider.issuer)),
            claims: claims.clone(),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
            payload_segment: token.payload.to_owned(),
            remove: Vec::new(),
            space_delimited: provider.space_delimited_claims.clone(),
        })
    }
}

/// A token split and decoded, its signature not yet checked.
struct Token<'a> {
    alg: Algorithm,
    kid: Option<String>,
    issuer: Option<String>,
    claims: Value,
    /// `header.payload`, what the signature covers.
    message: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Token<'a> {
    fn parse(token: &'a str) -> Result<Self, JwtError> {
        let (message, signature) = token.rsplit_once('.').ok_or_else(|| JwtError::Malformed("no dots".into()))?;
        let (header, payload) =
            message.split_once('.').ok_or_else(|| JwtError::Malformed("one dot, three segments are needed".into()))?;
        if payload.contains('.') {
            return Err(JwtError::Malformed("more than three segments".into()));
        }
        let header = segment_json(header, "header")?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or_default();
        let alg = match alg_name.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
                return Err(JwtError::Algorithm(alg_name.to_owned()));
            }
            Ok(alg) => alg,
        };
        let claims = segment_json(payload, "payload")?;
        Ok(Token {
            alg,
            kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
            issuer: claims.get("iss").and_then(Value::as_str).map(str::to_owned),
            claims,
            message,
            payload,
            signature,
        })
    }
}

/// A base64url segment holding a JSON object.
fn segment_json(segment: &str, what: &str) -> Result<Value, JwtError> {
    let bytes = BASE64URL.decode(segment).map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
        Err(e) => Err(JwtError::Malformed(format!("{what} is not JSON: {e}"))),
    }
}

/// A time claim: absent, or a number of seconds (fractions are cut).
fn numeric_claim(claims: &Value, name: &str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            Ok(Some(n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)).unwrap_or_default()))
        }
        Some(_) => Err(JwtError::Malformed(format!("{name} is not a number"))),
    }
}

/// The usable signing keys of a JSON Web Key Set.
fn parse_jwks(jwks: &str) -> Result<Vec<Key>, String> {
    let value: Value = serde_json::from_str(jwks).map_err(|e| format!("not JSON: {e}"))?;
    let Some(Value::Array(entries)) = value.get("keys") else {
        return Err("not a JSON Web Key Set (an object with a keys array)".to_owned());
    };
    let mut keys = Vec::new();
    for entry in entries {
        // Keys of types, curves or algorithms this proxy cannot verify are skipped, as Envoy does.
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else { continue };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match entry.get("alg").and_then(Value::as_str) {
            None => None,
            Some(name) => match name.parse::<Algorithm>() {
                Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => continue,
                Ok(alg) => Some(alg),
            },
        };
        let fits: &'static [Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGORITHMS,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        keys.push(Key { kid: jwk.common.key_id.clone(), alg, fits, key });
    }
    Ok(keys)
}

/// Tokens at one location of a request.
fn extract(source: &Source, headers: &HeaderMap, uri: &Uri) -> Vec<String> {
    match source {
        Source::Header { name, prefix } => headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| {
                if prefix.is_empty() {
                    return Some(value.trim());
                }
                // Envoy's rule: the token is the run of base64url characters and dots after the prefix.
                let start = value.find(prefix.as_str())? + prefix.len();
                let rest = &value[start..];
                let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
                Some(&rest[..end])
            })
            .filter(|token| !token.is_empty())
            .map(str::to_owned)
            .collect(),
        Source::Param(param) => query_pairs(uri)
            .filter(|(key, value)| key == param && !value.is_empty())
            .map(|(_, value)| value.to_owned())
            .collect(),
        Source::Cookie(cookie) => cookies(headers)
            .filter(|(name, value)| name == cookie && !value.is_empty())
            .map(|(_, value)| value.trim_matches('"').to_owned())
            .collect(),
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '/')
}

fn query_pairs(uri: &Uri) -> impl Iterator<Item = (&str, &str)> {
    uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

/// Drops the query parameter `param` from `uri`.
fn remove_param(uri: &mut Uri, param: &str) {
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(k, _)| k) != param).collect();
    let path_and_query =
        if kept.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), kept.join("&")) };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(rebuilt) = Uri::from_parts(parts) {
            *uri = rebuilt;
        }
    }
}

/// Drops the cookie `cookie` from the request's `cookie` headers (and a header it leaves empty).
fn remove_cookie(headers: &mut HeaderMap, cookie: &str) {
    let rewritten: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty() && c.split_once('=').map_or(*c, |(name, _)| name) != cookie)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(COOKIE);
    for value in rewritten {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(COOKIE, value);
        }
    }
}

/// A claim as a header value, as Envoy's `claim_to_headers` writes it: strings as they are, numbers and
/// booleans in JSON, lists of those joined with commas; objects are not written.
fn claim_header_value(claim: &Value) -> Option<HeaderValue> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    let text = match claim {
        Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(","),
        other => scalar(other)?,
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests;
