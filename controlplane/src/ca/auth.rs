//! Who is asking: a bearer token becomes a workload [`Identity`] (namespace and service account).
//!
//! Kubernetes mode asks the API server (TokenReview) about a projected ServiceAccount token with
//! audience `trellis-ca`. Local mode keeps one random bootstrap token per workload in a folder,
//! `tokens/<namespace>.<serviceAccount>.token` under the CA folder, readable by the owner only:
//! `trellis run` mints them ([`mint_token`]) and hands each proxy the path of its own; `trellisd`
//! reads the folder on each request, so workloads started later are known at once.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::root::{create_private_dir, write_private_file};
use crate::Error;

/// Folder of bootstrap tokens, under the CA folder.
pub const TOKENS_DIR: &str = "tokens";
/// Suffix of a bootstrap token file: `<namespace>.<serviceAccount>.token`.
pub const TOKEN_SUFFIX: &str = ".token";
/// Random bytes in a bootstrap token (written as hex).
const TOKEN_BYTES: usize = 32;
/// Prefix of a ServiceAccount's user name in a TokenReview.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

/// A workload identity: the namespace and service account a certificate is issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    /// An identity, if both names are Kubernetes names (a namespace is a DNS label; a service account a
    /// DNS subdomain), so neither can change the shape of the SPIFFE URI.
    pub fn new(namespace: &str, service_account: &str) -> Result<Identity, String> {
        let label = |name: &str| {
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-')
        };
        if !label(namespace) {
            return Err(format!("namespace {namespace:?} is not a Kubernetes namespace name"));
        }
        if service_account.len() > 253 || !service_account.split('.').all(label) {
            return Err(format!("service account {service_account:?} is not a Kubernetes name"));
        }
        Ok(Identity { namespace: namespace.to_owned(), service_account: service_account.to_owned() })
    }

    /// `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

/// How the CA checks tokens.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Local mode: the bootstrap tokens in this folder.
    LocalTokens(PathBuf),
    /// Kubernetes mode: TokenReview.
    TokenReview(TokenReviewer),
}

impl Authenticator {
    /// The identity `token` proves, [`Error::Unauthenticated`] when it proves none, or
    /// [`Error::Ca`] when it cannot be checked (the API server is unreachable).
    pub async fn authenticate(&self, token: &str) -> Result<Identity, Error> {
        if token.is_empty() {
            return Err(Error::Unauthenticated("the bearer token is empty".to_owned()));
        }
        match self {
            Authenticator::LocalTokens(dir) => {
                let (dir, token) = (dir.clone(), token.to_owned());
                tokio::task::spawn_blocking(move || find_token(&dir, &token))
                    .await
                    .map_err(|e| Error::ca("reading bootstrap tokens", e))?
            }
            Authenticator::TokenReview(reviewer) => reviewer.review(token).await,
        }
    }
}

/// Where the bootstrap token of `identity` is kept under the CA folder `ca_dir`.
pub fn token_path(ca_dir: &Path, identity: &Identity) -> PathBuf {
    ca_dir.join(TOKENS_DIR).join(format!("{}.{}{TOKEN_SUFFIX}", identity.namespace, identity.service_account))
}

/// Makes a new random bootstrap token for `identity` (replacing an older one) and returns the path of
/// its file, for `trellis run` to pass to the workload's proxy (`--ca-token-file`).
pub fn mint_token(ca_dir: &Path, identity: &Identity) -> Result<PathBuf, Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::ca("bootstrap token", "the system's random source failed"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = ca_dir.join(TOKENS_DIR);
    create_private_dir(&dir)?;
    let path = token_path(ca_dir, identity);
    // Written beside and renamed over, so trellisd never reads half a token.
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    write_private_file(&partial, &token)?;
    std::fs::rename(&partial, &path).map_err(|e| Error::ca(path.display().to_string(), e))?;
    Ok(path)
}

/// The identity whose bootstrap token in `dir` is `token`.
fn find_token(dir: &Path, token: &str) -> Result<Identity, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Unauthenticated("no bootstrap token is known".to_owned()));
        }
        Err(err) => return Err(Error::ca(dir.display().to_string(), err)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(TOKEN_SUFFIX)) else { continue };
        let Ok(known) = std::fs::read_to_string(entry.path()) else { continue };
        if !same_secret(known.trim().as_bytes(), token.as_bytes()) {
            continue;
        }
        let identity = stem
            .split_once('.')
            .ok_or_else(|| format!("is not <namespace>.<serviceAccount>{TOKEN_SUFFIX}"))
            .and_then(|(namespace, service_account)| Identity::new(namespace, service_account));
        return identity.map_err(|e| Error::ca(entry.path().display().to_string(), e));
    }
    Err(Error::Unauthenticated("the bootstrap token is not known".to_owned()))
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Asks the Kubernetes API server who a ServiceAccount token belongs to.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer").field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// A reviewer accepting tokens for `audience` (`trellis_api::ca::AUDIENCE`).
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self { client, audience: audience.into() }
    }

    /// Posts a TokenReview of `token` for the audience and reads the ServiceAccount it names.
    async fn review(&self, token: &str) -> Result<Identity, Error> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: Some(vec![self.audience.clone()]) },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = reviews.create(&PostParams::default(), &review).await.map_err(|e| Error::ca("TokenReview", e))?;
        identity_of_review(&answer, &self.audience)
    }
}

/// The ServiceAccount a TokenReview's status authenticates for `audience`.
pub fn identity_of_review(review: &TokenReview, audience: &str) -> Result<Identity, Error> {
    let refuse = |message: String| Err(Error::Unauthenticated(message));
    let Some(status) = &review.status else { return refuse("the TokenReview has no status".to_owned()) };
    if status.authenticated != Some(true) {
        let reason = status.error.as_deref().filter(|e| !e.is_empty()).unwrap_or("the token is not valid");
        return refuse(format!("the API server did not authenticate the token: {reason}"));
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return refuse(format!("the token is not for audience {audience:?} (it is for {audiences:?})"));
    }
    let user = status.user.as_ref().and_then(|u| u.username.as_deref()).unwrap_or_default();
    let Some((namespace, service_account)) =
        user.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX).and_then(|rest| rest.split_once(':'))
    else {
        return refuse(format!("user {user:?} is not a ServiceAccount"));
    };
    Identity::new(namespace, service_account).map_err(Error::Unauthenticated)
}
