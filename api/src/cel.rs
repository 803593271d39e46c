//! The CRDs' CEL rules (`x-kubernetes-validations`) evaluated locally, as the API server would.
//!
//! Every rule is also mirrored in Rust (`impl Validate`), whose messages are more precise; this layer
//! guarantees that nothing the API server would refuse slips through in local mode, even if a mirror
//! were missing. Its findings are kept only where the Rust validation found nothing at or around the
//! same field, so a problem is reported once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde_json::Value;

use crate::{FieldPath, Issues, Severity, crd};

/// The `openAPIV3Schema` of every served kind with its rules compiled, by kind; computed once (compiling
/// the rules for every object made reading a folder of ten thousand objects take seconds).
fn schemas() -> &'static BTreeMap<String, CompiledSchema> {
    static SCHEMAS: OnceLock<BTreeMap<String, CompiledSchema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        crd::all()
            .into_iter()
            .filter_map(|crd| {
                let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
                Some((crd.spec.names.kind.clone(), compile_schema(&serde_json::to_value(schema).ok()?)))
            })
            .collect()
    })
}

thread_local! {
    /// The CEL environment with Kubernetes' functions, made once per thread (it is not `Sync`).
    static VALIDATOR: Validator = Validator::new();
}

/// Evaluates the CEL rules of `kind`'s CRD on `object` and adds what `issues` does not already say.
pub fn check(kind: &str, object: &Value, issues: &mut Issues) {
    let Some(schema) = schemas().get(kind) else { return };
    let checked = VALIDATOR.with(|validator| validator.validate_compiled(schema, object, None));
    let Err(errors) = checked else { return };
    let known: Vec<FieldPath> =
        issues.iter().filter(|i| i.severity == Severity::Error).map(|i| i.path.clone()).collect();
    for error in errors.into_vec() {
        let path = FieldPath::parse(&error.field_path);
        let related = |other: &FieldPath| {
            let (a, b) = (path.segments(), other.segments());
            a.starts_with(b) || b.starts_with(a)
        };
        if !known.iter().any(related) {
            let message = if error.message.is_empty() { format!("fails rule `{}`", error.rule) } else { error.message };
            issues.error(&path, message);
        }
    }
}
