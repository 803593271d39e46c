//! The CRDs Trellis installs: one per kind, structural, with the versions Istio serves.

use std::path::PathBuf;

use serde_json::Value;
use trellis_api::crd;

fn find(kind: &str) -> Value {
    let crd = crd::all().into_iter().find(|c| c.spec.names.kind == kind).unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(crd).expect("serialize")
}

fn versions(crd: &Value) -> Vec<(String, bool, bool)> {
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default().to_owned(), v["served"] == true, v["storage"] == true))
        .collect()
}

#[test]
fn there_is_one_crd_per_kind_with_its_group() {
    let expected = [
        ("Mesh", "trellis.dev", "Cluster"),
        ("VirtualService", "networking.istio.io", "Namespaced"),
        ("DestinationRule", "networking.istio.io", "Namespaced"),
        ("Gateway", "networking.istio.io", "Namespaced"),
        ("ServiceEntry", "networking.istio.io", "Namespaced"),
        ("WorkloadEntry", "networking.istio.io", "Namespaced"),
        ("PeerAuthentication", "security.istio.io", "Namespaced"),
        ("AuthorizationPolicy", "security.istio.io", "Namespaced"),
        ("RequestAuthentication", "security.istio.io", "Namespaced"),
        ("RateLimitPolicy", "trellis.dev", "Namespaced"),
    ];
    assert_eq!(crd::all().len(), expected.len());
    for (kind, group, scope) in expected {
        let crd = find(kind);
        assert_eq!(crd["spec"]["group"], group, "{kind}");
        assert_eq!(crd["spec"]["scope"], scope, "{kind}");
    }
}

#[test]
fn networking_kinds_serve_v1alpha3_v1beta1_and_v1_and_store_v1() {
    for kind in ["VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry"] {
        let served = versions(&find(kind));
        assert_eq!(
            served,
            [("v1alpha3".into(), true, false), ("v1beta1".into(), true, false), ("v1".into(), true, true)],
            "{kind}"
        );
    }
}

#[test]
fn security_kinds_serve_v1beta1_and_v1_and_store_v1() {
    for kind in ["PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"] {
        assert_eq!(versions(&find(kind)), [("v1beta1".into(), true, false), ("v1".into(), true, true)], "{kind}");
    }
}

#[test]
fn every_version_of_a_kind_has_the_same_schema() {
    for crd in crd::all() {
        let first = &crd.spec.versions[0].schema;
        assert!(crd.spec.versions.iter().all(|v| &v.schema == first), "{}", crd.spec.names.kind);
    }
}

#[test]
fn the_mesh_is_cluster_scoped_with_ready_and_age_columns_and_a_status_subresource() {
    let mesh = find("Mesh");
    assert_eq!(versions(&mesh), [("v1alpha1".into(), true, true)]);
    assert_eq!(mesh["spec"]["names"]["shortNames"], serde_json::json!(["mesh"]));
    let columns: Vec<&str> = mesh["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Age"]);
    assert!(mesh["spec"]["versions"][0]["subresources"]["status"].is_object());
}

/// A structural schema (what the API server requires): every node says its type, unless it is
/// explicitly int-or-string or preserves unknown fields; no `$ref`, and no type-changing combinators.
fn assert_structural(schema: &Value, path: &str) {
    let exempt = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    assert!(exempt || schema.get("type").is_some_and(Value::is_string), "{path} has no type: {schema}");
    assert!(schema.get("$ref").is_none(), "{path} uses $ref");
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for branch in schema.get(combinator).and_then(Value::as_array).into_iter().flatten() {
            for key in ["type", "properties", "items", "additionalProperties", "default", "nullable"] {
                assert!(
                    branch.get(key).is_none(),
                    "{path}.{combinator} sets {key}, which makes the schema non-structural"
                );
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            assert_structural(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = schema.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(values, &format!("{path}{{*}}"));
    }
}

#[test]
fn every_crd_schema_is_structural() {
    for crd in crd::all() {
        let value = serde_json::to_value(&crd).expect("serialize");
        for version in value["spec"]["versions"].as_array().expect("versions") {
            assert_structural(&version["schema"]["openAPIV3Schema"], &crd.spec.names.kind);
        }
    }
}

#[test]
fn the_committed_crd_files_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for crd in crd::all() {
        let path = dir.join(crd::file_name(&crd));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == crd::to_yaml(&crd).expect("yaml"), "{} is stale: run `make crds`", path.display());
    }
}
