//! One `AdmissionReview` v1 in, one out: the webhook's decision logic without HTTP. A pod creation is
//! run through [`inject`](crate::inject); anything else the API server sends is allowed untouched.
//! When the injection cannot be decided, the Mesh's `injection.failurePolicy` chooses: `Fail` denies
//! the pod with the reason, `Ignore` admits it without the sidecar and with a warning the user sees
//! in `kubectl`'s output. Either way it is logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use trellis_api::mesh::{FailurePolicy, MeshSpec};

use crate::{Decision, Namespace, inject};

/// What the webhook knows of the cluster when it decides: the Mesh and, when it can tell, the labels
/// of a namespace (trellisd's index has them; the standalone webhook relies on the webhook
/// configuration's namespace selector instead).
pub trait Context: Send + Sync + 'static {
    fn mesh(&self) -> Arc<MeshSpec>;
    fn namespace_labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
        None
    }
}

/// A fixed Mesh and unknown namespace labels (the standalone webhook).
#[derive(Debug, Clone)]
pub struct StaticContext(pub Arc<MeshSpec>);

impl Context for StaticContext {
    fn mesh(&self) -> Arc<MeshSpec> {
        self.0.clone()
    }
}

/// How a review ended, the `result` label of `trellis_webhook_admissions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// A pod left as it is (opted out, already injected...).
    Skipped,
    /// Not a pod creation: allowed untouched.
    Ignored,
    /// Injection failed and the failure policy is `Fail`: the pod is denied.
    Denied,
    /// Injection failed and the failure policy is `Ignore`: the pod is admitted without the sidecar.
    AllowedOnError,
    /// Not an `AdmissionReview` at all: answered 400.
    Invalid,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Ignored => "ignored",
            Outcome::Denied => "denied",
            Outcome::AllowedOnError => "allowed_on_error",
            Outcome::Invalid => "invalid",
        }
    }
}

/// Reviews a request body: `Ok` with the response review (JSON) and how it ended, or `Err` with the
/// reason the body is not a review at all (answered 400).
pub fn review(body: &[u8], context: &dyn Context) -> Result<(Vec<u8>, Outcome), String> {
    if body.is_empty() {
        return Err("empty body: expected an AdmissionReview (admission.k8s.io/v1)".to_owned());
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|err| format!("not an AdmissionReview (admission.k8s.io/v1): {err}"))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| "the AdmissionReview has no request".to_owned())?;
    let (response, outcome) = decide(&request, context);
    let patch = response.patch.clone();
    let mut answer =
        serde_json::to_value(response.into_review()).map_err(|err| format!("writing the response: {err}"))?;
    // The API server reads `patch` as Go's []byte: a base64 string (kube-core writes an array).
    if let Some(patch) = patch {
        answer["response"]["patch"] = serde_json::Value::String(BASE64_STANDARD.encode(patch));
    }
    let body = serde_json::to_vec(&answer).map_err(|err| format!("writing the response: {err}"))?;
    Ok((body, outcome))
}

fn decide(request: &AdmissionRequest<DynamicObject>, context: &dyn Context) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod" && request.sub_resource.is_none();
    if !is_pod || request.operation != Operation::Create {
        return (response, Outcome::Ignored);
    }
    let mesh = context.mesh();
    let namespace = request
        .namespace
        .clone()
        .or_else(|| request.object.as_ref().and_then(|o| o.metadata.namespace.clone()))
        .unwrap_or_else(|| "default".to_owned());
    let decided = match &request.object {
        None => Err("the request carries no pod".to_owned()),
        Some(object) => serde_json::to_value(object)
            .and_then(serde_json::from_value::<Pod>)
            .map_err(|err| format!("the object is not a valid Pod: {err}"))
            .and_then(|pod| {
                let labels = context.namespace_labels(&namespace);
                inject(&pod, &Namespace { name: &namespace, labels: labels.as_ref() }, &mesh)
                    .map_err(|err| err.to_string())
            }),
    };
    let injection = match decided {
        Ok(injection) => injection,
        Err(reason) => return failed(response, &mesh, &namespace, &request.name, &reason),
    };
    let warnings = (!injection.warnings.is_empty()).then(|| injection.warnings.clone());
    match injection.decision {
        Decision::Skip(skip) => {
            tracing::debug!(namespace, pod = request.name, %skip, "not injected");
            (with_warnings(response, warnings), Outcome::Skipped)
        }
        Decision::Inject => match response.with_patch(injection.patch) {
            Ok(patched) => (with_warnings(patched, warnings), Outcome::Injected),
            Err(err) => {
                let response = AdmissionResponse::from(request);
                failed(response, &mesh, &namespace, &request.name, &format!("writing the patch: {err}"))
            }
        },
    }
}

/// The answer when injection could not be decided, by the Mesh's failure policy.
fn failed(
    response: AdmissionResponse,
    mesh: &MeshSpec,
    namespace: &str,
    pod: &str,
    reason: &str,
) -> (AdmissionResponse, Outcome) {
    let message = format!("trellis: the sidecar cannot be injected: {reason}");
    match mesh.injection.failure_policy {
        FailurePolicy::Fail => {
            tracing::warn!(namespace, pod, reason, "injection failed: pod denied (failurePolicy Fail)");
            (response.deny(message), Outcome::Denied)
        }
        FailurePolicy::Ignore => {
            tracing::warn!(
                namespace,
                pod,
                reason,
                "injection failed: pod admitted without the sidecar (failurePolicy Ignore)"
            );
            (with_warnings(response, Some(vec![message])), Outcome::AllowedOnError)
        }
    }
}

fn with_warnings(mut response: AdmissionResponse, warnings: Option<Vec<String>>) -> AdmissionResponse {
    response.warnings = warnings;
    response
}
