//! From watch events to index changes, without I/O: each object read from the API server becomes an
//! [`Item`] (its key, the change it makes or why it cannot be part of the index, and for Istio kinds what
//! its status should say), and [`Ingest`] applies them with the watcher's re-list semantics.
//!
//! A re-list (`Init`, `InitApply`..., `InitDone`) is buffered and applied at its end as one picture of the
//! kind: objects the list no longer holds were deleted while the watch was down, and are deleted from the
//! index too. Until then the index keeps what it had, as a reflector's store does.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;
use trellis_api::Issue;
use trellis_api::istio::{
    AuthorizationPolicy, DestinationRule, Gateway, PeerAuthentication, RequestAuthentication, ServiceEntry,
    VirtualService, WorkloadEntry,
};
use trellis_api::mesh::Mesh;
use trellis_api::object::{self, DEFAULT_NAMESPACE};
use trellis_api::rate_limit::RateLimitPolicy;
use trellis_api::status::{CONDITION_ACCEPTED, Status};

use crate::Error;
use crate::index::{Change, Config, Index, Key, Kind, Resource, kubernetes};

/// Reason of the `Accepted=False` condition Trellis writes on an object it ignores as invalid.
pub const REASON_INVALID: &str = "Invalid";
/// Longest condition message written (the API server accepts 32768 bytes); longer lists of errors are
/// cut at an error boundary and say how many were left out.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The API resource (group, version, plural) Trellis watches and writes status to for an Istio kind or
/// the `Mesh`, at the version the CRDs store; `None` for Kubernetes kinds.
pub fn api_resource(kind: Kind) -> Option<ApiResource> {
    Some(match kind {
        Kind::Mesh => ApiResource::erase::<Mesh>(&()),
        Kind::ServiceEntry => ApiResource::erase::<ServiceEntry>(&()),
        Kind::WorkloadEntry => ApiResource::erase::<WorkloadEntry>(&()),
        Kind::VirtualService => ApiResource::erase::<VirtualService>(&()),
        Kind::DestinationRule => ApiResource::erase::<DestinationRule>(&()),
        Kind::Gateway => ApiResource::erase::<Gateway>(&()),
        Kind::PeerAuthentication => ApiResource::erase::<PeerAuthentication>(&()),
        Kind::AuthorizationPolicy => ApiResource::erase::<AuthorizationPolicy>(&()),
        Kind::RequestAuthentication => ApiResource::erase::<RequestAuthentication>(&()),
        Kind::RateLimitPolicy => ApiResource::erase::<RateLimitPolicy>(&()),
        Kind::Namespace | Kind::Service | Kind::EndpointSlice | Kind::Pod => return None,
    })
}

/// What the status of an Istio object says (or should say) about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report: the object carries no Trellis condition.
    Valid,
    /// `Accepted=False`, reason [`REASON_INVALID`], with the errors that made Trellis ignore it.
    Rejected { generation: Option<i64>, message: String },
}

/// What the status writer needs to know about one Istio object.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    /// What the status should say.
    pub desired: Verdict,
    /// What it said when the object was read, and since when (the condition's `lastTransitionTime`).
    pub observed: Verdict,
    pub observed_since: Option<Time>,
}

/// One object read from the API server.
#[derive(Debug)]
pub struct Item {
    pub key: Key,
    /// The upsert, or why the object cannot be part of the index (it is then removed from it).
    pub outcome: Result<Change, Error>,
    /// For Istio kinds and the `Mesh`: the status to write.
    pub status: Option<StatusTarget>,
}

/// Istio objects touched by a batch, each with its status target (`None`: deleted).
pub type Touched = Vec<(Key, Option<StatusTarget>)>;

/// What a watch of one kind reports, in the watcher's terms.
#[derive(Debug)]
pub enum SourceEvent {
    /// An object was added or modified.
    Apply(Item),
    /// An object was deleted.
    Delete(Key),
    /// A (re-)list of the kind starts.
    Init(Kind),
    /// An object of the (re-)list.
    InitApply(Item),
    /// The (re-)list is complete: the kind holds exactly the objects it listed.
    InitDone(Kind),
}

/// The key an object of `kind` has in the index: cluster-scoped kinds have no namespace; namespaced
/// objects without one are in `default`, as everywhere in Trellis.
pub fn key_of(kind: Kind, meta: &ObjectMeta) -> Key {
    let namespace = match kind {
        Kind::Namespace | Kind::Mesh => String::new(),
        _ => meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
    };
    Key::new(kind, namespace, meta.name.clone().unwrap_or_default())
}

fn kube_item(kind: Kind, meta: &ObjectMeta, resource: Result<Resource, Error>) -> Item {
    let outcome = resource.map(|resource| Change::Upsert { resource, created: kubernetes::created(meta) });
    Item { key: key_of(kind, meta), outcome, status: None }
}

/// A Kubernetes Service as an item.
pub fn service_item(source: &str, object: &core::Service) -> Item {
    kube_item(
        Kind::Service,
        &object.metadata,
        kubernetes::service(source, object).map(|s| Resource::Service(Box::new(s))),
    )
}

/// An EndpointSlice as an item.
pub fn endpoint_slice_item(source: &str, object: &discovery::EndpointSlice) -> Item {
    let resource = kubernetes::endpoint_slice(source, object).map(|s| Resource::EndpointSlice(Box::new(s)));
    kube_item(Kind::EndpointSlice, &object.metadata, resource)
}

/// A Pod as an item.
pub fn pod_item(source: &str, object: &core::Pod) -> Item {
    kube_item(Kind::Pod, &object.metadata, kubernetes::pod(source, object).map(|p| Resource::Pod(Box::new(p))))
}

/// A Namespace as an item.
pub fn namespace_item(source: &str, object: &core::Namespace) -> Item {
    kube_item(
        Kind::Namespace,
        &object.metadata,
        kubernetes::namespace(source, object).map(|n| Resource::Namespace(Box::new(n))),
    )
}

/// An Istio object (or the `Mesh`), read without a type so that one that does not decode is still seen:
/// it is decoded and validated by `trellis_api::object::decode`, as the folder source and `trellis analyze`
/// do. Its `status`, `resourceVersion` and `managedFields` are left out first: they change when Trellis
/// writes the status, which must not count as a change of the object.
pub fn config_item(source: &str, kind: Kind, resource: &ApiResource, object: &DynamicObject) -> Item {
    let key = key_of(kind, &object.metadata);
    let generation = object.metadata.generation;
    let (observed, observed_since) = observed_verdict(object.data.get("status"));
    let value = match serde_json::to_value(object) {
        Ok(value) => normalized(value, resource),
        Err(err) => {
            let problem = Error::Kubernetes {
                source_name: source.to_owned(),
                object: key.to_string(),
                field: String::new(),
                message: format!("cannot be read: {err}"),
            };
            let desired = Verdict::Rejected { generation, message: problem.to_string() };
            return Item {
                key,
                outcome: Err(problem),
                status: Some(StatusTarget { desired, observed, observed_since }),
            };
        }
    };
    let decoded = object::decode(&value);
    let first_error = decoded.issues.iter().find(|i| i.severity == trellis_api::Severity::Error).cloned();
    let (outcome, desired) = match Config::from_decoded(decoded) {
        Some(config) => {
            let desired = match rejection_message(&config.errors) {
                Some(message) => Verdict::Rejected { generation, message },
                None => Verdict::Valid,
            };
            let created = kubernetes::created(&object.metadata);
            (Ok(Change::Upsert { resource: Resource::Config(Box::new(config)), created }), desired)
        }
        None => {
            let message = first_error.map_or_else(
                || format!("is not a {} of {}", resource.kind, resource.api_version),
                |issue| format!("{}: {}", issue.path, issue.message),
            );
            let problem = Error::Kubernetes {
                source_name: source.to_owned(),
                object: key.to_string(),
                field: String::new(),
                message: message.clone(),
            };
            (Err(problem), Verdict::Rejected { generation, message })
        }
    };
    Item { key, outcome, status: Some(StatusTarget { desired, observed, observed_since }) }
}

fn normalized(mut value: Value, resource: &ApiResource) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        map.insert("apiVersion".to_owned(), Value::String(resource.api_version.clone()));
        map.insert("kind".to_owned(), Value::String(resource.kind.clone()));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
    }
    value
}

/// The condition message naming every error of an invalid object: `field.path: message; ...`, cut at
/// [`MAX_MESSAGE_BYTES`]; `None` when there is none.
pub fn rejection_message(errors: &[Issue]) -> Option<String> {
    if errors.is_empty() {
        return None;
    }
    let mut message = String::new();
    for (i, issue) in errors.iter().enumerate() {
        let part = if issue.path.segments().is_empty() {
            issue.message.clone()
        } else {
            format!("{}: {}", issue.path, issue.message)
        };
        let separator = if i == 0 { "" } else { "; " };
        let left = errors.len() - i;
        let more = format!("; and {left} more");
        if message.len() + separator.len() + part.len() + more.len() > MAX_MESSAGE_BYTES && i > 0 {
            message.push_str(&more);
            break;
        }
        message.push_str(separator);
        message.push_str(&part);
    }
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Some(message)
}

/// What the `Accepted` condition of a status says, in Trellis's terms: rejected only when it is
/// `False` with reason [`REASON_INVALID`] (the one Trellis writes).
pub fn observed_verdict(status: Option<&Value>) -> (Verdict, Option<Time>) {
    let Some(status) = status.and_then(|s| serde_json::from_value::<Status>(s.clone()).ok()) else {
        return (Verdict::Valid, None);
    };
    match status.conditions.into_iter().find(|c| c.type_ == CONDITION_ACCEPTED) {
        Some(c) if c.status == "False" && c.reason == REASON_INVALID => {
            (Verdict::Rejected { generation: c.observed_generation, message: c.message }, Some(c.last_transition_time))
        }
        _ => (Verdict::Valid, None),
    }
}

/// Applies watch events to an index, remembering what a re-list needs and what the status writer and
/// operators need: the objects that could not be read, and the Istio objects whose status may need
/// writing.
#[derive(Debug, Default)]
pub struct Ingest {
    /// Items of re-lists in progress, by kind.
    relisting: BTreeMap<Kind, Vec<Item>>,
    /// Objects left out of the index, and why.
    problems: BTreeMap<Key, String>,
    /// Istio objects present, with what their status should say.
    statuses: BTreeMap<Key, StatusTarget>,
    /// Istio objects added, changed or deleted since the last [`Ingest::take_touched`].
    touched: BTreeSet<Key>,
}

impl Ingest {
    /// An ingest that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; returns whether the index changed.
    pub fn handle(&mut self, index: &mut Index, event: SourceEvent) -> bool {
        match event {
            SourceEvent::Apply(item) => self.accept(index, item),
            SourceEvent::Delete(key) => self.forget(index, &key),
            SourceEvent::Init(kind) => {
                self.relisting.insert(kind, Vec::new());
                false
            }
            SourceEvent::InitApply(item) => match self.relisting.get_mut(&item.key.kind) {
                Some(items) => {
                    items.push(item);
                    false
                }
                None => self.accept(index, item),
            },
            SourceEvent::InitDone(kind) => {
                let items = self.relisting.remove(&kind).unwrap_or_default();
                let listed: BTreeSet<Key> = items.iter().map(|item| item.key.clone()).collect();
                let mut changed = false;
                for item in items {
                    changed |= self.accept(index, item);
                }
                let gone: BTreeSet<Key> = index
                    .of_kind(kind)
                    .map(|(key, _)| key)
                    .chain(self.problems.keys().filter(|k| k.kind == kind))
                    .chain(self.statuses.keys().filter(|k| k.kind == kind))
                    .filter(|key| !listed.contains(*key))
                    .cloned()
                    .collect();
                for key in gone {
                    changed |= self.forget(index, &key);
                }
                changed
            }
        }
    }

    fn accept(&mut self, index: &mut Index, item: Item) -> bool {
        let Item { key, outcome, status } = item;
        let changed = match outcome {
            Ok(change) => {
                self.problems.remove(&key);
                index.apply(change)
            }
            Err(problem) => {
                let reason = problem.to_string();
                if self.problems.get(&key) != Some(&reason) {
                    tracing::warn!(object = %key, "left out of the index: {reason}");
                }
                self.problems.insert(key.clone(), reason);
                index.apply(Change::Delete(key.clone()))
            }
        };
        if let Some(status) = status {
            self.statuses.insert(key.clone(), status);
            self.touched.insert(key);
        }
        changed
    }

    fn forget(&mut self, index: &mut Index, key: &Key) -> bool {
        self.problems.remove(key);
        if self.statuses.remove(key).is_some() {
            self.touched.insert(key.clone());
        }
        index.apply(Change::Delete(key.clone()))
    }

    /// Objects of the API server that are not in the index, with the reason (the same text is logged).
    pub fn problems(&self) -> &BTreeMap<Key, String> {
        &self.problems
    }

    /// The status target of an Istio object that is present.
    pub fn status(&self, key: &Key) -> Option<&StatusTarget> {
        self.statuses.get(key)
    }

    /// The Istio objects touched since the last call, each with its status target (`None`: deleted).
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
            .into_iter()
            .map(|key| {
                let target = self.statuses.get(&key).cloned();
                (key, target)
            })
            .collect()
    }
}
