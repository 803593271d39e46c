//! PLACEHOLDER being written by a helper: `VirtualService`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues, Validate, status::Status};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(group = "networking.istio.io", version = "v1", kind = "VirtualService", namespaced, status = "Status", shortname = "vs", derive = "PartialEq", derive = "Default")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {}

impl Validate for VirtualServiceSpec {
    fn validate(&self, _path: &FieldPath, _issues: &mut Issues) {}
}
