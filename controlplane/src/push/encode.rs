//! Message lines as shared pieces: the bytes of a snapshot or delta that are the same for many
//! proxies are encoded once and shared, not encoded and held once per proxy.
//!
//! A line is a list of [`Bytes`] that, written one after the other, read exactly as
//! [`trellis_api::push::encode_snapshot`] and [`trellis_api::push::encode_delta`] encode the message
//! (the tests hold the two to byte equality). The large sections every proxy of a sharing key holds
//! as one allocation (the outbound section and each cluster) are kept as their encodings
//! ([`super::sent`]), made once per allocation; a line refers to those bytes instead of copying them.
//! So a VirtualService edit sent to a thousand proxies costs one encoding of the new outbound section
//! and a thousand small heads, in CPU and in memory while the lines wait in the streams' buffers; a
//! snapshot costs its node and inbound listeners.
//!
//! Deltas are computed here over [`View`]s with the semantics of [`trellis_api::push::diff`] (a
//! section is sent whole when it changed; clusters by name), comparing shared allocations by address
//! and, only when those differ, by value, and without copying anything into a message first.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use trellis_api::push::diff_clusters;

use super::View;
use super::sent::SentCluster;

/// Shared pieces shorter than this are copied into the line's own bytes (fewer, larger frames).
pub const INLINE_PIECE_BYTES: usize = 512;

/// One message line, in pieces to send one after the other.
pub type Line = Vec<Bytes>;

/// The length of a line in bytes.
pub fn line_len(line: &[Bytes]) -> usize {
    line.iter().map(Bytes::len).sum()
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

/// The [`trellis_api::push::ServerMessage::Snapshot`] line of `view`.
pub fn snapshot(view: &View) -> Result<Line, String> {
    let mut line = Writer::new(b"{\"snapshot\":{\"schema\":");
    line.value(&view.schema)?;
    line.field("version", &view.version)?;
    line.field("node", view.node.as_ref())?;
    line.field("mode", &view.mode)?;
    if !view.inbound.is_empty() {
        line.field("inbound", view.inbound.as_slice())?;
    }
    line.name("outbound");
    line.shared(view.outbound.json());
    if !view.gateway_listeners.is_empty() {
        line.field("gatewayListeners", view.gateway_listeners.as_slice())?;
    }
    if !view.clusters.is_empty() {
        cluster_list(&mut line, &view.clusters_by_name());
    }
    line.field("telemetry", view.telemetry.as_ref())?;
    Ok(line.finish())
}

/// The [`trellis_api::push::ServerMessage::Delta`] line that turns what `old` stands for into `new`,
/// or `None` when they differ in nothing but their version.
pub fn delta(old: &View, new: &View) -> Result<Option<Line>, String> {
    // Clusters of one name are a group, sent whole when it changed in any way; shared allocations
    // are compared by address, and only then by encoding.
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
        line.shared(new.outbound.json());
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

/// `,"clusters":[...]` of `clusters`, their encodings shared.
fn cluster_list(line: &mut Writer, clusters: &[&Arc<SentCluster>]) {
    line.name("clusters");
    line.raw(b"[");
    for (i, cluster) in clusters.iter().enumerate() {
        line.shared(if i == 0 { cluster.json() } else { cluster.json_after_comma() });
    }
    line.raw(b"]");
}

/// Equal: one allocation, or equal values.
fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

#[cfg(test)]
mod tests;
