//! Who sees what: `exportTo`, label selectors, the mesh root namespace, and the order in which
//! conflicting objects take precedence.
//!
//! - `exportTo` (services, ServiceEntries, VirtualServices, DestinationRules): absent or empty means every
//!   namespace; `*` every namespace; `.` the object's own namespace; `~` none; other entries are namespace
//!   names (Istio: "Cross-namespace configuration sharing", traffic management best practices).
//! - The root namespace is the Mesh's `rootNamespace` (`trellis-system` by default) and `istio-system`,
//!   accepted as its alias so Istio's YAML applies unchanged.
//! - Conflicts: Istio prefers the object in the proxy's own namespace, then the oldest one (istio/istio
//!   pull request 22868 for VirtualServices); [`Precedence`] orders by exactly that.

use trellis_api::mesh::{DEFAULT_ROOT_NAMESPACE, ISTIO_ROOT_NAMESPACE_ALIAS, MeshSpec};

use crate::index::{Age, Key, Labels};

/// `exportTo` entry meaning every namespace.
pub const EXPORT_ALL: &str = "*";
/// `exportTo` entry meaning the object's own namespace.
pub const EXPORT_OWN: &str = ".";
/// `exportTo` entry meaning no namespace.
pub const EXPORT_NONE: &str = "~";

/// Whether an object of `object_ns` with `export_to` is visible to workloads in `viewer_ns`.
pub fn exported(export_to: &[String], object_ns: &str, viewer_ns: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|entry| match entry.as_str() {
        EXPORT_ALL => true,
        EXPORT_OWN => object_ns == viewer_ns,
        EXPORT_NONE => false,
        ns => ns == viewer_ns,
    })
}

/// Whether `labels` carry every pair of `selector` (an empty selector selects everything).
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The namespaces whose policy applies mesh-wide: the Mesh's root namespace and the `istio-system` alias.
pub fn root_namespaces(mesh: Option<&MeshSpec>) -> Vec<String> {
    let configured = mesh.map_or(DEFAULT_ROOT_NAMESPACE, |m| m.root_namespace.as_str());
    let mut roots = vec![configured.to_owned()];
    if configured != ISTIO_ROOT_NAMESPACE_ALIAS {
        roots.push(ISTIO_ROOT_NAMESPACE_ALIAS.to_owned());
    }
    roots
}

/// The sort key of an object among conflicting ones, smallest first: in the proxy's namespace, then
/// older, then by kind, namespace and name so the order is total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    elsewhere: bool,
    age: Age,
    key: Key,
}

impl Precedence {
    pub fn new(key: &Key, age: Age, proxy_ns: &str) -> Self {
        Self { elsewhere: &*key.namespace != proxy_ns, age, key: key.clone() }
    }

    /// Why the first of two conflicting objects wins over the second.
    pub fn why_first(&self, second: &Precedence) -> &'static str {
        if self.elsewhere != second.elsewhere {
            "it is in the proxy's namespace"
        } else if self.age != second.age {
            "it is older"
        } else {
            "it sorts first by namespace and name"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn export_to_follows_istios_dot_star_tilde_and_namespace_names() {
        assert!(exported(&[], "a", "b"), "absent means everywhere");
        assert!(exported(&strings(&["*"]), "a", "b"));
        assert!(exported(&strings(&["."]), "a", "a"));
        assert!(!exported(&strings(&["."]), "a", "b"));
        assert!(!exported(&strings(&["~"]), "a", "a"));
        assert!(exported(&strings(&[".", "c"]), "a", "c"));
        assert!(!exported(&strings(&["c"]), "a", "b"));
    }

    #[test]
    fn istio_system_is_a_root_namespace_beside_the_configured_one() {
        assert_eq!(root_namespaces(None), ["trellis-system", "istio-system"]);
    }
}
