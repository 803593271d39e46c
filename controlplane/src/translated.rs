//! The config source `trellisd` serves: each proxy's config is [`translate`] over the [`SharedIndex`]
//! for the identity its hello declares, recomputed whenever the index's generation moves.
//!
//! [`identity`] maps a proxy's [`Hello`] (node id, namespace, service account, labels, mode, IPs) to the
//! [`ProxyIdentity`] translate reads. What translate leaves out is logged once per index generation and
//! entry, not once per proxy: a thousand proxies that all see one invalid VirtualService log it once.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::watch;
use trellis_api::proxy_config::ProxyConfig;
use trellis_api::push::Hello;

use crate::jwks::JwksCache;
use crate::push::ConfigSource;
use crate::sources::SharedIndex;
use crate::translate::{ProxyIdentity, Skipped, translate};

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
        Self { index, jwks: None, logged: Mutex::default() }
    }

    /// A source translating `index` whose configs carry the keys `jwks` fetched for their `jwksUri`s;
    /// the cache starts following the index's wanted URIs.
    pub fn with_jwks(index: SharedIndex, jwks: JwksCache) -> Self {
        let generations = jwks.follow(index.clone());
        Self { index, jwks: Some((jwks, generations)), logged: Mutex::default() }
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
}

impl ConfigSource for TranslatedSource {
    fn config_for(&self, hello: &Hello) -> Result<ProxyConfig, String> {
        let identity = identity(hello)?;
        let (translation, generation) = {
            let index = self.index.read();
            (translate(&index, &identity), self.index.generation())
        };
        for entry in self.not_yet_logged(generation, &translation.skipped) {
            tracing::warn!(generation, "left out: {entry}");
        }
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
}
