//! PLACEHOLDER being written by a helper: `WorkloadEntry`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues, Validate, status::Status};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(group = "networking.istio.io", version = "v1", kind = "WorkloadEntry", namespaced, status = "Status", shortname = "we", derive = "PartialEq", derive = "Default")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {}

impl Validate for WorkloadEntrySpec {
    fn validate(&self, _path: &FieldPath, _issues: &mut Issues) {}
}
