//! PLACEHOLDER being written by a helper: `ServiceEntry`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues, Validate, status::Status};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(group = "networking.istio.io", version = "v1", kind = "ServiceEntry", namespaced, status = "Status", shortname = "se", derive = "PartialEq", derive = "Default")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {}

impl Validate for ServiceEntrySpec {
    fn validate(&self, _path: &FieldPath, _issues: &mut Issues) {}
}
