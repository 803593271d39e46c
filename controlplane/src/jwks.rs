//! The JWKS fetcher: `trellisd` fetches every `jwksUri` the RequestAuthentication policies name, keeps
//! the key sets, refreshes them, and fills them into the translated configs as inline `jwks`, so proxies
//! never fetch (as istiod does). [`JwksCache::set_wanted`] says which URIs are needed (a task per URI
//! fetches it, refetches every [`REFRESH_INTERVAL`], and retries with doubling backoff from
//! [`RETRY_INITIAL`] up to [`RETRY_MAX`] while it is unreachable); [`JwksCache::get`] is the last good
//! key set; [`JwksCache::subscribe`] moves whenever one arrives or changes (key rotation), so configs
//! are pushed again. A failed refresh keeps the last good key set; a key set never fetched stays absent,
//! and the proxies refuse the issuer's tokens until it arrives.
//!
//! A rule with neither `jwks` nor `jwksUri` gets its keys by OpenID discovery, as Istio does: its
//! source is the issuer's `/.well-known/openid-configuration` ([`key_source`]), whose `jwks_uri`
//! the fetcher follows.
//!
//! [`wanted_uris`] is the pure part: the key sources of the index's RequestAuthentications.
//! [`JwksCache::follow`] ties both to a [`SharedIndex`] for the `trellisd` binary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trellis_api::istio::request_authentication::JwtRule;
use trellis_api::object::Object;
use trellis_api::proxy_config::ProxyConfig;

use crate::index::{Index, Kind};
use crate::sources::SharedIndex;

/// How often a fetched key set is fetched again (istiod's default JWKS refresh interval).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// Wait before the first retry of a failed fetch; it doubles on each further failure.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing fetch.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Time limit of one fetch when the rule sets no `timeout` (Istio's default `jwtRules[].timeout`).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The fetcher's timing; [`Timing::default`] uses the named defaults above (tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub refresh: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { refresh: REFRESH_INTERVAL, retry_initial: RETRY_INITIAL, retry_max: RETRY_MAX, timeout: FETCH_TIMEOUT }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The fetched key sets by URI; cheap to clone (one shared state).
#[derive(Debug, Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    timing: Timing,
    client: HttpClient,
    state: Mutex<State>,
    /// Moves whenever a key set arrives or changes.
    generation: watch::Sender<u64>,
}

/// The wanted key sources: each URI with the fetch time limit its rules set (the shortest, when
/// several rules share it), `None` for [`Timing::timeout`].
pub type Wanted = BTreeMap<String, Option<Duration>>;

#[derive(Debug, Default)]
struct State {
    /// The fetch task of each wanted URI.
    tasks: BTreeMap<String, JoinHandle<()>>,
    /// The rules' own fetch time limit of each wanted URI.
    timeouts: BTreeMap<String, Option<Duration>>,
    /// The last good key set of each URI.
    sets: BTreeMap<String, Arc<str>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in state.tasks.values() {
            task.abort();
        }
    }
}

impl JwksCache {
    /// An empty cache fetching over http and https; https trusts the system's root certificates (without
    /// any, https fetches fail with a clear error and http still works).
    pub fn new(timing: Timing) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(connector());
        Self { inner: Arc::new(Inner { timing, client, state: Mutex::default(), generation: watch::Sender::new(0) }) }
    }

    /// The last good key set fetched from `uri`, if one arrived.
    pub fn get(&self, uri: &str) -> Option<Arc<str>> {
        self.state().sets.get(uri).cloned()
    }

    /// A number that moves whenever a key set arrives or changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Fetches exactly `uris` from now on, each within its time limit: new ones start fetching at once,
    /// ones no longer wanted stop and are forgotten. Call it inside the tokio runtime (it spawns the
    /// fetch tasks).
    pub fn set_wanted(&self, uris: &Wanted) {
        let mut state = self.state();
        state.timeouts.clone_from(uris);
        let gone: Vec<String> = state.tasks.keys().filter(|uri| !uris.contains_key(*uri)).cloned().collect();
        for uri in gone {
            if let Some(task) = state.tasks.remove(&uri) {
                task.abort();
            }
            state.sets.remove(&uri);
        }
        for uri in uris.keys() {
            if !state.tasks.contains_key(uri) {
                let task = tokio::spawn(fetch_loop(Arc::downgrade(&self.inner), uri.clone()));
                state.tasks.insert(uri.clone(), task);
            }
        }
    }

    /// Fills `jwks` of every provider of `config` that has a `jwksUri` and no inline key set, from the
    /// cache; a provider whose key set has not arrived stays without, and proxies refuse its tokens.
    pub fn fill(&self, config: &mut ProxyConfig) {
        let state = self.state();
        for provider in config.inbound.iter_mut().flat_map(|listener| listener.jwt.iter_mut()) {
            if provider.jwks.is_none()
                && let Some(set) = provider.jwks_uri.as_deref().and_then(|uri| state.sets.get(uri))
            {
                provider.jwks = Some(set.to_string());
            }
        }
    }

    /// Keeps the wanted URIs equal to [`wanted_uris`] of `index`, from now on, and returns a generation
    /// that moves whenever the index's or a key set's does: what a config source that calls
    /// [`JwksCache::fill`] returns from `subscribe`. Call it inside the tokio runtime.
    pub fn follow(&self, index: SharedIndex) -> watch::Receiver<u64> {
        let (combined, receiver) = watch::channel(0u64);
        let mut indexes = index.subscribe();
        let mut sets = self.subscribe();
        let cache = self.clone();
        cache.set_wanted(&wanted_uris(&index.read()));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = indexes.changed() => {
                        if changed.is_err() { return }
                        cache.set_wanted(&wanted_uris(&index.read()));
                    }
                    changed = sets.changed() => if changed.is_err() { return },
                    () = combined.closed() => return,
                }
                combined.send_modify(|generation| *generation += 1);
            }
        });
        receiver
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Path of an issuer's OpenID Provider configuration (OpenID Connect Discovery 1.0).
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";

/// Where a JWT rule's keys are fetched from: its `jwksUri` (either spelling); with neither `jwks`
/// nor `jwksUri`, its issuer's OpenID configuration when the issuer is an http(s) URL; else nothing.
pub fn key_source(rule: &JwtRule) -> Option<String> {
    let uri = rule.jwks_uri.as_ref().or(rule.jwks_uri_snake_case.as_ref()).filter(|uri| !uri.is_empty());
    if let Some(uri) = uri {
        return Some(uri.clone());
    }
    if rule.jwks.as_ref().is_some_and(|jwks| !jwks.is_empty()) {
        return None;
    }
    let issuer = rule.issuer.as_deref()?.trim_end_matches('/');
    (issuer.starts_with("https://") || issuer.starts_with("http://"))
        .then(|| format!("{issuer}{OPENID_CONFIGURATION_PATH}"))
}

/// The key sources ([`key_source`]) of the index's valid RequestAuthentications, each with the
/// shortest `timeout` of the rules that use it.
pub fn wanted_uris(index: &Index) -> Wanted {
    let mut wanted = Wanted::new();
    let rules = index
        .configs(Kind::RequestAuthentication)
        .filter_map(|(_, _, object)| match object {
            Object::RequestAuthentication(ra) => ra.spec.jwt_rules.as_ref(),
            _ => None,
        })
        .flatten();
    for rule in rules {
        let Some(uri) = key_source(rule) else { continue };
        // Validation already refused a timeout that does not parse.
        let timeout = rule.timeout.as_deref().and_then(|t| trellis_api::duration::parse(t).ok());
        let entry = wanted.entry(uri).or_insert(timeout);
        *entry = match (*entry, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    wanted
}

/// Fetches `uri` until the cache is gone or the task is aborted: every `refresh` after a success,
/// with doubling backoff after failures.
async fn fetch_loop(cache: std::sync::Weak<Inner>, uri: String) {
    let mut backoff = None;
    loop {
        let Some(inner) = cache.upgrade() else { return };
        let timing = inner.timing;
        let limit = {
            let state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.timeouts.get(&uri).copied().flatten().unwrap_or(timing.timeout)
        };
        let wait = match tokio::time::timeout(limit, fetch(&inner.client, &uri)).await {
            Ok(Ok(set)) => {
                backoff = None;
                store(&inner, &uri, set);
                timing.refresh
            }
            result => {
                let err = result.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
                let wait = backoff.map_or(timing.retry_initial, |b: Duration| (b * 2).min(timing.retry_max));
                backoff = Some(wait);
                let err = err.err().unwrap_or_default();
                tracing::warn!(uri, retry_in = ?wait, "fetching JWKS failed: {err}");
                wait
            }
        };
        drop(inner);
        tokio::time::sleep(wait).await;
    }
}

/// Stores a fetched key set; the generation moves only when it differs from the last one.
fn store(inner: &Inner, uri: &str, set: String) {
    let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
    if !state.tasks.contains_key(uri) || state.sets.get(uri).is_some_and(|old| **old == *set) {
        return;
    }
    tracing::info!(uri, "JWKS fetched");
    state.sets.insert(uri.to_owned(), set.into());
    drop(state);
    inner.generation.send_modify(|generation| *generation += 1);
}

/// An http and https connector on ring, trusting the system's root certificates.
fn connector() -> HttpsConnector<HttpConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
        Ok(builder) => builder,
        Err(err) => {
            tracing::warn!("no system root certificates ({err}); https jwksUri fetches will fail");
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    builder.https_or_http().enable_http1().build()
}

/// The key set at `uri`: a JSON Web Key Set, or an OpenID configuration whose `jwks_uri` names one.
async fn fetch(client: &HttpClient, uri: &str) -> Result<String, String> {
    let text = get(client, uri).await?;
    match parse_source(&text)? {
        Source::KeySet => Ok(text),
        Source::Discovery(jwks_uri) => {
            let text = get(client, &jwks_uri).await.map_err(|e| format!("{jwks_uri} (its jwks_uri): {e}"))?;
            match parse_source(&text)? {
                Source::KeySet => Ok(text),
                Source::Discovery(_) => Err(format!("{jwks_uri} (its jwks_uri) is not a JSON Web Key Set")),
            }
        }
    }
}

/// One GET: the body of a 2xx answer.
async fn get(client: &HttpClient, uri: &str) -> Result<String, String> {
    let parsed: Uri = uri.parse().map_err(|e| format!("invalid URI: {e}"))?;
    let request = Request::get(parsed)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let response = client.request(request).await.map_err(|e| format!("{e}: {}", source_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
}

/// What a fetched document is.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// A JSON Web Key Set: a JSON object with a `keys` array.
    KeySet,
    /// An OpenID configuration, naming its key set's URI.
    Discovery(String),
}

fn parse_source(text: &str) -> Result<Source, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("the body is not JSON: {e}"))?;
    match (value.get("keys"), value.get("jwks_uri")) {
        (Some(serde_json::Value::Array(_)), _) => Ok(Source::KeySet),
        (None, Some(serde_json::Value::String(uri))) if !uri.is_empty() => Ok(Source::Discovery(uri.clone())),
        _ => Err("the body is neither a JSON Web Key Set (an object with a keys array) nor an OpenID \
                  configuration (an object with a jwks_uri)"
            .to_owned()),
    }
}

/// The causes under an error, joined (hyper's client errors say little at the top).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}

#[cfg(test)]
mod tests;
