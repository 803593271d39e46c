//! The config push protocol between `trellisd` and `trellis-proxy`: its messages, how a change is cut
//! into a [`Delta`] and applied again, and how messages are framed on the stream.
//!
//! A proxy opens one HTTP/2 request (`POST` [`STREAM_PATH`] on port [`DEFAULT_PORT`]) and keeps it open.
//! Both bodies are streams of newline-delimited JSON, one message a line ([`encode`], [`LineDecoder`]):
//! the proxy sends a [`Hello`] and then an [`Ack`](ClientMessage::Ack), [`Nack`](ClientMessage::Nack) or
//! [`Resync`](ClientMessage::Resync) for each config it receives; the control plane answers with one
//! [`ServerMessage::Snapshot`] (the whole `ProxyConfig`) and then a [`ServerMessage::Delta`] per change
//! that touches this proxy, carrying only the clusters and sections that changed. [`diff`] and [`apply`]
//! are pure and inverse: `apply(old, diff(old, new)) == new` once clusters are in name order
//! ([`normalize`]). `GET` [`STATUS_PATH`] lists the connected proxies as [`ProxyStatusList`].
//!
//! `docs/push.md` describes the protocol for people.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::proxy_config::{
    Cluster, GatewayListener, InboundListener, Node, Outbound, ProxyConfig, ProxyMode, Telemetry,
};

mod delta;
mod framing;

pub use delta::{ClusterEntry, ConfigView, Delta, apply, diff, diff_clusters, normalize};
pub use framing::{LineDecoder, decode, encode};

/// Port of `trellisd`'s config stream (TLS arrives with the mesh CA; plain HTTP/2 until then).
pub const DEFAULT_PORT: u16 = crate::ports::DISCOVERY;
/// Path of the config stream: `POST`, HTTP/2, both bodies newline-delimited JSON.
pub const STREAM_PATH: &str = "/v1/stream";
/// Path of the list of connected proxies and their sync state: `GET`, JSON [`ProxyStatusList`].
pub const STATUS_PATH: &str = "/v1/proxies";
/// Path of the config last sent to one connected proxy: `GET /v1/config?proxy=<id>`, JSON `ProxyConfig`
/// (for debugging: `trellis explain`, `trellis proxy-config`).
pub const CONFIG_PATH: &str = "/v1/config";
/// Query parameter of [`CONFIG_PATH`] naming the proxy by its node id.
pub const CONFIG_PROXY_PARAM: &str = "proxy";
/// Content type of both stream bodies.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The first message of a stream: who the proxy is, so the control plane can compute its config.
///
/// Unknown fields are ignored, so a newer proxy can tell an older control plane more about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The workload the proxy serves (its `id` names the proxy in `trellis proxy-status`).
    pub node: Node,
    /// Sidecar or gateway.
    pub mode: ProxyMode,
    /// The proxy's build (`CARGO_PKG_VERSION`), shown by `trellis proxy-status`.
    pub proxy_version: String,
    /// The workload's addresses (the pod IPs), so the control plane can find the workload among the
    /// endpoints it knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
}

/// What a proxy sends on its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientMessage {
    /// Always first, exactly once.
    Hello(Hello),
    /// The config of `version` is compiled and serving.
    Ack { version: String },
    /// The config of `version` was refused (`error` says why); the proxy keeps serving its last good
    /// config, and later deltas still apply on top of the refused one (the control plane's view).
    Nack { version: String, error: String },
    /// The delta of `version` could not be applied to what the proxy holds (`error` says why); the
    /// control plane answers with a snapshot.
    Resync { version: String, error: String },
}

/// What the control plane sends on a proxy's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ServerMessage {
    /// The whole config, clusters in name order; its `version` is the version to acknowledge. Always
    /// the first message of a stream, and the answer to a [`ClientMessage::Resync`].
    Snapshot(Box<ProxyConfig>),
    /// What changed since `baseVersion`.
    Delta(Box<Delta>),
}

impl ServerMessage {
    /// The config version this message brings the proxy to.
    pub fn version(&self) -> &str {
        match self {
            ServerMessage::Snapshot(config) => &config.version,
            ServerMessage::Delta(delta) => &delta.version,
        }
    }
}

/// A server message encoded from borrowed parts, exactly as [`encode`] encodes the owned message, so
/// the control plane can send what it keeps without copying it into a message first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ServerMessageRef<'a> {
    Snapshot(ConfigRef<'a>),
    Delta(&'a Delta),
}

/// A `ProxyConfig` made of borrowed sections; serializes as `ProxyConfig` does (same names, same order,
/// same omissions).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigRef<'a> {
    schema: &'a str,
    version: &'a str,
    node: &'a Node,
    mode: ProxyMode,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    inbound: &'a [InboundListener],
    outbound: &'a Outbound,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    gateway_listeners: &'a [GatewayListener],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    clusters: Vec<&'a Cluster>,
    telemetry: &'a Telemetry,
}

/// The line of a [`ServerMessage::Snapshot`] of `config` (clusters in name order).
pub fn encode_snapshot<V: ConfigView + ?Sized>(config: &V) -> Result<Vec<u8>, crate::Error> {
    encode(&ServerMessageRef::Snapshot(ConfigRef {
        schema: config.schema(),
        version: config.version(),
        node: config.node(),
        mode: config.mode(),
        inbound: config.inbound(),
        outbound: config.outbound(),
        gateway_listeners: config.gateway_listeners(),
        clusters: config.clusters_by_name(),
        telemetry: config.telemetry(),
    }))
}

/// The line of a [`ServerMessage::Delta`].
pub fn encode_delta(delta: &Delta) -> Result<Vec<u8>, crate::Error> {
    encode(&ServerMessageRef::Delta(delta))
}

/// One connected proxy as `trellis proxy-status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// The proxy's node id (`pod.namespace`).
    pub id: String,
    pub namespace: String,
    pub mode: ProxyMode,
    pub proxy_version: String,
    /// The peer address of its stream.
    pub address: String,
    /// When the stream opened, in seconds since the Unix epoch.
    pub connected_at: u64,
    /// The version of the last config sent to it.
    pub sent_version: String,
    /// The version it last acknowledged, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_version: Option<String>,
    /// Whether it acknowledged the last config it was sent.
    pub in_sync: bool,
    /// Why it refused a config, or why its config could not be computed, until a later one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Messages and bytes sent to it on this stream.
    pub sent_messages: u64,
    pub sent_bytes: u64,
}

/// The answer of `GET` [`STATUS_PATH`], ordered by proxy id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatusList {
    pub proxies: Vec<ProxyStatus>,
}

#[cfg(test)]
mod tests;
