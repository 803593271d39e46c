//! Writing on each Istio object (and `Mesh`) why Trellis ignores it: an `Accepted=False` condition with
//! reason `Invalid` and the errors by field, applied server-side to the `status` subresource under
//! Trellis's field manager, and removed again (by applying an empty status) once the object is valid.
//!
//! The writer remembers what every object's status says, from what it wrote or, for an object it has
//! not written yet, from the object as read, so an unchanged status is never written twice and a
//! restart does not rewrite every object. A write that fails is logged and tried again later; an object
//! that is gone is forgotten.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use trellis_api::status::{CONDITION_ACCEPTED, Status};

use super::ingest::{REASON_INVALID, StatusTarget, Touched, Verdict, api_resource};
use crate::index::Key;

/// The server-side apply body that makes the status of the object under `key` say `verdict`:
/// `Accepted=False` with the errors for a rejected object, no Trellis condition for a valid one.
/// `since` is the condition's `lastTransitionTime`.
pub fn apply_body(key: &Key, resource: &ApiResource, verdict: &Verdict, since: Time) -> Value {
    let mut metadata = json!({ "name": &*key.name });
    if !key.namespace.is_empty() {
        metadata["namespace"] = json!(&*key.namespace);
    }
    let status = match verdict {
        Verdict::Valid => Status::default(),
        Verdict::Rejected { generation, message } => Status {
            observed_generation: *generation,
            conditions: vec![Condition {
                type_: CONDITION_ACCEPTED.to_owned(),
                status: "False".to_owned(),
                reason: REASON_INVALID.to_owned(),
                message: message.clone(),
                observed_generation: *generation,
                last_transition_time: since,
            }],
        },
    };
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "status": status,
    })
}

/// Writes statuses, remembering what each object's status says.
pub struct StatusWriter {
    client: Client,
    field_manager: String,
    /// What each object's status says as far as Trellis knows, and since when it is rejected.
    known: HashMap<Key, (Verdict, Option<Time>)>,
    /// Objects whose status may need writing, with what it should say.
    pending: BTreeMap<Key, StatusTarget>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("field_manager", &self.field_manager)
            .field("known", &self.known.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StatusWriter {
    /// A writer applying statuses through `client` as `field_manager`.
    pub fn new(client: Client, field_manager: impl Into<String>) -> Self {
        Self { client, field_manager: field_manager.into(), known: HashMap::new(), pending: BTreeMap::new() }
    }

    /// Takes in the objects [`super::ingest::Ingest::take_touched`] reported: present ones are queued,
    /// deleted ones forgotten.
    pub fn queue(&mut self, touched: Touched) {
        for (key, target) in touched {
            match target {
                Some(target) => {
                    self.known
                        .entry(key.clone())
                        .or_insert_with(|| (target.observed.clone(), target.observed_since.clone()));
                    self.pending.insert(key, target);
                }
                None => {
                    self.known.remove(&key);
                    self.pending.remove(&key);
                }
            }
        }
    }

    /// Whether some status is still to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes every queued status that differs from what the object says. Failed writes stay queued;
    /// returns how many failed.
    pub async fn write_pending(&mut self) -> usize {
        let mut failed = 0;
        for (key, target) in std::mem::take(&mut self.pending) {
            let (current, current_since) = self.known.get(&key).cloned().unwrap_or((Verdict::Valid, None));
            if current == target.desired {
                continue;
            }
            let Some(resource) = api_resource(key.kind) else { continue };
            let since = match (&current, current_since) {
                (Verdict::Rejected { .. }, Some(since)) => since,
                _ => Time(Timestamp::now()),
            };
            let body = apply_body(&key, &resource, &target.desired, since.clone());
            let api: Api<DynamicObject> = if key.namespace.is_empty() {
                Api::all_with(self.client.clone(), &resource)
            } else {
                Api::namespaced_with(self.client.clone(), &key.namespace, &resource)
            };
            let params = PatchParams::apply(&self.field_manager).force();
            match api.patch_status(&key.name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    let since = matches!(target.desired, Verdict::Rejected { .. }).then_some(since);
                    tracing::debug!(object = %key, verdict = ?target.desired, "status written");
                    self.known.insert(key, (target.desired, since));
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    tracing::debug!(object = %key, "not writing the status of an object that is gone");
                    self.known.remove(&key);
                }
                Err(err) => {
                    tracing::warn!(object = %key, "writing the status failed, will retry: {err}");
                    failed += 1;
                    self.pending.insert(key, target);
                }
            }
        }
        failed
    }
}
