//! PLACEHOLDER being written by a helper: `RequestAuthentication`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues, Validate, status::Status};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(group = "security.istio.io", version = "v1", kind = "RequestAuthentication", namespaced, status = "Status", shortname = "ra", derive = "PartialEq", derive = "Default")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {}

impl Validate for RequestAuthenticationSpec {
    fn validate(&self, _path: &FieldPath, _issues: &mut Issues) {}
}
