//! Which sidecars get the same outbound side: the key under which the control plane computes a
//! sidecar's outbound virtual hosts and clusters once and hands the result to every sidecar with that
//! key.
//!
//! A sidecar's outbound side ([`super::sidecar_shared`]) depends on the index, the proxy's namespace
//! (visibility, precedence, client host names, which DestinationRule applies) and its labels, but only
//! through the label keys some object asks about: a VirtualService match's `sourceLabels` (HTTP, TCP
//! and TLS) and a DestinationRule's `workloadSelector`. It never reads the proxy's id, service account,
//! addresses or its own workload. So the [`SharingKey`] is the namespace and the proxy's labels cut
//! down to those keys ([`outbound_label_keys`]); in a mesh without `sourceLabels` and workload-scoped
//! DestinationRules, every sidecar of a namespace shares one outbound side.

use std::collections::BTreeSet;

use trellis_api::object::Object;
use trellis_api::proxy_config::ProxyMode;

use super::ProxyIdentity;
use crate::index::{Index, Kind, Labels};

/// What decides a sidecar's outbound side besides the index: equal keys, equal outbound sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharingKey {
    pub namespace: String,
    /// The proxy's labels whose keys appear in [`outbound_label_keys`].
    pub labels: Labels,
}

/// Every label key a sidecar's outbound side may depend on: the keys of every valid VirtualService's
/// match `sourceLabels` and of every valid DestinationRule's `workloadSelector`.
pub fn outbound_label_keys(index: &Index) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (_, _, object) in index.configs(Kind::VirtualService) {
        let Object::VirtualService(vs) = object else { continue };
        let spec = &vs.spec;
        let http = spec.http.iter().flatten().flat_map(|r| r.r#match.iter().flatten()).map(|m| &m.source_labels);
        let tcp = spec.tcp.iter().flatten().flat_map(|r| r.r#match.iter().flatten()).map(|m| &m.source_labels);
        let tls = spec.tls.iter().flatten().flat_map(|r| r.r#match.iter()).map(|m| &m.source_labels);
        keys.extend(http.chain(tcp).chain(tls).flatten().flat_map(|labels| labels.keys().cloned()));
    }
    for (_, _, object) in index.configs(Kind::DestinationRule) {
        let Object::DestinationRule(rule) = object else { continue };
        let selector = rule.spec.workload_selector.as_ref().and_then(|s| s.match_labels.as_ref());
        keys.extend(selector.into_iter().flat_map(|labels| labels.keys().cloned()));
    }
    keys
}

/// The key of `proxy`'s outbound side, given the index's [`outbound_label_keys`]; `None` for a gateway
/// proxy, whose config is translated whole.
pub fn sharing_key(proxy: &ProxyIdentity, label_keys: &BTreeSet<String>) -> Option<SharingKey> {
    if proxy.mode != ProxyMode::Sidecar {
        return None;
    }
    let labels = proxy.labels.iter().filter(|(k, _)| label_keys.contains(*k)).map(|(k, v)| (k.clone(), v.clone()));
    Some(SharingKey { namespace: proxy.namespace.clone(), labels: labels.collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::load;

    const SCOPED: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: canary, namespace: shop}
spec:
  hosts: [backend]
  http:
  - match: [{sourceLabels: {track: canary}}]
    route: [{destination: {host: backend}}]
  tcp:
  - match: [{sourceLabels: {tier: edge}}]
    route: [{destination: {host: backend}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: shop}
spec:
  host: backend
  workloadSelector: {matchLabels: {team: payments}}
";

    fn index(yaml: &str) -> Index {
        let loaded = load::yaml("mesh.yaml", yaml);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let mut index = Index::new();
        index.apply_all(loaded.changes);
        index
    }

    fn proxy(namespace: &str, labels: &[(&str, &str)]) -> ProxyIdentity {
        ProxyIdentity {
            id: format!("p.{namespace}"),
            mode: ProxyMode::Sidecar,
            namespace: namespace.to_owned(),
            service_account: "default".to_owned(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn source_labels_and_destination_rule_selectors_name_the_label_keys_that_matter() {
        let keys = outbound_label_keys(&index(SCOPED));
        assert_eq!(keys, BTreeSet::from(["team".to_owned(), "tier".to_owned(), "track".to_owned()]));
        assert!(outbound_label_keys(&Index::new()).is_empty());
    }

    #[test]
    fn sidecars_of_one_namespace_share_unless_a_label_someone_asks_about_differs() {
        let keys = BTreeSet::from(["track".to_owned()]);
        let a = sharing_key(&proxy("shop", &[("app", "a"), ("track", "stable")]), &keys);
        let b = sharing_key(&proxy("shop", &[("app", "b"), ("track", "stable")]), &keys);
        let canary = sharing_key(&proxy("shop", &[("app", "a"), ("track", "canary")]), &keys);
        let elsewhere = sharing_key(&proxy("web", &[("app", "a"), ("track", "stable")]), &keys);
        assert_eq!(a, b, "app is not asked about");
        assert_ne!(a, canary);
        assert_ne!(a, elsewhere);
        let mut gateway = proxy("shop", &[]);
        gateway.mode = ProxyMode::Gateway;
        assert_eq!(sharing_key(&gateway, &keys), None, "gateways are translated whole");
    }
}
