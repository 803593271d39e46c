//! Status shared by every kind Trellis serves: `observedGeneration` and standard conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type Trellis sets on every policy object it has processed.
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// The condition type of a `Mesh` whose components are all rolled out.
pub const CONDITION_READY: &str = "Ready";

/// Status written by Trellis: which generation it processed and what it concluded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard Kubernetes conditions, one per `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
