//! What the server remembers of the config each proxy was sent, at the cost of a few pointers.
//!
//! A [`View`] holds one proxy's config as shared sections: equal clusters and sections of different
//! proxies are one allocation, found through the [`Interner`] when a config becomes a view. The memory
//! held per proxy is its node and pointers to shared sections and lists. Comparing two views
//! (`super::encode`) skips whatever they share.
//!
//! Clusters and outbound sections are kept as their encodings ([`super::sent`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use trellis_api::proxy_config::{
    Cluster, GatewayListener, InboundListener, Node, Outbound, ProxyConfig, ProxyMode, Telemetry,
};

use super::sent::{SentCluster, SentOutbound};

/// How many distinct recent values of one section the interner remembers for sharing.
pub const SECTION_POOL_SIZE: usize = 64;
/// Cluster interns between sweeps of names whose clusters are all gone.
const SWEEP_EVERY: usize = 4096;

/// A proxy's config as shared sections: what the server remembers of the config last sent, and what
/// a [`super::ConfigSource`] that caches across proxies can hand out without copying.
///
/// Two views holding the same allocation of a section or cluster compare equal without looking inside
/// it, so a source that gives every proxy the same `Arc` for an unchanged cluster makes comparing a
/// proxy's new config with its last one cost a pointer comparison per cluster.
#[derive(Debug, Clone)]
pub struct View {
    pub version: String,
    pub schema: String,
    /// Shared so that a proxy's next view keeps the allocation of an unchanged node
    /// ([`View::keep_unchanged`]).
    pub node: Arc<Node>,
    pub mode: ProxyMode,
    pub inbound: Arc<Vec<InboundListener>>,
    pub outbound: Arc<SentOutbound>,
    pub gateway_listeners: Arc<Vec<GatewayListener>>,
    pub telemetry: Arc<Telemetry>,
    /// Best kept in name order (stable); views sort references to them when they are not. The list
    /// itself is shared too: every sidecar of one sharing key holds the same one (a pointer per
    /// cluster, ~1.5 KB per proxy in the control-plane bench, held once instead of per proxy).
    pub clusters: Arc<[Arc<SentCluster>]>,
}

impl View {
    /// The view of `config`, sharing every section and cluster that equals one already interned.
    pub fn new(config: ProxyConfig, interner: &Interner) -> Self {
        let mut clusters = config.clusters;
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            version: config.version,
            schema: config.schema,
            node: Arc::new(config.node),
            mode: config.mode,
            inbound: interner.inbound.intern(config.inbound),
            outbound: interner.outbound(config.outbound),
            gateway_listeners: interner.gateway_listeners.intern(config.gateway_listeners),
            telemetry: interner.telemetry.intern(config.telemetry),
            clusters: clusters.into_iter().map(|c| interner.cluster(c)).collect(),
        }
    }

    /// Takes `old`'s allocations of the parts that did not change, so the view a proxy keeps after a
    /// change holds nothing new but what changed: a thousand proxies' fresh copies of unchanged nodes
    /// and listeners, made on the computing threads between short-lived temporaries, would otherwise
    /// be kept in place of the old ones, and scattered over the allocator's pages at every change.
    pub fn keep_unchanged(&mut self, old: &View) {
        fn keep<T: PartialEq>(new: &mut Arc<T>, old: &Arc<T>) {
            if !Arc::ptr_eq(new, old) && new == old {
                *new = old.clone();
            }
        }
        keep(&mut self.node, &old.node);
        keep(&mut self.inbound, &old.inbound);
        keep(&mut self.outbound, &old.outbound);
        keep(&mut self.gateway_listeners, &old.gateway_listeners);
        keep(&mut self.telemetry, &old.telemetry);
    }

    /// The config this view stands for (a whole copy).
    pub fn to_config(&self) -> ProxyConfig {
        ProxyConfig {
            schema: self.schema.clone(),
            version: self.version.clone(),
            node: self.node.as_ref().clone(),
            mode: self.mode,
            inbound: self.inbound.as_ref().clone(),
            outbound: self.outbound.to_outbound(),
            gateway_listeners: self.gateway_listeners.as_ref().clone(),
            clusters: self.clusters_by_name().into_iter().map(|c| c.to_cluster()).collect(),
            telemetry: self.telemetry.as_ref().clone(),
        }
    }

    /// The clusters in name order (stable, as `ConfigView::clusters_by_name`).
    pub fn clusters_by_name(&self) -> Vec<&Arc<SentCluster>> {
        let mut clusters: Vec<&Arc<SentCluster>> = self.clusters.iter().collect();
        // Already sorted (what `View::new` makes) costs one pass.
        clusters.sort_by(|a, b| a.name().cmp(b.name()));
        clusters
    }
}

/// Finds an existing allocation equal to a new value, so proxies share what they were sent.
///
/// It holds weak references only: a value lives as long as some proxy's view holds it.
#[derive(Debug, Default)]
pub struct Interner {
    inbound: Pool<Vec<InboundListener>>,
    outbound: Pool<SentOutbound>,
    gateway_listeners: Pool<Vec<GatewayListener>>,
    telemetry: Pool<Telemetry>,
    clusters: Mutex<ClusterPool>,
}

#[derive(Debug, Default)]
struct ClusterPool {
    by_name: HashMap<String, Vec<Weak<SentCluster>>>,
    interned: usize,
}

impl Interner {
    /// The shared allocation of `cluster`, encoded.
    pub fn cluster(&self, cluster: Cluster) -> Arc<SentCluster> {
        let cluster = SentCluster::new(&cluster);
        let mut pool = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        pool.interned += 1;
        if pool.interned.is_multiple_of(SWEEP_EVERY) {
            pool.by_name.retain(|_, versions| versions.iter().any(|w| w.strong_count() > 0));
        }
        if let Some(versions) = pool.by_name.get_mut(cluster.name()) {
            versions.retain(|w| w.strong_count() > 0);
            if let Some(found) = versions.iter().rev().find_map(|w| w.upgrade().filter(|c| **c == cluster)) {
                return found;
            }
            let shared = Arc::new(cluster);
            versions.push(Arc::downgrade(&shared));
            return shared;
        }
        let shared = Arc::new(cluster);
        pool.by_name.insert(shared.name().to_owned(), vec![Arc::downgrade(&shared)]);
        shared
    }

    /// The shared allocation of an outbound section, encoded.
    pub fn outbound(&self, outbound: Outbound) -> Arc<SentOutbound> {
        self.outbound.intern(SentOutbound::new(&outbound))
    }

    /// The shared allocation of an inbound section.
    pub fn inbound(&self, inbound: Vec<InboundListener>) -> Arc<Vec<InboundListener>> {
        self.inbound.intern(inbound)
    }

    /// The shared allocation of a gateway listeners section.
    pub fn gateway_listeners(&self, listeners: Vec<GatewayListener>) -> Arc<Vec<GatewayListener>> {
        self.gateway_listeners.intern(listeners)
    }

    /// The shared allocation of a telemetry section.
    pub fn telemetry(&self, telemetry: Telemetry) -> Arc<Telemetry> {
        self.telemetry.intern(telemetry)
    }

    /// How many distinct clusters are alive (held by some proxy's view).
    pub fn live_clusters(&self) -> usize {
        let pool = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        pool.by_name.values().flatten().filter(|w| w.strong_count() > 0).count()
    }
}

/// The most recent distinct values of one section.
#[derive(Debug)]
struct Pool<T> {
    recent: Mutex<VecDeque<Weak<T>>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self { recent: Mutex::new(VecDeque::new()) }
    }
}

impl<T: PartialEq> Pool<T> {
    fn intern(&self, value: T) -> Arc<T> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|w| w.strong_count() > 0);
        if let Some(found) = recent.iter().rev().find_map(|w| w.upgrade().filter(|v| **v == value)) {
            return found;
        }
        let shared = Arc::new(value);
        if recent.len() >= SECTION_POOL_SIZE {
            recent.pop_front();
        }
        recent.push_back(Arc::downgrade(&shared));
        shared
    }
}
