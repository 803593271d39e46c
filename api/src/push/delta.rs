//! Deltas: what changed between two configs of one proxy, cut so an endpoint change costs one cluster.
//!
//! Clusters are keyed by name: a delta carries every cluster whose name is new or whose content changed,
//! whole, and the names of clusters that went away. The other sections (`node`, `mode`, `inbound`,
//! `outbound`, `gatewayListeners`, `telemetry`, `schema`) are sent whole, and only when they changed.
//! Applying a delta leaves clusters in name order (stable, so clusters sharing a name keep their order),
//! which is the order [`normalize`] gives the configs the control plane sends.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::proxy_config::{
    Cluster, GatewayListener, InboundListener, Node, Outbound, ProxyConfig, ProxyMode, Telemetry,
};

/// The changes that turn the config of `baseVersion` into the config of `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delta {
    pub version: String,
    pub base_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProxyMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Vec<InboundListener>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_listeners: Option<Vec<GatewayListener>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
    /// Clusters added or changed, whole; each replaces every cluster of its name in the base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    /// Names of clusters the base has and the new config does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_clusters: Vec<String>,
}

impl Delta {
    /// Whether the delta changes nothing but the version.
    pub fn is_empty(&self) -> bool {
        self.schema.is_none()
            && self.node.is_none()
            && self.mode.is_none()
            && self.inbound.is_none()
            && self.outbound.is_none()
            && self.gateway_listeners.is_none()
            && self.telemetry.is_none()
            && self.clusters.is_empty()
            && self.removed_clusters.is_empty()
    }
}

/// Read access to a config's sections, so [`diff`] can compare a `ProxyConfig` with another
/// representation of the config a proxy holds (the control plane keeps shared, reference-counted
/// sections per proxy rather than a copy of each config).
pub trait ConfigView {
    fn version(&self) -> &str;
    fn schema(&self) -> &str;
    fn node(&self) -> &Node;
    fn mode(&self) -> ProxyMode;
    fn inbound(&self) -> &[InboundListener];
    fn outbound(&self) -> &Outbound;
    fn gateway_listeners(&self) -> &[GatewayListener];
    fn telemetry(&self) -> &Telemetry;
    /// Every cluster, in name order (stable).
    fn clusters_by_name(&self) -> Vec<&Cluster>;
}

impl ConfigView for ProxyConfig {
    fn version(&self) -> &str {
        &self.version
    }
    fn schema(&self) -> &str {
        &self.schema
    }
    fn node(&self) -> &Node {
        &self.node
    }
    fn mode(&self) -> ProxyMode {
        self.mode
    }
    fn inbound(&self) -> &[InboundListener] {
        &self.inbound
    }
    fn outbound(&self) -> &Outbound {
        &self.outbound
    }
    fn gateway_listeners(&self) -> &[GatewayListener] {
        &self.gateway_listeners
    }
    fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
    fn clusters_by_name(&self) -> Vec<&Cluster> {
        let mut clusters: Vec<&Cluster> = self.clusters.iter().collect();
        // Already sorted (what the control plane sends) costs one pass.
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        clusters
    }
}

/// Puts `config`'s clusters in name order (stable), the order [`apply`] leaves them in.
pub fn normalize(config: &mut ProxyConfig) {
    config.clusters.sort_by(|a, b| a.name.cmp(&b.name));
}

/// What turns `old` into `new`, or `None` when they differ in nothing but their version.
///
/// The delta's `version` is `new`'s and its `baseVersion` is `old`'s. Either side may be any
/// [`ConfigView`]; sections and clusters that both sides hold at the same address (shared between
/// views) are equal without being compared.
pub fn diff<O, N>(old: &O, new: &N) -> Option<Delta>
where
    O: ConfigView + ?Sized,
    N: ConfigView + ?Sized,
{
    fn changed<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
        (!same(old, new)).then(|| new.clone())
    }
    fn changed_list<T: PartialEq + Clone>(old: &[T], new: &[T]) -> Option<Vec<T>> {
        (!same(old, new)).then(|| new.to_vec())
    }
    let (clusters, removed_clusters) = diff_clusters(&old.clusters_by_name(), &new.clusters_by_name());
    let clusters: Vec<Cluster> = clusters.into_iter().map(|c| (*c).clone()).collect();
    let removed_clusters: Vec<String> = removed_clusters.into_iter().map(str::to_owned).collect();
    let delta = Delta {
        version: new.version().to_owned(),
        base_version: old.version().to_owned(),
        schema: (old.schema() != new.schema()).then(|| new.schema().to_owned()),
        node: changed(old.node(), new.node()),
        mode: (old.mode() != new.mode()).then_some(new.mode()),
        inbound: changed_list(old.inbound(), new.inbound()),
        outbound: changed(old.outbound(), new.outbound()),
        gateway_listeners: changed_list(old.gateway_listeners(), new.gateway_listeners()),
        telemetry: changed(old.telemetry(), new.telemetry()),
        clusters,
        removed_clusters,
    };
    (!delta.is_empty()).then_some(delta)
}

/// Equal: the same value (shared), or equal values.
fn same<T: PartialEq + ?Sized>(a: &T, b: &T) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// What [`diff_clusters`] reads of a cluster, whatever form a side keeps it in (a value, a shared
/// allocation, the control plane's encoding): its name, and whether two are equal.
pub trait ClusterEntry {
    fn cluster_name(&self) -> &str;
    /// Equal: the same allocation, or equal contents.
    fn same_cluster(&self, other: &Self) -> bool;
}

impl ClusterEntry for Cluster {
    fn cluster_name(&self) -> &str {
        &self.name
    }
    fn same_cluster(&self, other: &Self) -> bool {
        same(self, other)
    }
}

/// A shared cluster: one allocation is equal without a look inside.
impl<T: ClusterEntry + ?Sized> ClusterEntry for Arc<T> {
    fn cluster_name(&self) -> &str {
        (**self).cluster_name()
    }
    fn same_cluster(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other) || (**self).same_cluster(other)
    }
}

/// Merges two name-ordered cluster lists: the clusters of each name group that is new or differs
/// (compared one by one, shared first, then by value), and the names that are gone. Used for deltas
/// here and by the control plane's encoder (over its encoded clusters).
pub fn diff_clusters<'a, C: ClusterEntry + ?Sized>(old: &[&'a C], new: &[&'a C]) -> (Vec<&'a C>, Vec<&'a str>) {
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => o.cluster_name().cmp(n.cluster_name()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        let group: &'a str = if order == Ordering::Greater { new[j].cluster_name() } else { old[i].cluster_name() };
        let old_group = group_len(&old[i..], group, order != Ordering::Greater);
        let new_group = group_len(&new[j..], group, order != Ordering::Less);
        let (before, after) = (&old[i..i + old_group], &new[j..j + new_group]);
        if after.is_empty() {
            removed.push(group);
        } else if before.len() != after.len() || before.iter().zip(after).any(|(b, a)| !b.same_cluster(a)) {
            changed.extend_from_slice(after);
        }
        i += old_group;
        j += new_group;
    }
    (changed, removed)
}

/// How many clusters at the start of `clusters` are named `group` (none when `present` is false).
fn group_len<C: ClusterEntry + ?Sized>(clusters: &[&C], group: &str, present: bool) -> usize {
    if !present {
        return 0;
    }
    clusters.iter().take_while(|c| c.cluster_name() == group).count()
}

/// The config `delta` turns `base` into, clusters in name order.
///
/// Fails, naming the problem, when the delta is not based on `base`'s version, removes a cluster the
/// base does not have, or both removes and sends a cluster of one name: the proxy then asks for a
/// snapshot.
pub fn apply(base: &ProxyConfig, delta: &Delta) -> Result<ProxyConfig, Error> {
    let fail = |message: String| Err(Error::Push(format!("delta to version {:?}: {message}", delta.version)));
    if base.version != delta.base_version {
        return fail(format!("it is based on version {:?} but the proxy holds {:?}", delta.base_version, base.version));
    }
    let mut touched: Vec<&str> = delta.clusters.iter().map(|c| c.name.as_str()).collect();
    touched.sort_unstable();
    touched.dedup();
    let mut held: Vec<&str> = base.clusters.iter().map(|c| c.name.as_str()).collect();
    held.sort_unstable();
    for name in &delta.removed_clusters {
        if touched.binary_search(&name.as_str()).is_ok() {
            return fail(format!("cluster {name:?} is both removed and sent"));
        }
        if held.binary_search(&name.as_str()).is_err() {
            return fail(format!("cluster {name:?} to remove is not in version {:?}", base.version));
        }
    }
    let mut removed: Vec<&str> = delta.removed_clusters.iter().map(String::as_str).collect();
    removed.sort_unstable();
    let keep = |c: &&Cluster| {
        touched.binary_search(&c.name.as_str()).is_err() && removed.binary_search(&c.name.as_str()).is_err()
    };
    let mut clusters: Vec<Cluster> = base.clusters.iter().filter(keep).cloned().collect();
    clusters.extend(delta.clusters.iter().cloned());
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ProxyConfig {
        schema: section(&delta.schema, &base.schema),
        version: delta.version.clone(),
        node: section(&delta.node, &base.node),
        mode: delta.mode.unwrap_or(base.mode),
        inbound: section(&delta.inbound, &base.inbound),
        outbound: section(&delta.outbound, &base.outbound),
        gateway_listeners: section(&delta.gateway_listeners, &base.gateway_listeners),
        telemetry: section(&delta.telemetry, &base.telemetry),
        clusters,
    })
}

/// The delta's section when it sent one, else the base's.
fn section<T: Clone>(sent: &Option<T>, base: &T) -> T {
    sent.as_ref().unwrap_or(base).clone()
}
