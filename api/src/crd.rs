//! CustomResourceDefinitions for every kind Trellis serves, as `crdgen` writes them to `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Error, istio, mesh, rate_limit};

/// Versions served for `networking.istio.io` kinds, oldest first; the last one is stored.
pub const NETWORKING_VERSIONS: &[&str] = &["v1alpha3", "v1beta1", "v1"];
/// Versions served for `security.istio.io` kinds, oldest first; the last one is stored.
pub const SECURITY_VERSIONS: &[&str] = &["v1beta1", "v1"];
/// The version every Istio-compatible kind is stored as.
pub const STORAGE_VERSION: &str = "v1";

/// Serves the single-version CRD of `K` under each of `versions`, with one schema, storing [`STORAGE_VERSION`].
fn multi_version<K: CustomResourceExt>(versions: &[&str]) -> CustomResourceDefinition {
    let mut crd = K::crd();
    let template = crd.spec.versions[0].clone();
    crd.spec.versions = versions
        .iter()
        .map(|version| {
            let mut v = template.clone();
            v.name = (*version).to_owned();
            v.served = true;
            v.storage = *version == STORAGE_VERSION;
            v
        })
        .collect();
    crd
}

/// Every CRD Trellis installs, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        mesh::Mesh::crd(),
        multi_version::<istio::VirtualService>(NETWORKING_VERSIONS),
        multi_version::<istio::DestinationRule>(NETWORKING_VERSIONS),
        multi_version::<istio::Gateway>(NETWORKING_VERSIONS),
        multi_version::<istio::ServiceEntry>(NETWORKING_VERSIONS),
        multi_version::<istio::WorkloadEntry>(NETWORKING_VERSIONS),
        multi_version::<istio::PeerAuthentication>(SECURITY_VERSIONS),
        multi_version::<istio::AuthorizationPolicy>(SECURITY_VERSIONS),
        multi_version::<istio::RequestAuthentication>(SECURITY_VERSIONS),
        rate_limit::RateLimitPolicy::crd(),
    ]
}

/// One CRD as the YAML file `crds/<plural>.<group>.yaml` holds it.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, Error> {
    let kind: &'static str = "CustomResourceDefinition";
    serde_saphyr::to_string(crd).map_err(|e| Error::Crd { kind, message: e.to_string() })
}

/// The file name a CRD is written to.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
