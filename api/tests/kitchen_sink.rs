//! One "kitchen sink" per Istio kind (`tests/kitchen_sink/*.yaml`, written from Istio's API reference).
//!
//! Together the objects of a kind set every field of the kind's served schema (so the test fails when a
//! field is added to the types without an example, or an example names a field the types lack). Each
//! object parses into its type with no error, survives a YAML -> types -> YAML round trip without losing
//! a field, and `analyze` warns about exactly the fields Trellis does not act on yet.

use std::collections::BTreeSet;
use std::path::PathBuf;

mod common;

use common::normalize;
use serde_json::Value;
use trellis_api::analyze::{Report, Source, analyze};
use trellis_api::object::decode;
use trellis_api::support::{self, NOT_ACTED_ON, NOT_ACTED_ON_MESSAGE};
use trellis_api::{Severity, crd, document};

/// The Istio kinds and their kitchen-sink files.
const KINDS: &[(&str, &str)] = &[
    ("VirtualService", "virtualservice.yaml"),
    ("DestinationRule", "destinationrule.yaml"),
    ("Gateway", "gateway.yaml"),
    ("ServiceEntry", "serviceentry.yaml"),
    ("WorkloadEntry", "workloadentry.yaml"),
    ("PeerAuthentication", "peerauthentication.yaml"),
    ("AuthorizationPolicy", "authorizationpolicy.yaml"),
    ("RequestAuthentication", "requestauthentication.yaml"),
];

/// Fields Istio's schema has but Istio's validation refuses ("not supported yet"), so no valid object
/// sets them; [`fields_istio_refuses_are_refused`] checks Trellis refuses them too.
const REFUSED_BY_ISTIO: &[(&str, &str)] = &[
    ("VirtualService", "spec.http[*].fault.delay.exponentialDelay"),
    ("VirtualService", "spec.http[*].fault.abort.http2Error"),
];

fn path_of(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kitchen_sink").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(path_of(file)).expect("kitchen sink file")
}

fn documents(file: &str) -> Vec<Value> {
    document::parse(&read(file)).expect("valid YAML").into_iter().map(|d| d.value).collect()
}

/// The `spec` schema of `kind`'s CRD as served.
fn spec_schema(kind: &str) -> Value {
    let crd = crd::all().into_iter().find(|c| c.spec.names.kind == kind).expect("kind is served");
    let crd = serde_json::to_value(crd).expect("serialize");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn properties(schema: &Value) -> Option<&serde_json::Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object).filter(|p| !p.is_empty())
}

/// The schema of list items or map values, when they are objects with fields of their own.
fn nested<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema.get(key).filter(|s| properties(s).is_some())
}

/// Every leaf field of a schema: `[*]` stands for any list index, `*` for any map key.
fn leaves(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = properties(schema) {
        for (name, child) in props {
            leaves(child, &format!("{path}.{name}"), out);
        }
    } else if let Some(items) = nested(schema, "items") {
        leaves(items, &format!("{path}[*]"), out);
    } else if let Some(values) = nested(schema, "additionalProperties") {
        leaves(values, &format!("{path}.*"), out);
    } else {
        out.insert(path.to_owned());
    }
}

/// The leaf fields of the schema that `value` sets.
fn set_leaves(value: &Value, schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    match (value, properties(schema), nested(schema, "items"), nested(schema, "additionalProperties")) {
        (Value::Object(map), Some(props), _, _) => {
            for (name, child) in map {
                let child_schema = props.get(name).unwrap_or_else(|| panic!("{path}.{name} is not in the schema"));
                set_leaves(child, child_schema, &format!("{path}.{name}"), out);
            }
        }
        (Value::Array(items), None, Some(item_schema), _) => {
            items.iter().for_each(|item| set_leaves(item, item_schema, &format!("{path}[*]"), out));
        }
        (Value::Object(map), None, _, Some(value_schema)) => {
            map.values().for_each(|v| set_leaves(v, value_schema, &format!("{path}.*"), out));
        }
        _ => {
            out.insert(path.to_owned());
        }
    }
}

fn analyze_all() -> Report {
    let sources: Vec<Source> =
        KINDS.iter().map(|(_, file)| Source { name: (*file).to_owned(), bytes: read(file).into_bytes() }).collect();
    analyze(&sources)
}

#[test]
fn every_kitchen_sink_object_parses_into_its_type_and_round_trips_without_loss() {
    for (kind, file) in KINDS {
        for value in documents(file) {
            let decoded = decode(&value);
            assert_eq!(decoded.id.kind, *kind, "{file}");
            let errors: Vec<String> = decoded
                .issues
                .iter()
                .filter(|i| i.severity == Severity::Error)
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect();
            assert!(errors.is_empty(), "{file}: {}: {errors:#?}", decoded.id);
            let object = decoded.object.expect("a served kind is typed");
            let mut back = object.to_value().expect("serialize");
            back["apiVersion"] = value["apiVersion"].clone();
            assert_eq!(normalize(&back), normalize(&value), "{file}: {} changed in a round trip", decoded.id);
        }
    }
}

#[test]
fn the_kitchen_sinks_set_every_field_of_each_served_istio_schema() {
    for (kind, file) in KINDS {
        let schema = spec_schema(kind);
        let mut every = BTreeSet::new();
        leaves(&schema, "spec", &mut every);
        let mut set = BTreeSet::new();
        for value in documents(file) {
            set_leaves(&value["spec"], &schema, "spec", &mut set);
        }
        let missing: Vec<&String> = every
            .iter()
            .filter(|path| !set.contains(*path))
            .filter(|path| !REFUSED_BY_ISTIO.contains(&(*kind, path.as_str())))
            .collect();
        assert!(missing.is_empty(), "{file} sets no example of {missing:#?}");
        assert!(every.len() >= 3, "{kind} has a schema with fields");
    }
}

#[test]
fn fields_istio_refuses_are_refused() {
    let vs = |fault: &str| -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: shop}}\n\
             spec:\n  hosts: [reviews]\n  http:\n    - fault: {fault}\n      route:\n        - destination: {{host: reviews}}\n"
        )
    };
    let cases = [
        (vs("{delay: {exponentialDelay: 1s, percentage: {value: 1}}}"), "spec.http[0].fault.delay.exponentialDelay"),
        (vs("{abort: {http2Error: REFUSED_STREAM, percentage: {value: 1}}}"), "spec.http[0].fault.abort.http2Error"),
    ];
    assert_eq!(cases.len(), REFUSED_BY_ISTIO.len());
    for (yaml, path) in cases {
        let report = analyze(&[Source { name: "refused.yaml".to_owned(), bytes: yaml.into_bytes() }]);
        assert!(
            report.findings.iter().any(|f| f.issue.severity == Severity::Error && f.issue.path.to_string() == path),
            "no error at {path}: {:#?}",
            report.findings.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_kitchen_sinks_analyze_with_no_errors_and_every_not_acted_on_entry_warns() {
    let report = analyze_all();
    let lines: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert!(!report.has_errors(), "{lines:#?}");
    for (kind, pattern) in NOT_ACTED_ON {
        let Some((_, file)) = KINDS.iter().find(|(k, _)| k == kind) else { continue };
        let mut reached = 0;
        for value in documents(file) {
            let name = value["metadata"]["name"].as_str().expect("name").to_owned();
            for (_, path) in support::not_acted_on(kind, &value).into_iter().filter(|(p, _)| p == pattern) {
                reached += 1;
                let warned = report.findings.iter().any(|f| {
                    f.issue.severity == Severity::Warning
                        && f.issue.message == NOT_ACTED_ON_MESSAGE
                        && f.issue.path == path
                        && f.object.as_ref().is_some_and(|o| o.kind == *kind && o.name == name)
                        && f.file == *file
                });
                assert!(warned, "{file}: {kind} {name}: no warning at {path}:\n{lines:#?}");
            }
        }
        assert!(reached > 0, "{file} sets nothing {kind} {pattern} names, so its warning is untested");
    }
}
