//! The config source `trellisd` serves: each proxy's config is [`translate`] over the [`SharedIndex`]
//! for the identity its hello declares, recomputed whenever the index's generation moves.
//!
//! [`identity`] maps a proxy's [`Hello`] (node id, namespace, service account, labels, mode, IPs) to the
//! [`ProxyIdentity`] translate reads. What translate leaves out is logged once per index generation and
//! entry, not once per proxy: a thousand proxies that all see one invalid VirtualService log it once.
//!
//! A sidecar's outbound side (virtual hosts and clusters, most of its config) is computed once per
//! generation and [`SharingKey`] (its namespace, and the labels some object selects sidecars by), not
//! once per proxy, and handed to every sidecar with that key as the same shared sections
//! ([`ConfigSource::view_for`]): after a change, each proxy costs the translation of its own node and
//! inbound listeners and a pointer comparison per cluster. Clusters that did not change keep their
//! allocation across generations (through the push's [`Interner`]), so the diff skips them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use trellis_api::proxy_config::{ProxyConfig, ProxyMode, Telemetry};
use trellis_api::push::Hello;

use crate::index::Index;
use crate::jwks::JwksCache;
use crate::push::{ConfigSource, Interner, SentCluster, SentOutbound, View};
use crate::sources::SharedIndex;
use crate::translate::sharing::{SharingKey, outbound_label_keys, sharing_key};
use crate::translate::{ProxyIdentity, Skipped, sidecar_own, sidecar_shared_into, translate};

/// The identity translate computes a proxy's config for, from its hello; an error names the field
/// that is missing.
pub fn identity(hello: &Hello) -> Result<ProxyIdentity, String> {
    let node = &hello.node;
    if node.id.trim().is_empty() {
        return Err("the hello has no node.id (the proxy's --node-id)".to_owned());
    }
    if node.namespace.trim().is_empty() {
        return Err(format!("the hello of {:?} has no node.namespace (the proxy's --namespace)", node.id));
    }
    let service_account = if node.service_account.is_empty() {
        crate::index::DEFAULT_SERVICE_ACCOUNT.to_owned()
    } else {
        node.service_account.clone()
    };
    Ok(ProxyIdentity {
        id: node.id.clone(),
        mode: hello.mode,
        namespace: node.namespace.clone(),
        service_account,
        labels: node.labels.clone(),
        addresses: hello.ips.clone(),
    })
}

/// Translate over a shared index, as a push [`ConfigSource`]. With a [`JwksCache`], the keys of every
/// `jwksUri` are filled into the configs, and a change of keys re-pushes like a change of policy.
#[derive(Debug)]
pub struct TranslatedSource {
    index: SharedIndex,
    jwks: Option<(JwksCache, watch::Receiver<u64>)>,
    logged: Mutex<Logged>,
    shared: Mutex<SharedSides>,
}

/// The outbound sides computed at one generation, by sharing key.
#[derive(Debug, Default)]
struct SharedSides {
    generation: u64,
    /// The index's [`outbound_label_keys`] at that generation (`None` until first needed).
    label_keys: Option<Arc<BTreeSet<String>>>,
    /// Each side is computed once; sidecars asking for it meanwhile wait for it.
    sides: HashMap<SharingKey, Arc<OnceLock<Arc<SharedSide>>>>,
}

/// A sidecar outbound side as the shared sections of views.
#[derive(Debug)]
struct SharedSide {
    outbound: Arc<SentOutbound>,
    /// In name order; handed to every view as is.
    clusters: Arc<[Arc<SentCluster>]>,
    telemetry: Arc<Telemetry>,
}

/// The skipped entries already logged at one generation.
#[derive(Debug, Default)]
struct Logged {
    generation: u64,
    entries: BTreeSet<Skipped>,
}

impl TranslatedSource {
    /// A source translating `index`.
    pub fn new(index: SharedIndex) -> Self {
        Self { index, jwks: None, logged: Mutex::default(), shared: Mutex::default() }
    }

    /// A source translating `index` whose configs carry the keys `jwks` fetched for their `jwksUri`s;
    /// the cache starts following the index's wanted URIs.
    pub fn with_jwks(index: SharedIndex, jwks: JwksCache) -> Self {
        let generations = jwks.follow(index.clone());
        Self { index, jwks: Some((jwks, generations)), logged: Mutex::default(), shared: Mutex::default() }
    }

    /// The index it translates.
    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    /// The entries of `skipped` not yet logged at `generation`, now marked as logged. A new generation
    /// starts a new record, so a problem still there after a change is logged again, once.
    pub fn not_yet_logged(&self, generation: u64, skipped: &[Skipped]) -> Vec<Skipped> {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.generation != generation {
            logged.generation = generation;
            logged.entries.clear();
        }
        skipped.iter().filter(|entry| logged.entries.insert((*entry).clone())).cloned().collect()
    }

    fn log_skipped(&self, generation: u64, skipped: &[Skipped]) {
        for entry in self.not_yet_logged(generation, skipped) {
            tracing::warn!(generation, "left out: {entry}");
        }
    }

    /// The outbound side of the sidecar `identity` at `generation` (the generation `index` was read
    /// at): computed by the first sidecar of its key to ask, shared with the others. A computation for
    /// a generation older than the newest one asked for is not kept.
    fn shared_side(
        &self,
        index: &Index,
        generation: u64,
        identity: &ProxyIdentity,
        interner: &Interner,
    ) -> Arc<SharedSide> {
        let slot = {
            let mut cache = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            if cache.label_keys.is_none() || generation > cache.generation {
                *cache = SharedSides {
                    generation,
                    label_keys: Some(Arc::new(outbound_label_keys(index))),
                    sides: HashMap::new(),
                };
            }
            match (&cache.label_keys, generation == cache.generation) {
                (Some(label_keys), true) => {
                    sharing_key(identity, label_keys).map(|key| cache.sides.entry(key).or_default().clone())
                }
                _ => None,
            }
        };
        let compute = || {
            // Each cluster is encoded and shared as it is built, so the values of a side's clusters
            // are never all held at once (two sides are computed at a time at every change).
            let mut clusters = Vec::new();
            let part = sidecar_shared_into(index, identity, &mut |cluster| clusters.push(interner.cluster(cluster)));
            self.log_skipped(generation, &part.skipped);
            clusters.sort_by(|a, b| a.name().cmp(b.name()));
            Arc::new(SharedSide {
                outbound: interner.outbound(part.outbound),
                clusters: clusters.into(),
                telemetry: interner.telemetry(part.telemetry),
            })
        };
        match slot {
            Some(slot) => slot.get_or_init(compute).clone(),
            None => compute(),
        }
    }
}

impl ConfigSource for TranslatedSource {
    fn config_for(&self, hello: &Hello) -> Result<ProxyConfig, String> {
        let identity = identity(hello)?;
        let (translation, generation) = {
            let index = self.index.read();
            (translate(&index, &identity), self.index.generation())
        };
        self.log_skipped(generation, &translation.skipped);
        let mut config = translation.config;
        if let Some((jwks, _)) = &self.jwks {
            jwks.fill(&mut config);
        }
        Ok(config)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        match &self.jwks {
            Some((_, generations)) => generations.clone(),
            None => self.index.subscribe(),
        }
    }

    /// A sidecar's view: the outbound side shared with every sidecar of its key, and its own node and
    /// inbound listeners. A gateway's config is translated whole.
    fn view_for(&self, hello: &Hello, interner: &Interner) -> Result<View, String> {
        let identity = identity(hello)?;
        if identity.mode != ProxyMode::Sidecar {
            return Ok(View::new(self.config_for(hello)?, interner));
        }
        let (side, own, generation) = {
            let index = self.index.read();
            let generation = self.index.generation();
            let side = self.shared_side(&index, generation, &identity, interner);
            (side, sidecar_own(&index, &identity), generation)
        };
        self.log_skipped(generation, &own.skipped);
        let mut empty = ProxyConfig::new(String::new(), own.node, identity.mode);
        empty.inbound = own.inbound;
        if let Some((jwks, _)) = &self.jwks {
            jwks.fill(&mut empty);
        }
        Ok(View {
            version: empty.version,
            schema: empty.schema,
            node: Arc::new(empty.node),
            mode: empty.mode,
            inbound: interner.inbound(empty.inbound),
            outbound: side.outbound.clone(),
            gateway_listeners: interner.gateway_listeners(empty.gateway_listeners),
            telemetry: side.telemetry.clone(),
            clusters: side.clusters.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use trellis_api::proxy_config::{Node, ProxyMode};

    use super::*;
    use crate::index::load;

    const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-1, namespace: shop}
spec: {address: 127.0.1.2, labels: {app: backend}, serviceAccount: backend}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec: {hosts: [backend], http: [{timeout: soon, route: [{destination: {host: backend}}]}]}
";

    fn hello(id: &str, namespace: &str, ips: &[&str]) -> Hello {
        Hello {
            node: Node {
                id: id.to_owned(),
                namespace: namespace.to_owned(),
                service_account: String::new(),
                identity: String::new(),
                labels: BTreeMap::from([("app".to_owned(), "backend".to_owned())]),
            },
            mode: ProxyMode::Sidecar,
            proxy_version: "test".to_owned(),
            ips: ips.iter().map(|ip| ip.parse().expect("an IP")).collect(),
        }
    }

    fn source() -> TranslatedSource {
        let index = SharedIndex::default();
        let loaded = load::yaml("mesh.yaml", MESH);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        index.apply(loaded.changes);
        TranslatedSource::new(index)
    }

    #[test]
    fn a_hello_becomes_the_identity_translate_reads() {
        let identity = identity(&hello("backend-1.shop", "shop", &["127.0.1.2"])).expect("complete");
        assert_eq!(identity.id, "backend-1.shop");
        assert_eq!(identity.namespace, "shop");
        assert_eq!(identity.service_account, "default", "an empty service account is the default one");
        assert_eq!(identity.labels.get("app").map(String::as_str), Some("backend"));
        assert_eq!(identity.addresses, vec!["127.0.1.2".parse::<std::net::IpAddr>().expect("an IP")]);
        let err = super::identity(&hello("", "shop", &[])).expect_err("no id");
        assert!(err.contains("node.id"), "{err}");
        let err = super::identity(&hello("x.shop", "", &[])).expect_err("no namespace");
        assert!(err.contains("node.namespace") && err.contains("x.shop"), "{err}");
    }

    #[test]
    fn the_config_is_translated_for_the_workload_at_the_proxys_address() {
        let source = source();
        let config = source.config_for(&hello("backend-1.shop", "shop", &["127.0.1.2"])).expect("a config");
        assert_eq!(config.node.id, "backend-1.shop");
        assert_eq!(config.node.identity, "spiffe://cluster.local/ns/shop/sa/default");
        let inbound: Vec<u16> = config.inbound.iter().map(|l| l.port).collect();
        assert_eq!(inbound, [8080], "the service selecting its labels forwards to 8080");
        assert!(config.clusters.iter().any(|c| c.name == "outbound|80||backend.shop.svc.cluster.local"));
        let mut client = hello("client.shop", "shop", &["127.0.1.9"]);
        client.node.labels.clear();
        let client = source.config_for(&client).expect("a config");
        assert!(client.inbound.is_empty(), "no service selects a proxy without labels");
        assert!(source.config_for(&hello("", "shop", &[])).is_err());
    }

    #[test]
    fn what_translate_leaves_out_is_logged_once_per_generation() {
        let source = source();
        let index = source.index().read();
        let skipped = translate(&index, &identity(&hello("a.shop", "shop", &[])).expect("complete")).skipped;
        drop(index);
        assert!(!skipped.is_empty(), "the broken VirtualService is left out");
        assert_eq!(source.not_yet_logged(1, &skipped), skipped, "new at generation 1");
        assert!(source.not_yet_logged(1, &skipped).is_empty(), "a second proxy at the same generation logs nothing");
        assert_eq!(source.not_yet_logged(2, &skipped), skipped, "logged again after a change");
    }

    const SCOPED: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-1, namespace: shop}
spec: {address: 127.0.2.1, labels: {app: api, track: canary}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - match: [{sourceLabels: {track: canary}}]
    timeout: 3s
    route: [{destination: {host: api}}]
  - route: [{destination: {host: api}}]
";

    fn scoped_source() -> TranslatedSource {
        let index = SharedIndex::default();
        let loaded = load::yaml("mesh.yaml", &format!("{MESH}---\n{SCOPED}"));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        index.apply(loaded.changes);
        TranslatedSource::new(index)
    }

    fn labelled(id: &str, ip: &str, labels: &[(&str, &str)]) -> Hello {
        let mut hello = hello(id, "shop", &[ip]);
        hello.node.labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        hello
    }

    /// The config a view stands for, with the version translate gives (views get theirs from push).
    fn config_of(view: &View, version: &str) -> ProxyConfig {
        let mut config = view.to_config();
        config.version = version.to_owned();
        config
    }

    #[test]
    fn a_sidecars_view_is_the_config_translate_makes_for_it() {
        let source = scoped_source();
        let interner = Interner::default();
        for hello in [
            hello("backend-1.shop", "shop", &["127.0.1.2"]),
            labelled("api-1.shop", "127.0.2.1", &[("app", "api"), ("track", "canary")]),
            labelled("client.shop", "127.0.2.9", &[("app", "client")]),
        ] {
            let config = source.config_for(&hello).expect("a config");
            let view = source.view_for(&hello, &interner).expect("a view");
            assert_eq!(config_of(&view, &config.version), config, "{}", hello.node.id);
        }
    }

    #[test]
    fn sidecars_with_one_sharing_key_hold_one_outbound_side() {
        let source = scoped_source();
        let interner = Interner::default();
        let backend = source.view_for(&hello("backend-1.shop", "shop", &["127.0.1.2"]), &interner).expect("a view");
        let client =
            source.view_for(&labelled("client.shop", "127.0.2.9", &[("app", "client")]), &interner).expect("a view");
        let canary = source
            .view_for(&labelled("api-1.shop", "127.0.2.1", &[("app", "api"), ("track", "canary")]), &interner)
            .expect("a view");
        assert!(Arc::ptr_eq(&backend.outbound, &client.outbound), "same namespace, no label asked about differs");
        assert!(backend.clusters.iter().zip(client.clusters.iter()).all(|(a, b)| Arc::ptr_eq(a, b)));
        assert!(Arc::ptr_eq(&backend.clusters, &client.clusters), "the list itself is shared");
        assert_ne!(backend.outbound, canary.outbound, "the canary matches the sourceLabels route");
        assert_ne!(backend.inbound, client.inbound, "each keeps its own inbound side");
    }

    #[test]
    fn after_a_change_unchanged_clusters_keep_their_allocation() {
        let source = scoped_source();
        let interner = Interner::default();
        let hello = labelled("client.shop", "127.0.2.9", &[("app", "client")]);
        let before = source.view_for(&hello, &interner).expect("a view");
        let added = load::yaml(
            "more.yaml",
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: api-2, namespace: shop}\n\
             spec: {address: 127.0.2.2, labels: {app: api}}\n",
        );
        assert!(source.index().apply(added.changes), "the index changed");
        let after = source.view_for(&hello, &interner).expect("a view");
        let find = |view: &View, name: &str| {
            view.clusters.iter().find(|c| c.name() == name).cloned().expect("the cluster is there")
        };
        let (api, backend) = ("outbound|80||api.shop.svc.cluster.local", "outbound|80||backend.shop.svc.cluster.local");
        assert!(Arc::ptr_eq(&find(&before, backend), &find(&after, backend)), "backend did not change");
        assert_eq!(find(&before, api).to_cluster().endpoints.len() + 1, find(&after, api).to_cluster().endpoints.len());
        let delta = trellis_api::push::diff(&before.to_config(), &after.to_config()).expect("something changed");
        assert_eq!(delta.clusters.len(), 1, "only the api cluster is sent");
        assert!(delta.outbound.is_none() && delta.inbound.is_none());
    }
}
