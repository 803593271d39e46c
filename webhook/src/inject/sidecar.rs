//! What is injected: the `trellis-proxy` container (a native sidecar by default; else the first plain
//! container, holding the app until it is ready with a `postStart` hook running `trellis-proxy wait`),
//! the `trellis-init` iptables container, their volumes (the projected `trellis-ca` token and the trust
//! bundle), the rewritten probes and the pod annotations; and the JSON patch that adds them to a pod.
//!
//! Everything here must match the proxy's command line (`trellis-proxy sidecar|init --help`): the
//! token lands at the proxy's default `--ca-token-file`, and the environment variables are the ones
//! its flags read.

use std::collections::BTreeMap;

use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use trellis_api::mesh::{LogLevel, MeshSpec};

use super::probes::{self, APP_PROBERS_ENV, Rewrite};
use super::{
    DEFAULT_CONTAINER, PROMETHEUS_PATH_ANNOTATION, PROMETHEUS_PORT_ANNOTATION, PROMETHEUS_SCRAPE, REWRITE_PROBES,
    STATUS_ANNOTATION, VERSION, add, annotations, replace, root_namespace, to_json, trust_domain,
};
use crate::Error;

pub const PROXY_CONTAINER: &str = "trellis-proxy";
/// The label telling the control plane the pod runs a proxy (auto mTLS sends mutual TLS only to
/// endpoints that carry it), with Istio's name and value.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const TLS_MODE_ISTIO: &str = "istio";
pub const INIT_CONTAINER: &str = "trellis-init";
/// The proxy image when the Mesh names none: this release's.
pub const DEFAULT_PROXY_IMAGE: &str = concat!("ghcr.io/trellis-mesh/trellis-proxy:", env!("CARGO_PKG_VERSION"));
/// UID and GID of the proxy (the init rules never capture its traffic).
pub const PROXY_UID: i64 = 1337;
pub const PROXY_GID: i64 = 1337;
pub const READINESS_PORT: u16 = trellis_api::ports::READINESS;
pub const READINESS_PATH: &str = trellis_api::ports::READINESS_PATH;
pub const PROMETHEUS_PORT: u16 = trellis_api::ports::PROMETHEUS;
pub const PROMETHEUS_PATH: &str = trellis_api::ports::PROMETHEUS_PATH;
/// trellisd's config and CA port; the address is `trellisd.<rootNamespace>.svc:15012`.
pub const DISCOVERY_PORT: u16 = trellis_api::ports::DISCOVERY;
const DISCOVERY_SERVICE: &str = "trellisd";
/// The projected ServiceAccount token for the mesh CA: volume, folder, file and audience, so the file
/// is the proxy's default `--ca-token-file` (`/var/run/secrets/tokens/trellis-ca`).
pub const TOKEN_VOLUME: &str = "trellis-ca-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_FILE: &str = "trellis-ca";
pub const TOKEN_AUDIENCE: &str = "trellis-ca";
/// Lifetime asked for the projected token (the kubelet renews it at 80%).
const TOKEN_EXPIRATION_SECONDS: i64 = 43_200;
/// The trust bundle: ConfigMap, key, volume and folder.
pub const CA_ROOT_CONFIGMAP: &str = "trellis-ca-root-cert";
pub const CA_FILE: &str = "root-cert.pem";
pub const CA_VOLUME: &str = "trellis-ca-root";
pub const CA_DIR: &str = "/var/run/secrets/trellis/ca";
/// Environment variables of the proxy's flags (`--labels`, `--discovery-address`, `--discovery-ca`,
/// `--trust-domain`, `--log`).
pub const LABELS_ENV: &str = "TRELLIS_LABELS";
pub const DISCOVERY_ENV: &str = "TRELLIS_DISCOVERY_ADDRESS";
pub const CA_ENV: &str = "TRELLIS_DISCOVERY_CA";
pub const TRUST_DOMAIN_ENV: &str = "TRELLIS_TRUST_DOMAIN";
const LOG_ENV: &str = "TRELLIS_LOG";
/// The proxy's resources when neither the Mesh nor the pod sets them (Istio's defaults).
const DEFAULT_PROXY_CPU: &str = "100m";
const DEFAULT_PROXY_MEMORY: &str = "128Mi";
/// The init container's resources: it runs a few `iptables-restore` and exits.
const INIT_CPU: &str = "10m";
const INIT_MEMORY: &str = "16Mi";
const INIT_CPU_LIMIT: &str = "100m";
const INIT_MEMORY_LIMIT: &str = "64Mi";
/// The proxy's startup probe: every second for up to ten minutes (the app starts once it passes).
const STARTUP_PERIOD_SECONDS: i32 = 1;
const STARTUP_FAILURE_THRESHOLD: i32 = 600;
const READINESS_PERIOD_SECONDS: i32 = 2;
const READINESS_FAILURE_THRESHOLD: i32 = 30;
const PROMETHEUS_PORT_NAME: &str = "http-trellis-prom";
/// The proxy's binary in its image, and the mode the `postStart` hook runs to hold the app until the
/// proxy answers 200 on [`READINESS_PATH`] at [`WAIT_HOST`]:[`READINESS_PORT`] (`trellis-proxy wait`
/// polls every 500 ms and fails after 60 s, after which the kubelet restarts the proxy container).
pub const PROXY_BINARY: &str = "trellis-proxy";
pub const WAIT_MODE: &str = "wait";
/// Where the hook probes the proxy from inside its own container.
pub const WAIT_HOST: &str = "127.0.0.1";

/// Everything to add to one pod.
#[derive(Debug)]
pub struct Plan {
    native: bool,
    proxy: Container,
    init: Container,
    volumes: Vec<Volume>,
    probes: Vec<Rewrite>,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl Plan {
    pub fn build(
        pod: &Pod,
        spec: &PodSpec,
        name: &str,
        mesh: &MeshSpec,
        warnings: &mut Vec<String>,
    ) -> Result<Plan, Error> {
        let empty = BTreeMap::new();
        let pod_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let mut labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut added_labels = BTreeMap::new();
        if !labels.contains_key(TLS_MODE_LABEL) {
            added_labels.insert(TLS_MODE_LABEL.to_owned(), TLS_MODE_ISTIO.to_owned());
            labels.insert(TLS_MODE_LABEL.to_owned(), TLS_MODE_ISTIO.to_owned());
        }
        for volume in &spec.volumes.clone().unwrap_or_default() {
            if volume.name == TOKEN_VOLUME || volume.name == CA_VOLUME {
                return Err(Error::InvalidPod {
                    pod: name.to_owned(),
                    field: format!("spec.volumes[{}]", volume.name),
                    reason: "the name is reserved for the sidecar's volumes".to_owned(),
                });
            }
        }
        let (probes, probers) = if pod_annotations.get(REWRITE_PROBES).is_some_and(|v| v == "false") {
            (Vec::new(), None)
        } else {
            probes::rewrite(name, &spec.containers)?
        };
        for container in &spec.containers {
            let https = [&container.liveness_probe, &container.readiness_probe, &container.startup_probe]
                .into_iter()
                .flatten()
                .filter_map(|p| p.http_get.as_ref())
                .any(|get| get.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("https")));
            if https {
                warnings.push(format!(
                    "container {}: HTTPS probes are not rewritten and fail under STRICT mTLS",
                    container.name
                ));
            }
        }
        let image = mesh.proxy.image.clone().unwrap_or_else(|| DEFAULT_PROXY_IMAGE.to_owned());
        let native = mesh.proxy.native_sidecar;
        // Read even for native sidecars, so a bad annotation is refused whichever way the Mesh is set;
        // native sidecars need no hook: the kubelet starts the app once their startup probe passes.
        let hold =
            annotations::hold_application(name, pod_annotations, mesh.proxy.hold_application_until_proxy_starts)?
                && !native;
        let proxy = proxy_container(name, &image, &labels, pod_annotations, mesh, probers, hold)?;
        let init = init_container(&image, annotations::init_args(name, pod_annotations)?);
        let volumes = volumes();

        let mut added = BTreeMap::new();
        if !pod_annotations.contains_key(PROMETHEUS_SCRAPE) {
            added.insert(PROMETHEUS_SCRAPE.to_owned(), "true".to_owned());
            added.insert(PROMETHEUS_PORT_ANNOTATION.to_owned(), PROMETHEUS_PORT.to_string());
            added.insert(PROMETHEUS_PATH_ANNOTATION.to_owned(), PROMETHEUS_PATH.to_owned());
        }
        if !pod_annotations.contains_key(DEFAULT_CONTAINER)
            && let Some(first) = spec.containers.first()
        {
            added.insert(DEFAULT_CONTAINER.to_owned(), first.name.clone());
        }
        let status = json!({
            "version": VERSION,
            "image": image,
            "nativeSidecar": native,
            "holdApplicationUntilProxyStarts": hold,
            "initContainers": if native { vec![INIT_CONTAINER, PROXY_CONTAINER] } else { vec![INIT_CONTAINER] },
            "containers": if native { Vec::new() } else { vec![PROXY_CONTAINER] },
            "volumes": [TOKEN_VOLUME, CA_VOLUME],
            "probes": probes.iter().map(|r| format!("{}.{}", spec.containers[r.container].name, r.field)).collect::<Vec<_>>(),
        });
        added.insert(STATUS_ANNOTATION.to_owned(), status.to_string());
        Ok(Plan { native, proxy, init, volumes, probes, annotations: added, labels: added_labels })
    }

    /// The JSON patch adding the plan to `pod`: parents before children, probes replaced before the
    /// containers' indices move.
    pub fn into_patch(self, pod: &Pod, spec: &PodSpec) -> Result<Patch, Error> {
        let mut ops: Vec<PatchOperation> = Vec::new();
        if pod.metadata.annotations.is_none() {
            ops.push(add(&["metadata", "annotations"], json!({})));
        }
        for (key, value) in &self.annotations {
            ops.push(add(&["metadata", "annotations", key], Value::String(value.clone())));
        }
        if !self.labels.is_empty() && pod.metadata.labels.is_none() {
            ops.push(add(&["metadata", "labels"], json!({})));
        }
        for (key, value) in &self.labels {
            ops.push(add(&["metadata", "labels", key], Value::String(value.clone())));
        }
        for rewrite in &self.probes {
            let index = rewrite.container.to_string();
            ops.push(replace(&["spec", "containers", &index, rewrite.field], to_json("a probe", &rewrite.probe)?));
        }
        let init = to_json("the init container", &self.init)?;
        let proxy = to_json("the proxy container", &self.proxy)?;
        if self.native {
            let list = [init, proxy];
            push_front(&mut ops, "initContainers", spec.init_containers.is_some(), list);
        } else {
            push_front(&mut ops, "initContainers", spec.init_containers.is_some(), [init]);
            // First among containers: the kubelet starts them in order.
            push_front(&mut ops, "containers", true, [proxy]);
        }
        let volumes: Vec<Value> = self.volumes.iter().map(|v| to_json("a volume", v)).collect::<Result<_, _>>()?;
        if spec.volumes.is_none() {
            ops.push(add(&["spec", "volumes"], Value::Array(volumes)));
        } else {
            for volume in volumes {
                ops.push(add(&["spec", "volumes", "-"], volume));
            }
        }
        Ok(Patch(ops))
    }
}

/// Adds `items` at the front of the pod spec's list `field` (creating it when absent), in order.
fn push_front<const N: usize>(ops: &mut Vec<PatchOperation>, field: &str, exists: bool, items: [Value; N]) {
    if exists {
        for (index, item) in items.into_iter().enumerate() {
            ops.push(add(&["spec", field, &index.to_string()], item));
        }
    } else {
        ops.push(add(&["spec", field], Value::Array(items.into())));
    }
}

fn quantities(map: BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| map.into_iter().map(|(k, v)| (k, Quantity(v))).collect())
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    let field_ref = ObjectFieldSelector { api_version: Some("v1".to_owned()), field_path: field_path.to_owned() };
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource { field_ref: Some(field_ref), ..EnvVarSource::default() }),
    }
}

fn readiness_probe(period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(READINESS_PATH.to_owned()),
            port: IntOrString::Int(i32::from(READINESS_PORT)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn log_level(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

fn proxy_container(
    name: &str,
    image: &str,
    labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
    mesh: &MeshSpec,
    probers: Option<String>,
    hold: bool,
) -> Result<Container, Error> {
    let base = &mesh.proxy.resources;
    let mut requests = base.requests.clone();
    if base.is_empty() {
        requests.insert("cpu".to_owned(), DEFAULT_PROXY_CPU.to_owned());
        requests.insert("memory".to_owned(), DEFAULT_PROXY_MEMORY.to_owned());
    }
    let (requests, limits) = annotations::resources(name, pod_annotations, requests, base.limits.clone())?;
    let labels_value: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut vars = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env(LABELS_ENV, labels_value.join(",")),
        env(DISCOVERY_ENV, format!("{DISCOVERY_SERVICE}.{}.svc:{DISCOVERY_PORT}", root_namespace(mesh))),
        env(CA_ENV, format!("{CA_DIR}/{CA_FILE}")),
        env(TRUST_DOMAIN_ENV, trust_domain(mesh)),
        env(LOG_ENV, log_level(mesh.proxy.log_level)),
    ];
    if let Some(probers) = probers {
        vars.push(env(APP_PROBERS_ENV, probers));
    }
    let native = mesh.proxy.native_sidecar;
    Ok(Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec!["sidecar".to_owned()]),
        env: Some(vars),
        ports: Some(vec![ContainerPort {
            name: Some(PROMETHEUS_PORT_NAME.to_owned()),
            container_port: i32::from(PROMETHEUS_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(readiness_probe(READINESS_PERIOD_SECONDS, READINESS_FAILURE_THRESHOLD)),
        startup_probe: native.then(|| readiness_probe(STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD)),
        restart_policy: native.then(|| "Always".to_owned()),
        lifecycle: hold.then(wait_hook),
        resources: Some(ResourceRequirements {
            requests: quantities(requests),
            limits: quantities(limits),
            claims: None,
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_GID),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".to_owned()]) }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: CA_VOLUME.to_owned(),
                mount_path: CA_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    })
}

/// The `postStart` hook that holds the pod's later containers (the kubelet starts the next container
/// only once it returns) until the proxy is ready.
fn wait_hook() -> Lifecycle {
    let command = vec![
        PROXY_BINARY.to_owned(),
        WAIT_MODE.to_owned(),
        "--readiness-addr".to_owned(),
        format!("{WAIT_HOST}:{READINESS_PORT}"),
    ];
    Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction { command: Some(command) }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

fn init_container(image: &str, args: Vec<String>) -> Container {
    let quantity = |pairs: [(&str, &str); 2]| {
        Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), Quantity(v.to_owned()))).collect())
    };
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        args: Some(args),
        resources: Some(ResourceRequirements {
            requests: quantity([("cpu", INIT_CPU), ("memory", INIT_MEMORY)]),
            limits: quantity([("cpu", INIT_CPU_LIMIT), ("memory", INIT_MEMORY_LIMIT)]),
            claims: None,
        }),
        // Not root: only NET_ADMIN and NET_RAW, everything else dropped. They reach `iptables`
        // through the image's file capabilities, so privilege escalation is not forbidden here.
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_GID),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: TOKEN_FILE.to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                default_mode: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: CA_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource { name: CA_ROOT_CONFIGMAP.to_owned(), ..Default::default() }),
            ..Volume::default()
        },
    ]
}
