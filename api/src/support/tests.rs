//! The not-acted-on list: where its patterns reach, and that each names a field of the schema.

use serde_json::json;

use super::*;

#[test]
fn a_field_not_acted_on_is_warned_about_wherever_the_pattern_reaches_it() {
    let dr = json!({"spec": {
        "trafficPolicy": {"tunnel": {"protocol": "CONNECT"}},
        "subsets": [{"name": "v1", "trafficPolicy": {"tunnel": {"protocol": "POST"}}}]
    }});
    let mut issues = Issues::default();
    warn_not_acted_on("DestinationRule", &dr, &mut issues);
    let mut paths: Vec<String> = issues.iter().map(|i| i.path.to_string()).collect();
    paths.sort();
    assert_eq!(paths, ["spec.subsets[0].trafficPolicy.tunnel", "spec.trafficPolicy.tunnel"]);
}

#[test]
fn fields_that_are_acted_on_raise_no_warning() {
    let vs = json!({"spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}]}]}});
    let mut issues = Issues::default();
    warn_not_acted_on("VirtualService", &vs, &mut issues);
    assert_eq!(issues.iter().count(), 0);
}

#[test]
fn every_pattern_names_a_field_of_the_served_schema() {
    // A pattern that names no field of the CRD would silently never warn.
    let crds = crate::crd::all();
    for (kind, pattern) in NOT_ACTED_ON {
        let crd = crds.iter().find(|c| c.spec.names.kind == *kind).expect("kind is served");
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        assert!(!schema_fields(&schema["openAPIV3Schema"], pattern).is_empty(), "{kind} {pattern} names no field");
    }
}

/// The schemas of the fields `pattern` names in `schema`.
fn schema_fields(schema: &Value, pattern: &str) -> Vec<Value> {
    let mut at = vec![schema];
    for step in steps(pattern) {
        let next: Vec<&Value> = at
            .iter()
            .flat_map(|s| -> Vec<&Value> {
                match step {
                    Step::Key(k) => s.get("properties").and_then(|p| p.get(k)).into_iter().collect(),
                    Step::AnyIndex => s.get("items").into_iter().collect(),
                    Step::AnyKey => s.get("additionalProperties").into_iter().collect(),
                    Step::AnyDepth => all_descendants(s),
                }
            })
            .collect();
        at = next;
    }
    at.into_iter().cloned().collect()
}

fn all_descendants(schema: &Value) -> Vec<&Value> {
    let mut out = vec![schema];
    let mut i = 0;
    while i < out.len() {
        let s = out[i];
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            out.extend(props.values());
        }
        out.extend(s.get("items"));
        out.extend(s.get("additionalProperties").filter(|v| v.is_object()));
        i += 1;
    }
    out
}

#[test]
fn a_value_not_acted_on_is_warned_about_with_the_value_and_other_values_are_not() {
    let gw = json!({"spec": {"servers": [
        {"port": {"number": 443, "name": "https", "protocol": "https"}, "hosts": ["*"]},
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    ]}});
    let mut issues = Issues::default();
    warn_not_acted_on("Gateway", &gw, &mut issues);
    let found: Vec<(String, String)> = issues.iter().map(|i| (i.path.to_string(), i.message.clone())).collect();
    assert_eq!(
        found,
        [("spec.servers[0].port.protocol".to_owned(), format!("https is {NOT_ACTED_ON_MESSAGE}"))],
        "HTTP is served, HTTPS (any case) is not"
    );
}

#[test]
fn every_value_pattern_names_an_enum_value_or_string_field_of_the_served_schema() {
    let crds = crate::crd::all();
    for (kind, pattern, values) in VALUES_NOT_ACTED_ON {
        let crd = crds.iter().find(|c| c.spec.names.kind == *kind).expect("kind is served");
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let fields = schema_fields(&schema["openAPIV3Schema"], pattern);
        assert!(!fields.is_empty(), "{kind} {pattern} names no field of the schema");
        for field in fields {
            assert_eq!(field["type"], "string", "{kind} {pattern}");
            if let Some(allowed) = field.get("enum").and_then(Value::as_array) {
                for value in *values {
                    assert!(allowed.iter().any(|a| a == value), "{kind} {pattern}: {value} is not a value of the enum");
                }
            }
        }
    }
}
