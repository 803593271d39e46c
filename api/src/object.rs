//! Turning one parsed document into a typed object, with every problem named by field path.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::istio::{
    AuthorizationPolicy, DestinationRule, Gateway, PeerAuthentication, RequestAuthentication, ServiceEntry,
    VirtualService, WorkloadEntry,
};
use crate::mesh::Mesh;
use crate::rate_limit::RateLimitPolicy;
use crate::{FieldPath, Issues, Validate, crd};

/// Namespace of a namespaced object that does not name one, as `kubectl` assumes.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Group of the Trellis kinds (`Mesh`, `RateLimitPolicy`).
pub const TRELLIS_GROUP: &str = "trellis.dev";
/// Group of Istio's traffic kinds.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// Group of Istio's security kinds.
pub const SECURITY_GROUP: &str = "security.istio.io";

/// A typed object of a kind Trellis serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Mesh(Box<Mesh>),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
    ServiceEntry(Box<ServiceEntry>),
    WorkloadEntry(Box<WorkloadEntry>),
    PeerAuthentication(Box<PeerAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    RequestAuthentication(Box<RequestAuthentication>),
    RateLimitPolicy(Box<RateLimitPolicy>),
}

impl Object {
    /// The object as the JSON the API server would store.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Object::Mesh(o) => serde_json::to_value(o),
            Object::VirtualService(o) => serde_json::to_value(o),
            Object::DestinationRule(o) => serde_json::to_value(o),
            Object::Gateway(o) => serde_json::to_value(o),
            Object::ServiceEntry(o) => serde_json::to_value(o),
            Object::WorkloadEntry(o) => serde_json::to_value(o),
            Object::PeerAuthentication(o) => serde_json::to_value(o),
            Object::AuthorizationPolicy(o) => serde_json::to_value(o),
            Object::RequestAuthentication(o) => serde_json::to_value(o),
            Object::RateLimitPolicy(o) => serde_json::to_value(o),
        }
    }
}

/// Which object a document describes, as far as it could be told.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.kind.is_empty() { "<no kind>" } else { &self.kind };
        let name = if self.name.is_empty() { "<no name>" } else { &self.name };
        if self.namespace.is_empty() {
            write!(f, "{kind} {name}")
        } else {
            write!(f, "{kind} {}/{name}", self.namespace)
        }
    }
}

/// The outcome of decoding one document.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub id: ObjectId,
    /// The typed object; `None` for kinds Trellis does not own, and for objects that failed to decode.
    pub object: Option<Object>,
    /// Every problem found, with paths relative to the document's root.
    pub issues: Issues,
}

/// How Trellis treats an `apiVersion`/`kind` pair.
enum KindSupport {
    Served {
        namespaced: bool,
    },
    /// A kind of a group Trellis serves, at a version it does not serve.
    WrongVersion(&'static [&'static str]),
    /// A kind of an Istio or Trellis group that Trellis does not serve.
    Unserved,
    /// Anything else (Deployments, Services...): passed through untouched.
    Foreign,
}

fn support(group: &str, version: &str, kind: &str) -> KindSupport {
    let versions: &'static [&'static str] = match group {
        TRELLIS_GROUP => &["v1alpha1"],
        NETWORKING_GROUP => crd::NETWORKING_VERSIONS,
        SECURITY_GROUP => crd::SECURITY_VERSIONS,
        g if g.ends_with(".istio.io") || g.ends_with(".trellis.dev") => return KindSupport::Unserved,
        _ => return KindSupport::Foreign,
    };
    let known = match group {
        TRELLIS_GROUP => matches!(kind, "Mesh" | "RateLimitPolicy"),
        NETWORKING_GROUP => {
            matches!(kind, "VirtualService" | "DestinationRule" | "Gateway" | "ServiceEntry" | "WorkloadEntry")
        }
        _ => matches!(kind, "PeerAuthentication" | "AuthorizationPolicy" | "RequestAuthentication"),
    };
    if !known {
        KindSupport::Unserved
    } else if !versions.contains(&version) {
        KindSupport::WrongVersion(versions)
    } else {
        KindSupport::Served { namespaced: kind != "Mesh" }
    }
}

/// Decodes one document: identifies it, parses kinds Trellis serves into types, and validates them.
pub fn decode(value: &Value) -> Decoded {
    let mut issues = Issues::default();
    let root = FieldPath::root();
    let Some(map) = value.as_object() else {
        issues.error(&root, format!("expected a Kubernetes object (a mapping), found {}", type_name(value)));
        return Decoded { id: ObjectId::default(), object: None, issues };
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let meta =
        |key: &str| value.pointer(&format!("/metadata/{key}")).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut id = ObjectId {
        api_version: text("apiVersion"),
        kind: text("kind"),
        namespace: meta("namespace"),
        name: meta("name"),
    };
    for key in ["apiVersion", "kind"] {
        match map.get(key) {
            None => issues.error(&FieldPath::of(key), format!("{key} is required")),
            Some(Value::String(s)) if s.is_empty() => {
                issues.error(&FieldPath::of(key), format!("{key} must not be empty"))
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                issues.error(&FieldPath::of(key), format!("{key} must be a string, found {}", type_name(other)))
            }
        }
    }
    if issues.has_errors() {
        return Decoded { id, object: None, issues };
    }
    let (group, version) = id.api_version.rsplit_once('/').unwrap_or(("", id.api_version.as_str()));
    let namespaced = match support(group, version, &id.kind) {
        KindSupport::Foreign => return Decoded { id, object: None, issues },
        KindSupport::Unserved => {
            let message = format!("Trellis does not serve {} in {}; the object is ignored", id.kind, id.api_version);
            issues.warn(&FieldPath::of("kind"), message);
            return Decoded { id, object: None, issues };
        }
        KindSupport::WrongVersion(served) => {
            if id.namespace.is_empty() && id.kind != "Mesh" {
                id.namespace = DEFAULT_NAMESPACE.to_owned();
            }
            let message = format!("version {version} of {} is not served (served: {})", id.kind, served.join(", "));
            issues.error(&FieldPath::of("apiVersion"), message);
            return Decoded { id, object: None, issues };
        }
        KindSupport::Served { namespaced } => namespaced,
    };
    validate_metadata(value, namespaced, &mut issues);
    if namespaced && id.namespace.is_empty() {
        id.namespace = DEFAULT_NAMESPACE.to_owned();
    } else if !namespaced {
        id.namespace.clear();
    }
    let object = match id.kind.as_str() {
        "Mesh" => typed::<Mesh>(value, &mut issues, |o| (Object::Mesh(Box::new(o.clone())), validated(&o.spec))),
        "VirtualService" => typed::<VirtualService>(value, &mut issues, |o| {
            (Object::VirtualService(Box::new(o.clone())), validated(&o.spec))
        }),
        "DestinationRule" => typed::<DestinationRule>(value, &mut issues, |o| {
            (Object::DestinationRule(Box::new(o.clone())), validated(&o.spec))
        }),
        "Gateway" => {
            typed::<Gateway>(value, &mut issues, |o| (Object::Gateway(Box::new(o.clone())), validated(&o.spec)))
        }
        "ServiceEntry" => typed::<ServiceEntry>(value, &mut issues, |o| {
            (Object::ServiceEntry(Box::new(o.clone())), validated(&o.spec))
        }),
        "WorkloadEntry" => typed::<WorkloadEntry>(value, &mut issues, |o| {
            (Object::WorkloadEntry(Box::new(o.clone())), validated(&o.spec))
        }),
        "PeerAuthentication" => typed::<PeerAuthentication>(value, &mut issues, |o| {
            (Object::PeerAuthentication(Box::new(o.clone())), validated(&o.spec))
        }),
        "AuthorizationPolicy" => typed::<AuthorizationPolicy>(value, &mut issues, |o| {
            (Object::AuthorizationPolicy(Box::new(o.clone())), validated(&o.spec))
        }),
        "RequestAuthentication" => typed::<RequestAuthentication>(value, &mut issues, |o| {
            (Object::RequestAuthentication(Box::new(o.clone())), validated(&o.spec))
        }),
        "RateLimitPolicy" => typed::<RateLimitPolicy>(value, &mut issues, |o| {
            (Object::RateLimitPolicy(Box::new(o.clone())), validated(&o.spec))
        }),
        _ => None,
    };
    Decoded { id, object, issues }
}

fn validated<S: Validate>(spec: &S) -> Issues {
    let mut issues = Issues::default();
    spec.validate(&FieldPath::of("spec"), &mut issues);
    issues
}

/// Adds the CRD's CEL findings that the Rust validation did not already report.
fn with_cel(kind: &str, value: &Value, mut issues: Issues) -> Issues {
    crate::cel::check(kind, value, &mut issues);
    issues
}

/// Deserializes `value` as `K`, recording a type error with its exact path, then validates it.
fn typed<K: DeserializeOwned>(
    value: &Value,
    issues: &mut Issues,
    finish: impl FnOnce(&K) -> (Object, Issues),
) -> Option<Object> {
    if value.get("spec").is_none_or(Value::is_null) {
        issues.error(&FieldPath::of("spec"), "spec is required");
        return None;
    }
    match serde_path_to_error::deserialize::<_, K>(value) {
        Ok(object) => {
            let (object, found) = finish(&object);
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
            issues.extend(with_cel(kind, value, found));
            Some(object)
        }
        Err(err) => {
            let path = error_path(err.path());
            issues.error(&path, err.inner().to_string());
            None
        }
    }
}

/// Converts serde's path of a failed field into ours. An unknown field is reported at that field.
fn error_path(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment;
    let mut out = FieldPath::root();
    for segment in path.iter() {
        out = match segment {
            Segment::Seq { index } => out.index(*index),
            Segment::Map { key } => out.key(key),
            Segment::Enum { variant } => out.key(variant),
            Segment::Unknown => out,
        };
    }
    out
}

fn validate_metadata(value: &Value, namespaced: bool, issues: &mut Issues) {
    let meta = FieldPath::of("metadata");
    let Some(metadata) = value.get("metadata").and_then(Value::as_object) else {
        issues.error(&meta, "metadata with a name is required");
        return;
    };
    match metadata.get("name").and_then(Value::as_str) {
        None | Some("") if metadata.contains_key("generateName") => {}
        None | Some("") => issues.error(&meta.key("name"), "name is required"),
        Some(name) => {
            if let Some(reason) = dns1123_subdomain_problem(name) {
                issues.error(&meta.key("name"), format!("{name:?} is not a valid name: {reason}"));
            }
        }
    }
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(ns) if !namespaced => {
            issues.warn(&meta.key("namespace"), format!("the kind is cluster-scoped; namespace {ns:?} is ignored"))
        }
        Some(ns) if dns1123_label_problem(ns).is_some() => {
            let reason = dns1123_label_problem(ns).unwrap_or_default();
            issues.error(&meta.key("namespace"), format!("{ns:?} is not a valid namespace: {reason}"))
        }
        _ => {}
    }
}

/// Why `name` is not a DNS-1123 subdomain (what Kubernetes requires of most object names), if it is not.
pub fn dns1123_subdomain_problem(name: &str) -> Option<&'static str> {
    if name.len() > 253 {
        return Some("must be at most 253 characters");
    }
    name.split('.').find_map(|label| dns1123_label_problem(label).map(|_| {
        "must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
    }))
}

/// Why `label` is not a DNS-1123 label (namespaces, subset names), if it is not.
pub fn dns1123_label_problem(label: &str) -> Option<&'static str> {
    let valid_chars = label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label.is_empty() || label.len() > 63 {
        Some("must be 1 to 63 characters")
    } else if !valid_chars || label.starts_with('-') || label.ends_with('-') {
        Some(
            "must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character",
        )
    } else {
        None
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
