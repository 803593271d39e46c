//! The trust bundle in every namespace (Kubernetes mode): the ConfigMap [`CONFIGMAP_NAME`] with key
//! [`CONFIGMAP_KEY`] holds the mesh's root certificates, as Istio's `istio-ca-root-cert` does, so
//! workloads and tools that do not ask the CA (a proxy given files, an app checking peers itself) can
//! mount it. Written with server-side apply under one field manager whenever a namespace appears or
//! changes, which also puts back a ConfigMap someone edited.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};

use super::root::MANAGED_BY_LABEL;
use crate::Error;

/// Name of the trust bundle ConfigMap in each namespace.
pub const CONFIGMAP_NAME: &str = "trellis-ca-root-cert";
/// Key of the PEM roots in it (Istio's key, so its tooling reads it).
pub const CONFIGMAP_KEY: &str = "root-cert.pem";
/// Field manager of the server-side applies.
pub const FIELD_MANAGER: &str = "trellisd-ca";

/// The ConfigMap holding `roots_pem` in `namespace`.
pub fn configmap(namespace: &str, roots_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.0.to_owned(), MANAGED_BY_LABEL.1.to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIGMAP_KEY.to_owned(), roots_pem.to_owned())])),
        ..ConfigMap::default()
    }
}

/// Writes the trust bundle ConfigMap in `namespace`.
pub async fn apply(client: kube::Client, namespace: &str, roots_pem: &str) -> Result<(), Error> {
    // Server-side apply needs the type in the body.
    let mut value = serde_json::to_value(configmap(namespace, roots_pem)).map_err(|e| Error::ca(CONFIGMAP_NAME, e))?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "ConfigMap".into();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, namespace);
    configmaps
        .patch(CONFIGMAP_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .map_err(|e| Error::ca(format!("ConfigMap {namespace}/{CONFIGMAP_NAME}"), e))?;
    Ok(())
}

/// Keeps the trust bundle ConfigMap in every namespace, as namespaces come, until the task is dropped.
/// Failures are logged and tried again at the namespace's next change or the watch's next relist.
pub async fn publish(client: kube::Client, roots_pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut events = watcher(namespaces, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let namespace = match event {
            Ok(watcher::Event::Apply(namespace) | watcher::Event::InitApply(namespace)) => namespace,
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "watching namespaces for the trust bundle");
                continue;
            }
        };
        let Some(name) = namespace.metadata.name.as_deref() else { continue };
        if namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating") {
            continue;
        }
        if let Err(err) = apply(client.clone(), name, &roots_pem).await {
            tracing::warn!(error = %err, "cannot write the trust bundle");
        }
    }
}
