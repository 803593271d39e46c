//! Helpers shared by the API crate's integration tests.

use serde_json::Value;

/// Numbers compared by value (`10` and `10.0` are the same weight or percentage), everything else
/// exactly: a round trip may write an integer-valued float either way.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        other => other.clone(),
    }
}
