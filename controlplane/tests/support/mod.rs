//! Shared helpers of the translate tests: YAML fixtures into an index, proxy identities, and lookups in
//! the produced config that fail with a readable message.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trellis_api::proxy_config::{Cluster, GatewayListener, ProxyConfig, ProxyMode, Route, RouteAction, VirtualHost};
use trellis_controlplane::index::{Key, Kind, load};
use trellis_controlplane::{Index, ProxyIdentity, Skipped, Translation, translate};

/// The folder of fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// Every YAML file under `name` (a file or a folder, read in name order).
fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).expect("fixture folder").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        entries.into_iter().flat_map(|p| files(&p)).collect()
    } else {
        vec![path.to_owned()]
    }
}

/// An index of the fixtures `names` (files or folders under `tests/fixtures`), in order.
pub fn index(names: &[&str]) -> Index {
    let mut index = Index::new();
    for name in names {
        for file in files(&fixtures().join(name)) {
            let text = std::fs::read_to_string(&file).expect("fixture is readable");
            let loaded = load::yaml(&file.display().to_string(), &text);
            assert!(loaded.problems.is_empty(), "{}: {:?}", file.display(), loaded.problems);
            index.apply_all(loaded.changes);
        }
    }
    index
}

/// The sidecar of the WorkloadEntry `namespace/name`.
pub fn sidecar(index: &Index, namespace: &str, name: &str) -> ProxyIdentity {
    let key = Key::new(Kind::WorkloadEntry, namespace, name);
    ProxyIdentity::for_workload(index, &key, ProxyMode::Sidecar)
        .or_else(|| ProxyIdentity::for_workload(index, &Key::new(Kind::Pod, namespace, name), ProxyMode::Sidecar))
        .unwrap_or_else(|| panic!("no workload {namespace}/{name} in the fixture"))
}

/// A proxy identity from scratch.
pub fn proxy(namespace: &str, labels: &[(&str, &str)], mode: ProxyMode) -> ProxyIdentity {
    ProxyIdentity {
        id: format!("test.{namespace}"),
        mode,
        namespace: namespace.to_owned(),
        service_account: "default".to_owned(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        addresses: Vec::new(),
    }
}

/// Translates and checks what every translation must satisfy: the config passes its own check and the
/// proxy compiles it.
pub fn run(index: &Index, proxy: &ProxyIdentity) -> Translation {
    let translation = translate(index, proxy);
    let issues = translation.config.check();
    assert!(!issues.has_errors(), "check failed: {:?}", issues.iter().collect::<Vec<_>>());
    let metrics = trellis_proxy::metrics::Metrics::new();
    if let Err(err) = trellis_proxy::state::compile(translation.config.clone(), None, &metrics) {
        panic!("the proxy refuses the config: {err}");
    }
    translation
}

/// The outbound virtual host of `name` on `port`.
pub fn vhost<'c>(config: &'c ProxyConfig, name: &str, port: u16) -> &'c VirtualHost {
    config.outbound.virtual_hosts.iter().find(|v| v.name == name && v.port == port).unwrap_or_else(|| {
        let known: Vec<String> =
            config.outbound.virtual_hosts.iter().map(|v| format!("{}:{}", v.name, v.port)).collect();
        panic!("no virtual host {name}:{port}; have {known:?}")
    })
}

/// Whether there is an outbound virtual host of `name` on any port.
pub fn has_vhost(config: &ProxyConfig, name: &str) -> bool {
    config.outbound.virtual_hosts.iter().any(|v| v.name == name)
}

/// The gateway listener on `port`.
pub fn listener(config: &ProxyConfig, port: u16) -> &GatewayListener {
    config.gateway_listeners.iter().find(|l| l.port == port).unwrap_or_else(|| {
        let known: Vec<u16> = config.gateway_listeners.iter().map(|l| l.port).collect();
        panic!("no gateway listener on {port}; have {known:?}")
    })
}

/// The virtual host `name` of a gateway listener.
pub fn gateway_vhost<'l>(listener: &'l GatewayListener, name: &str) -> &'l VirtualHost {
    listener.virtual_hosts.iter().find(|v| v.name == name).unwrap_or_else(|| {
        let known: Vec<&str> = listener.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
        panic!("no gateway virtual host {name}; have {known:?}")
    })
}

/// The cluster `name`.
pub fn cluster<'c>(config: &'c ProxyConfig, name: &str) -> &'c Cluster {
    config.clusters.iter().find(|c| c.name == name).unwrap_or_else(|| {
        let known: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        panic!("no cluster {name}; have {known:?}")
    })
}

/// `(cluster, weight)` of a forwarding route.
pub fn targets(route: &Route) -> Vec<(&str, u32)> {
    match &route.action {
        RouteAction::Forward { clusters, .. } => clusters.iter().map(|c| (c.cluster.as_str(), c.weight)).collect(),
        other => panic!("route {} does not forward: {other:?}", route.name),
    }
}

/// The endpoint addresses of a cluster, as text.
pub fn addresses(cluster: &Cluster) -> Vec<String> {
    cluster.endpoints.iter().map(|e| e.address.to_string()).collect()
}

/// The skipped entries about the object `kind namespace/name`, as `path: reason` lines.
pub fn skipped_about(translation: &Translation, kind: Kind, namespace: &str, name: &str) -> Vec<String> {
    let key = Key::new(kind, namespace, name);
    translation
        .skipped
        .iter()
        .filter(|s| s.object == key)
        .map(|s: &Skipped| format!("{}: {}", s.path, s.reason))
        .collect()
}
