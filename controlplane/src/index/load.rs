//! YAML into index changes: what a folder source, local mode and tests use.
//!
//! Istio kinds and the `Mesh` go through `trellis_api::object::decode`, the same decoding and validation
//! `trellis analyze` and the API server apply; an object with errors still becomes a change (a [`Config`]
//! carrying its errors) so translate can report it. Kubernetes Services, EndpointSlices, Pods and
//! Namespaces are read with their Kubernetes types; any other kind (Deployments...) is ignored.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use serde_json::Value;
use trellis_api::analyze::Report;
use trellis_api::{document, object};

use super::{Change, Config, Index, Resource, kubernetes};
use crate::Error;

/// What one YAML text holds for the index.
#[derive(Debug, Default)]
pub struct Loaded {
    /// One change per object of a kind the index holds, in document order.
    pub changes: Vec<Change>,
    /// Documents that could not become a change (Kubernetes objects that cannot be read, documents without
    /// a kind). Istio objects with validation errors are not here: they are changes carrying their errors.
    pub problems: Vec<Error>,
}

/// Reads every document of `text`; `source_name` (a file name) prefixes problems.
pub fn yaml(source_name: &str, text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    let documents = match document::parse(text) {
        Ok(documents) => documents,
        Err(trellis_api::Error::Yaml { line, message }) => {
            loaded.problems.push(Error::Yaml { source_name: source_name.to_owned(), line, message });
            return loaded;
        }
        Err(other) => {
            let message = other.to_string();
            loaded.problems.push(Error::Yaml { source_name: source_name.to_owned(), line: 1, message });
            return loaded;
        }
    };
    for document in documents {
        match value(source_name, document.line, &document.value) {
            Ok(Some(change)) => loaded.changes.push(change),
            Ok(None) => {}
            Err(problem) => loaded.problems.push(problem),
        }
    }
    loaded
}

/// One document (as JSON) into a change; `None` for kinds the index does not hold.
pub fn value(source_name: &str, line: usize, value: &Value) -> Result<Option<Change>, Error> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let resource = match (text("apiVersion"), text("kind")) {
        ("v1", "Service") => {
            let service = kubernetes::service(source_name, &typed::<core::Service>(source_name, line, value)?)?;
            Resource::Service(Box::new(service))
        }
        ("v1", "Pod") => {
            Resource::Pod(Box::new(kubernetes::pod(source_name, &typed::<core::Pod>(source_name, line, value)?)?))
        }
        ("v1", "Namespace") => Resource::Namespace(Box::new(kubernetes::namespace(
            source_name,
            &typed::<core::Namespace>(source_name, line, value)?,
        )?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => Resource::EndpointSlice(Box::new(kubernetes::endpoint_slice(
            source_name,
            &typed::<discovery::EndpointSlice>(source_name, line, value)?,
        )?)),
        _ => {
            let decoded = object::decode(value);
            let first_error = decoded.issues.iter().find(|i| i.severity == trellis_api::Severity::Error).cloned();
            match Config::from_decoded(decoded) {
                Some(config) => Resource::Config(Box::new(config)),
                None => {
                    return match first_error {
                        Some(issue) => Err(Error::Document {
                            source_name: source_name.to_owned(),
                            line,
                            message: format!("{}: {}", issue.path, issue.message),
                        }),
                        None => Ok(None),
                    };
                }
            }
        }
    };
    Ok(Some(Change::upsert(resource)))
}

fn typed<T: DeserializeOwned>(source_name: &str, line: usize, value: &Value) -> Result<T, Error> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| Error::Document {
        source_name: source_name.to_owned(),
        line,
        message: format!("{}: {}", err.path(), err.inner()),
    })
}

/// The Istio objects of an `analyze` report as changes, in input order (the report holds only the kinds
/// Trellis serves; Kubernetes objects of the same files need [`yaml`]).
pub fn report(report: &Report) -> Vec<Change> {
    report
        .objects
        .iter()
        .filter_map(|located| Config::from_decoded(object::decode(&located.document.value)))
        .map(|config| Change::upsert(Resource::Config(Box::new(config))))
        .collect()
}

impl Index {
    /// An index of every object in a multi-document YAML text. Fails on the first document that cannot
    /// become part of the index; Istio objects with validation errors are kept (translate skips them).
    pub fn from_yaml_documents(text: &str) -> Result<Index, Error> {
        let loaded = yaml("<yaml>", text);
        if let Some(problem) = loaded.problems.into_iter().next() {
            return Err(problem);
        }
        let mut index = Index::new();
        index.apply_all(loaded.changes);
        Ok(index)
    }

    /// An index of the Istio objects of an `analyze` report.
    pub fn from_report(analyzed: &Report) -> Index {
        let mut index = Index::new();
        index.apply_all(report(analyzed));
        index
    }
}
