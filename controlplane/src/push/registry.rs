//! The connected proxies and their sync state, for `GET /v1/proxies` (`trellis proxy-status`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use trellis_api::proxy_config::ProxyConfig;
use trellis_api::push::{Hello, ProxyStatus, ProxyStatusList};

use super::View;

/// Every open stream, by a key unique to the stream.
#[derive(Debug, Default)]
pub(super) struct Registry {
    next: AtomicU64,
    streams: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

/// One stream's row; it leaves the registry when its [`Registered`] guard drops.
#[derive(Debug)]
pub(super) struct Entry {
    hello: Arc<Hello>,
    address: SocketAddr,
    connected_at: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The config last sent (the stream's own view, shared, not a copy).
    view: Option<Arc<View>>,
    sent_version: String,
    acked_version: Option<String>,
    last_error: Option<String>,
    sent_messages: u64,
    sent_bytes: u64,
}

/// Keeps a stream listed for as long as it lives.
#[derive(Debug)]
pub(super) struct Registered {
    registry: Arc<Registry>,
    key: u64,
    pub entry: Arc<Entry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Registry {
    /// Lists a new stream.
    pub fn register(self: &Arc<Self>, hello: Arc<Hello>, address: SocketAddr) -> Registered {
        let connected_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let entry = Arc::new(Entry { hello, address, connected_at, state: Mutex::default() });
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).insert(key, entry.clone());
        Registered { registry: self.clone(), key, entry }
    }

    /// The config last sent to the proxy `id` (its most recent stream when it has several).
    pub fn config_of(&self, id: &str) -> Option<ProxyConfig> {
        let view = {
            let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            let entry = streams.values().rev().find(|e| e.hello.node.id == id)?;
            entry.state().view.clone()?
        };
        Some(view.to_config())
    }

    /// Every open stream, ordered by proxy id and then by when it connected.
    pub fn statuses(&self) -> ProxyStatusList {
        let entries: Vec<Arc<Entry>> =
            self.streams.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut proxies: Vec<ProxyStatus> = entries.iter().map(|e| e.status()).collect();
        proxies.sort_by(|a, b| (&a.id, a.connected_at).cmp(&(&b.id, b.connected_at)));
        ProxyStatusList { proxies }
    }
}

impl Entry {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config `view` went out in `bytes` bytes.
    pub fn sent(&self, view: &Arc<View>, bytes: usize) {
        let mut state = self.state();
        state.sent_version.clone_from(&view.version);
        state.view = Some(view.clone());
        state.sent_messages += 1;
        state.sent_bytes += bytes as u64;
    }

    /// The proxy serves `version`; once that is the version last sent, earlier refusals are over.
    pub fn acked(&self, version: String) {
        let mut state = self.state();
        if version == state.sent_version {
            state.last_error = None;
        }
        state.acked_version = Some(version);
    }

    /// The proxy refused `version`, or its config could not be computed.
    pub fn failed(&self, error: String) {
        self.state().last_error = Some(error);
    }

    pub fn status(&self) -> ProxyStatus {
        let state = self.state();
        ProxyStatus {
            id: self.hello.node.id.clone(),
            namespace: self.hello.node.namespace.clone(),
            mode: self.hello.mode,
            proxy_version: self.hello.proxy_version.clone(),
            address: self.address.to_string(),
            connected_at: self.connected_at,
            sent_version: state.sent_version.clone(),
            acked_version: state.acked_version.clone(),
            in_sync: state.acked_version.as_deref() == Some(state.sent_version.as_str()),
            last_error: state.last_error.clone(),
            sent_messages: state.sent_messages,
            sent_bytes: state.sent_bytes,
        }
    }
}
