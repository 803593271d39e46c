//! The pure injection function: (pod, namespace, mesh settings) -> a decision and the JSON-patch
//! operations that add the sidecar. No I/O; the webhook and `trellis inject` both call it.
//!
//! Which pods: those of a namespace labelled `trellis-injection=enabled` or `istio-injection=enabled`,
//! or whose label (else annotation) `sidecar.istio.io/inject` is `"true"`; a `"false"` opts out (the
//! label wins over the annotation, as in Istio). Never `hostNetwork` pods, the Kubernetes system
//! namespaces, the mesh's own namespace, pods labelled as mesh components, or pods already injected.
//!
//! The patch is built in order (parents before children: an absent `annotations` map or
//! `initContainers` list is added before anything goes into it) and with JSON-pointer escaping
//! (`prometheus.io/port` is written `prometheus.io~1port`). Split as `sidecar` (the injected
//! containers and volumes, and the `postStart` hook holding the app when native sidecars are off),
//! `probes` (the app's probes rewritten through the proxy's 15021 port) and `annotations` (reading and
//! validating Istio's per-pod annotations, `proxy.istio.io/config` among them).

mod annotations;
mod probes;
mod sidecar;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde_json::Value;
use trellis_api::mesh::{DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN, ISTIO_ROOT_NAMESPACE_ALIAS, MeshSpec};

use crate::Error;

pub use annotations::{
    EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_PORTS, INCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES, INCLUDE_OUTBOUND_PORTS, PROXY_CONFIG, PROXY_CPU, PROXY_CPU_LIMIT, PROXY_MEMORY,
    PROXY_MEMORY_LIMIT, REWRITE_PROBES,
};
pub use probes::{APP_HEALTH_PREFIX, APP_PROBERS_ENV};
pub use sidecar::{
    CA_DIR, CA_ENV, CA_FILE, CA_ROOT_CONFIGMAP, CA_VOLUME, DEFAULT_PROXY_IMAGE, DISCOVERY_ENV, DISCOVERY_PORT,
    INIT_CONTAINER, LABELS_ENV, PROMETHEUS_PATH, PROMETHEUS_PORT, PROXY_BINARY, PROXY_CONTAINER, PROXY_GID, PROXY_UID,
    READINESS_PATH, READINESS_PORT, TLS_MODE_ISTIO, TLS_MODE_LABEL, TOKEN_AUDIENCE, TOKEN_DIR, TOKEN_FILE,
    TOKEN_VOLUME, TRUST_DOMAIN_ENV, WAIT_HOST, WAIT_MODE,
};

/// The pod label or annotation that opts a pod in (`"true"`) or out (`"false"`).
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// Namespace labels that turn injection on with the value [`NAMESPACE_ENABLED`].
pub const NAMESPACE_LABELS: [&str; 2] = ["trellis-injection", "istio-injection"];
/// Value of a namespace label that turns injection on.
pub const NAMESPACE_ENABLED: &str = "enabled";
/// Value of a namespace label that turns injection off, whatever the pods say.
pub const NAMESPACE_DISABLED: &str = "disabled";
/// Namespaces never injected (Kubernetes' own).
pub const IGNORED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// Label the mesh's own components carry (trellisd, gateways): never injected.
pub const COMPONENT_LABEL: &str = "trellis.dev/component";
/// Annotation recording what was injected and by which version (JSON).
pub const STATUS_ANNOTATION: &str = "trellis.dev/sidecar-status";
/// Version of Trellis that injects, recorded in [`STATUS_ANNOTATION`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Prometheus scrape annotations set when the pod has none of its own.
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT_ANNOTATION: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH_ANNOTATION: &str = "prometheus.io/path";
/// Annotation naming the container `kubectl logs`/`exec` pick by default: the first app container.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The namespace a pod is created in, as far as the caller knows it.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    pub name: &'a str,
    /// The namespace's labels; `None` when unknown, in which case the caller has already chosen the
    /// namespace (the webhook configuration's namespace selector, or `trellis inject` by hand).
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Whether the pod gets the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(Skip),
}

/// Why a pod is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    HostNetwork,
    IgnoredNamespace(String),
    MeshComponent,
    AlreadyInjected,
    /// Opted out by the `sidecar.istio.io/inject` label (`true`) or annotation (`false`).
    OptedOut {
        by_label: bool,
    },
    NamespaceDisabled(String),
    NamespaceNotEnabled(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::HostNetwork => write!(f, "the pod uses the host's network (hostNetwork: true)"),
            Skip::IgnoredNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            Skip::MeshComponent => write!(f, "the pod is a mesh component (label {COMPONENT_LABEL})"),
            Skip::AlreadyInjected => write!(f, "the pod already has the sidecar"),
            Skip::OptedOut { by_label: true } => write!(f, "opted out by the label {INJECT_KEY}=false"),
            Skip::OptedOut { by_label: false } => write!(f, "opted out by the annotation {INJECT_KEY}=false"),
            Skip::NamespaceDisabled(ns) => write!(f, "namespace {ns} has injection disabled"),
            Skip::NamespaceNotEnabled(ns) => write!(
                f,
                "namespace {ns} is not labelled {}={NAMESPACE_ENABLED} and the pod does not ask for the sidecar",
                NAMESPACE_LABELS[0]
            ),
        }
    }
}

/// The outcome of [`inject`]: the decision, the patch (empty when skipped) and warnings for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub decision: Decision,
    pub patch: Patch,
    pub warnings: Vec<String>,
}

/// Decides whether `pod` in `namespace` gets the sidecar under `mesh`, and returns the patch that adds
/// it. An error names the pod and the field or annotation that prevents a correct injection.
pub fn inject(pod: &Pod, namespace: &Namespace<'_>, mesh: &MeshSpec) -> Result<Injection, Error> {
    let name = pod_name(pod, namespace.name);
    let spec = pod.spec.as_ref().ok_or_else(|| Error::InvalidPod {
        pod: name.clone(),
        field: "spec".to_owned(),
        reason: "missing".to_owned(),
    })?;
    let mut warnings = Vec::new();
    if let Some(skip) = skip_reason(pod, spec, namespace, mesh, &mut warnings) {
        return Ok(Injection { decision: Decision::Skip(skip), patch: Patch(Vec::new()), warnings });
    }
    let patch = sidecar::Plan::build(pod, spec, &name, mesh, &mut warnings)?.into_patch(pod, spec)?;
    Ok(Injection { decision: Decision::Inject, patch, warnings })
}

/// `namespace/name` of a pod for messages (`generateName` when the name is not chosen yet).
fn pod_name(pod: &Pod, namespace: &str) -> String {
    let meta = &pod.metadata;
    let name = meta
        .name
        .clone()
        .or_else(|| meta.generate_name.as_ref().map(|prefix| format!("{prefix}<generated>")))
        .unwrap_or_else(|| "<unnamed>".to_owned());
    format!("{namespace}/{name}")
}

fn skip_reason(
    pod: &Pod,
    spec: &PodSpec,
    namespace: &Namespace<'_>,
    mesh: &MeshSpec,
    warnings: &mut Vec<String>,
) -> Option<Skip> {
    if spec.host_network == Some(true) {
        return Some(Skip::HostNetwork);
    }
    let ns = namespace.name;
    if IGNORED_NAMESPACES.contains(&ns) || ns == root_namespace(mesh) || ns == ISTIO_ROOT_NAMESPACE_ALIAS {
        return Some(Skip::IgnoredNamespace(ns.to_owned()));
    }
    let labels = pod.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(COMPONENT_LABEL)) {
        return Some(Skip::MeshComponent);
    }
    if already_injected(pod, spec) {
        return Some(Skip::AlreadyInjected);
    }
    let ns_labels = namespace.labels;
    let ns_value = |value: &str| {
        ns_labels.is_some_and(|l| NAMESPACE_LABELS.iter().any(|key| l.get(*key).is_some_and(|v| v == value)))
    };
    if ns_value(NAMESPACE_DISABLED) {
        return Some(Skip::NamespaceDisabled(ns.to_owned()));
    }
    // The label wins over the annotation, as in Istio.
    let asked = [(true, labels), (false, pod.metadata.annotations.as_ref())].into_iter().find_map(|(by_label, map)| {
        let value = map?.get(INJECT_KEY)?;
        match value.as_str() {
            "true" => Some((by_label, true)),
            "false" => Some((by_label, false)),
            other => {
                let kind = if by_label { "label" } else { "annotation" };
                warnings.push(format!("{kind} {INJECT_KEY}={other:?} is neither \"true\" nor \"false\": ignored"));
                None
            }
        }
    });
    match asked {
        Some((by_label, false)) => Some(Skip::OptedOut { by_label }),
        Some((_, true)) => None,
        None if ns_labels.is_none() || ns_value(NAMESPACE_ENABLED) => None,
        None => Some(Skip::NamespaceNotEnabled(ns.to_owned())),
    }
}

fn already_injected(pod: &Pod, spec: &PodSpec) -> bool {
    let ours = |name: &str| name == PROXY_CONTAINER || name == INIT_CONTAINER;
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(STATUS_ANNOTATION))
        || spec.containers.iter().any(|c| ours(&c.name))
        || spec.init_containers.iter().flatten().any(|c| ours(&c.name))
}

/// A JSON pointer from unescaped segments (`/` and `~` in a segment are escaped).
fn pointer(segments: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(segments.iter().copied())
}

fn add(segments: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: pointer(segments), value })
}

fn replace(segments: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation { path: pointer(segments), value })
}

fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|source| Error::Json { what: what.to_owned(), source })
}

/// The Mesh's root namespace; its default when empty (`MeshSpec::default()` rather than serde's).
fn root_namespace(mesh: &MeshSpec) -> &str {
    if mesh.root_namespace.is_empty() { DEFAULT_ROOT_NAMESPACE } else { &mesh.root_namespace }
}

/// The Mesh's trust domain; its default when empty.
fn trust_domain(mesh: &MeshSpec) -> &str {
    if mesh.trust_domain.is_empty() { DEFAULT_TRUST_DOMAIN } else { &mesh.trust_domain }
}
