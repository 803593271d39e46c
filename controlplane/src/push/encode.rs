//! Message lines as shared pieces: the bytes of a snapshot or delta that are the same for many
//! proxies are encoded once and shared, not encoded and held once per proxy.
//!
//! A line is a list of [`Bytes`] that, written one after the other, read exactly as
//! [`trellis_api::push::encode_snapshot`] and [`trellis_api::push::encode_delta`] encode the message
//! (the tests hold the two to byte equality). The large sections every proxy of a sharing key holds
//! as one allocation are encoded once: each cluster is kept as its encoding ([`SentCluster`]), and the
//! outbound section is encoded once per allocation and kept in an [`Encoded`] cache for as long as
//! some view holds that allocation; a line refers to those bytes instead of copying them. So a VirtualService edit sent to a thousand proxies costs one
//! encoding of the new outbound section and a thousand small heads, in CPU and in memory while the
//! lines wait in the streams' buffers; a snapshot costs its node and inbound listeners.
//!
//! Deltas are computed here over [`View`]s with the semantics of [`trellis_api::push::diff`] (a
//! section is sent whole when it changed; clusters by name), comparing shared allocations by address
//! and, only when those differ, by value, and without copying anything into a message first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use serde::Serialize;
use trellis_api::proxy_config::Outbound;

use super::View;
use super::view::SentCluster;

/// Shared pieces shorter than this are copied into the line's own bytes (fewer, larger frames).
pub const INLINE_PIECE_BYTES: usize = 512;
/// Encodings added to a cache between sweeps of the ones whose allocation is gone (at least; a cache
/// also sweeps once it added as many as it held after the last sweep).
const SWEEP_MIN_INSERTS: usize = 256;
/// Bytes of encodings added to a cache between sweeps (at least; a cache also sweeps once it added
/// half as many bytes as it held after the last sweep): outbound sections are large (~80 KB in the
/// control-plane bench), so a few hundred encodings of sections no view holds any more would be many
/// MB.
const SWEEP_MIN_BYTES: usize = 1024 * 1024;

/// One message line, in pieces to send one after the other.
pub type Line = Vec<Bytes>;

/// The length of a line in bytes.
pub fn line_len(line: &[Bytes]) -> usize {
    line.iter().map(Bytes::len).sum()
}

/// The encodings of the shared sections of the views a push server sent, by allocation.
#[derive(Debug, Default)]
pub struct Encoded {
    outbound: Cache<Outbound>,
}

/// Encodings by the address of the allocation they encode. The weak reference proves the address
/// still holds that allocation: while it exists, the allocation cannot be reused.
#[derive(Debug)]
struct Cache<T> {
    entries: Mutex<CacheEntries<T>>,
}

#[derive(Debug)]
struct CacheEntries<T> {
    by_address: HashMap<usize, (Weak<T>, Bytes)>,
    inserted_since_sweep: usize,
    bytes_since_sweep: usize,
    /// Bytes of the encodings kept by the last sweep.
    bytes_after_sweep: usize,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        let entries = CacheEntries {
            by_address: HashMap::new(),
            inserted_since_sweep: 0,
            bytes_since_sweep: 0,
            bytes_after_sweep: 0,
        };
        Self { entries: Mutex::new(entries) }
    }
}

impl<T> Cache<T> {
    /// The encoding of `value`, made by `encode` the first time this allocation is asked for.
    fn get(&self, value: &Arc<T>, encode: impl FnOnce(&T) -> Result<Vec<u8>, String>) -> Result<Bytes, String> {
        let address = Arc::as_ptr(value) as usize;
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((weak, bytes)) = entries.by_address.get(&address)
                && weak.strong_count() > 0
                && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(value))
            {
                return Ok(bytes.clone());
            }
        }
        // Encoded outside the lock: two streams may encode one allocation at once, which is harmless.
        let bytes = Bytes::from(encode(value)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.inserted_since_sweep += 1;
        entries.bytes_since_sweep += bytes.len();
        if entries.inserted_since_sweep >= SWEEP_MIN_INSERTS.max(entries.by_address.len() / 2)
            || entries.bytes_since_sweep >= SWEEP_MIN_BYTES.max(entries.bytes_after_sweep / 2)
        {
            entries.by_address.retain(|_, (weak, _)| weak.strong_count() > 0);
            entries.inserted_since_sweep = 0;
            entries.bytes_since_sweep = 0;
            entries.bytes_after_sweep = entries.by_address.values().map(|(_, bytes)| bytes.len()).sum();
        }
        entries.by_address.insert(address, (Arc::downgrade(value), bytes.clone()));
        Ok(bytes)
    }

    /// Bytes of every encoding the cache holds, of live allocations or not.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.by_address.values().map(|(_, bytes)| bytes.len()).sum()
    }

    /// How many encodings of live allocations the cache holds.
    #[cfg(test)]
    fn live(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.by_address.values().filter(|(weak, _)| weak.strong_count() > 0).count()
    }
}

/// Builds a line: small parts written into its own bytes, large shared ones referred to.
struct Writer {
    pieces: Vec<Bytes>,
    own: Vec<u8>,
}

impl Writer {
    fn new(head: &[u8]) -> Self {
        Self { pieces: Vec::new(), own: head.to_vec() }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.own.extend_from_slice(bytes);
    }

    /// `,"name":` and the value, encoded here.
    fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), String> {
        self.name(name);
        self.value(value)
    }

    fn name(&mut self, name: &str) {
        self.own.extend_from_slice(b",\"");
        self.own.extend_from_slice(name.as_bytes());
        self.own.extend_from_slice(b"\":");
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), String> {
        serde_json::to_writer(&mut self.own, value).map_err(|e| format!("cannot encode a message: {e}"))
    }

    /// Bytes encoded once and shared.
    fn shared(&mut self, bytes: Bytes) {
        if bytes.len() < INLINE_PIECE_BYTES {
            self.own.extend_from_slice(&bytes);
            return;
        }
        if !self.own.is_empty() {
            self.pieces.push(Bytes::from(std::mem::take(&mut self.own)));
        }
        self.pieces.push(bytes);
    }

    /// Closes the message (`}}` and the newline) and hands out its pieces.
    fn finish(mut self) -> Line {
        self.own.extend_from_slice(b"}}\n");
        self.pieces.push(Bytes::from(self.own));
        self.pieces
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("cannot encode a message: {e}"))
}

impl Encoded {
    /// The [`trellis_api::push::ServerMessage::Snapshot`] line of `view`.
    pub fn snapshot(&self, view: &View) -> Result<Line, String> {
        let mut line = Writer::new(b"{\"snapshot\":{\"schema\":");
        line.value(&view.schema)?;
        line.field("version", &view.version)?;
        line.field("node", view.node.as_ref())?;
        line.field("mode", &view.mode)?;
        if !view.inbound.is_empty() {
            line.field("inbound", view.inbound.as_slice())?;
        }
        line.name("outbound");
        line.shared(self.outbound(&view.outbound)?);
        if !view.gateway_listeners.is_empty() {
            line.field("gatewayListeners", view.gateway_listeners.as_slice())?;
        }
        if !view.clusters.is_empty() {
            cluster_list(&mut line, &view.clusters_by_name());
        }
        line.field("telemetry", view.telemetry.as_ref())?;
        Ok(line.finish())
    }

    /// The [`trellis_api::push::ServerMessage::Delta`] line that turns what `old` stands for into
    /// `new`, or `None` when they differ in nothing but their version.
    pub fn delta(&self, old: &View, new: &View) -> Result<Option<Line>, String> {
        let (changed, removed) = diff_clusters(&old.clusters_by_name(), &new.clusters_by_name());
        let schema = old.schema != new.schema;
        let node = old.node != new.node;
        let mode = old.mode != new.mode;
        let inbound = !same(&old.inbound, &new.inbound);
        let outbound = !same(&old.outbound, &new.outbound);
        let gateway_listeners = !same(&old.gateway_listeners, &new.gateway_listeners);
        let telemetry = !same(&old.telemetry, &new.telemetry);
        let sections = [schema, node, mode, inbound, outbound, gateway_listeners, telemetry];
        if !sections.contains(&true) && changed.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        let mut line = Writer::new(b"{\"delta\":{\"version\":");
        line.value(&new.version)?;
        line.field("baseVersion", &old.version)?;
        if schema {
            line.field("schema", &new.schema)?;
        }
        if node {
            line.field("node", new.node.as_ref())?;
        }
        if mode {
            line.field("mode", &new.mode)?;
        }
        if inbound {
            line.field("inbound", new.inbound.as_slice())?;
        }
        if outbound {
            line.name("outbound");
            line.shared(self.outbound(&new.outbound)?);
        }
        if gateway_listeners {
            line.field("gatewayListeners", new.gateway_listeners.as_slice())?;
        }
        if telemetry {
            line.field("telemetry", new.telemetry.as_ref())?;
        }
        if !changed.is_empty() {
            cluster_list(&mut line, &changed);
        }
        if !removed.is_empty() {
            line.field("removedClusters", &removed)?;
        }
        Ok(Some(line.finish()))
    }

    fn outbound(&self, outbound: &Arc<Outbound>) -> Result<Bytes, String> {
        self.outbound.get(outbound, to_json)
    }

    /// How many encoded outbound sections are held for live allocations.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.outbound.live()
    }
}

/// `,"clusters":[...]` of `clusters`, their encodings shared.
fn cluster_list(line: &mut Writer, clusters: &[&Arc<SentCluster>]) {
    line.name("clusters");
    line.raw(b"[");
    for (i, cluster) in clusters.iter().enumerate() {
        line.shared(if i == 0 { cluster.json() } else { cluster.json_after_comma() });
    }
    line.raw(b"]");
}

/// The clusters of `new` to send and the names to remove, given both lists in name order: the
/// semantics of `trellis_api::push::diff_clusters` (clusters of one name are a group, sent whole
/// when it changed in any way), comparing shared allocations by address and only then by encoding.
fn diff_clusters<'a>(
    old: &[&'a Arc<SentCluster>],
    new: &[&'a Arc<SentCluster>],
) -> (Vec<&'a Arc<SentCluster>>, Vec<&'a str>) {
    let group_len = |list: &[&Arc<SentCluster>], name: &str| list.iter().take_while(|c| c.name() == name).count();
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => o.name().cmp(n.name()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        let group: &'a str = if order == Ordering::Greater { new[j].name() } else { old[i].name() };
        let old_group = if order == Ordering::Greater { 0 } else { group_len(&old[i..], group) };
        let new_group = if order == Ordering::Less { 0 } else { group_len(&new[j..], group) };
        let (before, after) = (&old[i..i + old_group], &new[j..j + new_group]);
        if after.is_empty() {
            removed.push(group);
        } else if before.len() != after.len() || before.iter().zip(after).any(|(b, a)| !same(*b, *a)) {
            changed.extend_from_slice(after);
        }
        i += old_group;
        j += new_group;
    }
    (changed, removed)
}

/// Equal: one allocation, or equal values.
fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

#[cfg(test)]
mod tests;
