//! The index: one typed, in-memory picture of the mesh that every source feeds and translate reads.
//!
//! Sources (a Kubernetes watch, a folder of YAML) turn what they see into [`Change`]s: an upsert of a
//! [`Resource`] or a delete by [`Key`]. The index keeps each object under its `(kind, namespace, name)`
//! key with its [`Age`] (which decides Istio's "oldest wins" precedence), and derives from them the
//! service registry (Kubernetes Services and every host of every valid ServiceEntry, as [`Service`]s) and
//! the workloads (pods and valid WorkloadEntries, as [`Workload`]s). Invalid Istio objects are kept too,
//! with their errors, so translate can name them while skipping them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use trellis_api::mesh::MeshSpec;
use trellis_api::object::Object;

pub mod istio;
pub mod kubernetes;
pub mod load;
mod model;

pub use model::*;

/// Name of the `Mesh` translate uses when there are several.
pub const DEFAULT_MESH_NAME: &str = "default";

/// One update from a source.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Adds or replaces the object under the resource's key. `created` is its creation time in Unix
    /// seconds, when the source knows it.
    Upsert { resource: Resource, created: Option<i64> },
    /// Removes the object under the key, if any.
    Delete(Key),
}

impl Change {
    /// An upsert without a creation time (files): the object ranks by the order it was first seen.
    pub fn upsert(resource: Resource) -> Self {
        Change::Upsert { resource, created: None }
    }
}

impl Resource {
    /// A valid WorkloadEntry as the index keeps it ([`Resource::WorkloadEntry`]); any other resource
    /// as it is. Sources that hold objects until they are indexed (the folder source reads a whole
    /// folder first) compact them as they read them, so ten thousand typed entries are never held at once.
    pub fn compact(self) -> Resource {
        let Resource::Config(config) = &self else { return self };
        let Some(Object::WorkloadEntry(entry)) = config.valid() else { return self };
        Resource::WorkloadEntry(Arc::new(istio::workload(&self.key(), &entry.spec)))
    }

    /// Where the resource is kept in the index.
    pub fn key(&self) -> Key {
        match self {
            Resource::Namespace(ns) => Key::new(Kind::Namespace, "", &ns.name),
            Resource::Service(s) => Key::new(Kind::Service, &s.namespace, &s.name),
            Resource::EndpointSlice(s) => Key::new(Kind::EndpointSlice, &s.namespace, &s.name),
            Resource::Pod(p) => Key::new(Kind::Pod, &p.namespace, &p.name),
            Resource::Config(c) => Key::new(c.kind, &c.id.namespace, &c.id.name),
            Resource::WorkloadEntry(w) => Key::new(Kind::WorkloadEntry, &w.namespace, &w.name),
        }
    }
}

/// An object in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub age: Age,
    pub resource: Resource,
}

/// The typed, in-memory picture of the mesh.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: BTreeMap<Key, Entry>,
    /// The registry, by origin key and host name.
    services: BTreeMap<(Key, String), Service>,
    /// Pods and WorkloadEntries, by their key (a WorkloadEntry's is also its entry's resource).
    workloads: BTreeMap<Key, Arc<Workload>>,
    /// The label maps of `workloads`, one allocation per distinct map (see [`Workload::labels`]).
    labels: BTreeSet<Arc<Labels>>,
    /// The namespace names of the keys held, one allocation each (see [`Key`]). Never shrinks: a
    /// mesh has few namespaces.
    namespaces: BTreeSet<Arc<str>>,
    next_seq: u64,
    /// The mesh settings when no valid `Mesh` object is held (`trellisd --root-namespace`).
    default_mesh: Option<MeshSpec>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one change; returns whether the index changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Upsert { resource, created } => {
                let resource = self.compact(resource);
                let key = resource.key();
                let (key, age) = match self.entries.get_key_value(&key) {
                    Some((_, existing)) if existing.resource == resource && existing.age.created == created => {
                        return false;
                    }
                    Some((held, existing)) => (held.clone(), Age { created, seq: existing.age.seq }),
                    None => {
                        self.next_seq += 1;
                        (self.shared_namespace(key), Age { created, seq: self.next_seq })
                    }
                };
                let stale = self.forget_derived(&key);
                self.derive(&key, &resource);
                self.entries.insert(key, Entry { age, resource });
                self.release_labels(stale);
                true
            }
            Change::Delete(key) => {
                let stale = self.forget_derived(&key);
                let removed = self.entries.remove(&key).is_some();
                self.release_labels(stale);
                removed
            }
        }
    }

    /// Applies every change in order.
    pub fn apply_all(&mut self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            self.apply(change);
        }
    }

    /// `key` with the namespace name already held, if it is.
    fn shared_namespace(&mut self, mut key: Key) -> Key {
        match self.namespaces.get(&key.namespace) {
            Some(shared) => key.namespace = shared.clone(),
            None => {
                self.namespaces.insert(key.namespace.clone());
            }
        }
        key
    }

    /// [`Resource::compact`], with the labels of an equal map already held.
    fn compact(&self, resource: Resource) -> Resource {
        let workload = match resource.compact() {
            Resource::WorkloadEntry(workload) => workload,
            other => return other,
        };
        match self.labels.get(workload.labels.as_ref()) {
            Some(shared) if !Arc::ptr_eq(shared, &workload.labels) => {
                let mut workload = Arc::unwrap_or_clone(workload);
                workload.labels = shared.clone();
                Resource::WorkloadEntry(Arc::new(workload))
            }
            _ => Resource::WorkloadEntry(workload),
        }
    }

    /// Drops what `key`'s object derived; returns the labels of its workload, if it had one.
    fn forget_derived(&mut self, key: &Key) -> Option<Arc<Labels>> {
        let stale: Vec<(Key, String)> = self
            .services
            .range((key.clone(), String::new())..)
            .take_while(|((origin, _), _)| origin == key)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.services.remove(&k);
        }
        self.workloads.remove(key).map(|workload| workload.labels.clone())
    }

    /// Forgets the shared labels of a workload that is gone once nothing else holds them (the set's
    /// reference and `labels` are the last two; a replaced pod's or WorkloadEntry's resource has been
    /// dropped by now).
    fn release_labels(&mut self, labels: Option<Arc<Labels>>) {
        if let Some(labels) = labels
            && Arc::strong_count(&labels) <= 2
        {
            self.labels.remove(labels.as_ref());
        }
    }

    /// `workload` with the labels of an equal map already held, so equal maps are held once.
    fn add_workload(&mut self, key: &Key, mut workload: Workload) {
        match self.labels.get(workload.labels.as_ref()) {
            Some(shared) => workload.labels = shared.clone(),
            None => {
                self.labels.insert(workload.labels.clone());
            }
        }
        self.workloads.insert(key.clone(), Arc::new(workload));
    }

    /// A WorkloadEntry's workload (labels already shared by [`Index::compact`] when an equal map was
    /// held), listed as it is.
    fn add_shared_workload(&mut self, key: &Key, workload: &Arc<Workload>) {
        if !self.labels.contains(workload.labels.as_ref()) {
            self.labels.insert(workload.labels.clone());
        }
        self.workloads.insert(key.clone(), workload.clone());
    }

    fn derive(&mut self, key: &Key, resource: &Resource) {
        let services = match resource {
            Resource::Service(service) => vec![kubernetes::registry_entry(service)],
            Resource::Config(config) => match config.valid() {
                Some(Object::ServiceEntry(entry)) => istio::registry_entries(key, &entry.spec),
                // Not reached: `compact` made a valid WorkloadEntry a `Resource::WorkloadEntry`.
                Some(Object::WorkloadEntry(entry)) => {
                    self.add_workload(key, istio::workload(key, &entry.spec));
                    Vec::new()
                }
                _ => Vec::new(),
            },
            Resource::WorkloadEntry(workload) => {
                self.add_shared_workload(key, workload);
                Vec::new()
            }
            Resource::Pod(pod) => {
                self.add_workload(key, pod.as_ref().clone());
                Vec::new()
            }
            Resource::Namespace(_) | Resource::EndpointSlice(_) => Vec::new(),
        };
        for service in services {
            self.services.insert((key.clone(), service.hostname.clone()), service);
        }
    }

    /// The object under `key`.
    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The index's own copy of `key` (whose texts a source can share instead of holding its own).
    pub fn key(&self, key: &Key) -> Option<&Key> {
        self.entries.get_key_value(key).map(|(held, _)| held)
    }

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every object of `kind`, by namespace and name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.range(Key::new(kind, "", "")..).take_while(move |(k, _)| k.kind == kind)
    }

    /// Every object of `kind` in `namespace`, by name.
    pub fn in_namespace(&self, kind: Kind, namespace: &str) -> impl Iterator<Item = (&Key, &Entry)> + use<'_> {
        let namespace = namespace.to_owned();
        self.entries
            .range(Key::new(kind, namespace.as_str(), "")..)
            .take_while(move |(k, _)| k.kind == kind && *k.namespace == *namespace)
    }

    /// Every valid Istio object of `kind`, with its key and age. Valid WorkloadEntries are kept as their
    /// workloads ([`Resource::WorkloadEntry`], read through [`Index::workloads`]), so not listed here.
    pub fn configs(&self, kind: Kind) -> impl Iterator<Item = (&Key, Age, &Object)> {
        self.of_kind(kind).filter_map(|(key, entry)| match &entry.resource {
            Resource::Config(config) => config.valid().map(|object| (key, entry.age, object)),
            _ => None,
        })
    }

    /// Every Istio object that failed validation, with its key.
    pub fn invalid(&self) -> impl Iterator<Item = (&Key, &Config)> {
        self.entries.iter().filter_map(|(key, entry)| match &entry.resource {
            Resource::Config(config) if config.valid().is_none() => Some((key, config.as_ref())),
            _ => None,
        })
    }

    /// The age of the object under `key` (the default age when it is unknown).
    pub fn age(&self, key: &Key) -> Age {
        self.entries.get(key).map(|e| e.age).unwrap_or_default()
    }

    /// The service registry: every Kubernetes Service and every host of every valid ServiceEntry.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// Every pod and valid WorkloadEntry.
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values().map(Arc::as_ref)
    }

    /// The workload under that key (kind `Pod` or `WorkloadEntry`).
    pub fn workload(&self, key: &Key) -> Option<&Workload> {
        self.workloads.get(key).map(Arc::as_ref)
    }

    /// The workloads of `namespace`.
    pub fn workloads_in(&self, namespace: &str) -> impl Iterator<Item = &Workload> + use<'_> {
        let namespace = namespace.to_owned();
        [Kind::Pod, Kind::WorkloadEntry].into_iter().flat_map(move |kind| {
            let namespace = namespace.clone();
            self.workloads
                .range(Key::new(kind, namespace.as_str(), "")..)
                .take_while(move |(k, _)| k.kind == kind && *k.namespace == *namespace)
                .map(|(_, w)| w.as_ref())
        })
    }

    /// The EndpointSlices of the Service `namespace/service`.
    pub fn endpoint_slices(&self, namespace: &str, service: &str) -> impl Iterator<Item = &EndpointSlice> + use<'_> {
        let service = service.to_owned();
        self.in_namespace(Kind::EndpointSlice, namespace).filter_map(move |(_, entry)| match &entry.resource {
            Resource::EndpointSlice(slice) if slice.service == service => Some(slice.as_ref()),
            _ => None,
        })
    }

    /// The namespace of that name, if a source reported it.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.entries.get(&Key::new(Kind::Namespace, "", name)).map(|e| &e.resource) {
            Some(Resource::Namespace(ns)) => Some(ns.as_ref()),
            _ => None,
        }
    }

    /// Sets the mesh settings used while no valid `Mesh` object is held; returns whether they changed.
    pub fn set_default_mesh(&mut self, mesh: Option<MeshSpec>) -> bool {
        let changed = self.default_mesh != mesh;
        self.default_mesh = mesh;
        changed
    }

    /// The mesh settings: the valid `Mesh` named [`DEFAULT_MESH_NAME`], else the first valid one, else
    /// the default set with [`Index::set_default_mesh`].
    pub fn mesh(&self) -> Option<&MeshSpec> {
        let mut meshes = self.configs(Kind::Mesh).filter_map(|(key, _, object)| match object {
            Object::Mesh(mesh) => Some((key, &mesh.spec)),
            _ => None,
        });
        let Some(first) = meshes.next() else { return self.default_mesh.as_ref() };
        if &*first.0.name == DEFAULT_MESH_NAME {
            return Some(first.1);
        }
        Some(meshes.find(|(key, _)| &*key.name == DEFAULT_MESH_NAME).unwrap_or(first).1)
    }
}

#[cfg(test)]
mod tests;
