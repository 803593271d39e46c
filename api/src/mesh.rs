//! The `Mesh` resource (trellis.dev/v1alpha1): one per cluster, the operator's input.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldPath, Issues, Validate, status::Status};

/// Default trust domain of SPIFFE identities.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Default namespace of the control plane and of mesh-wide policy.
pub const DEFAULT_ROOT_NAMESPACE: &str = "trellis-system";
/// Namespace accepted as an alias of the root namespace, so Istio's YAML applies unchanged.
pub const ISTIO_ROOT_NAMESPACE_ALIAS: &str = "istio-system";
/// Label the default ingress gateway carries, so Istio Gateways' `selector: {istio: ingressgateway}` match.
pub const INGRESS_GATEWAY_LABEL: (&str, &str) = ("istio", "ingressgateway");
/// Label the default egress gateway carries.
pub const EGRESS_GATEWAY_LABEL: (&str, &str) = ("istio", "egressgateway");

/// A Trellis service mesh: its control plane, proxies, gateways and mesh-wide defaults.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "trellis.dev",
    version = "v1alpha1",
    kind = "Mesh",
    plural = "meshes",
    status = "Status",
    shortname = "mesh",
    category = "trellis",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    /// A preset of defaults: `default`, `demo` (everything on, small resources) or `minimal` (control plane only).
    #[serde(default)]
    pub profile: Profile,
    /// Trust domain of workload identities (`spiffe://<trustDomain>/ns/<ns>/sa/<sa>`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Namespace of the control plane and of mesh-wide policy; `istio-system` is accepted as an alias.
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// The control plane deployment.
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// The proxy injected beside every workload.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// The sidecar injection webhook.
    #[serde(default)]
    pub injection: Injection,
    /// Mesh-wide mutual TLS default (a mesh-wide PeerAuthentication overrides it).
    #[serde(default)]
    pub mtls: MeshMtls,
    /// Ingress and egress gateways to run.
    #[serde(default)]
    pub gateways: Gateways,
    /// What happens to traffic for destinations the mesh does not know.
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Access logs, tracing and metrics.
    #[serde(default)]
    pub telemetry: Telemetry,
}

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_owned()
}

fn default_root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.to_owned()
}

fn default_true() -> bool {
    true
}

/// A preset of defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Default,
    Demo,
    Minimal,
}

/// Compute resources in Kubernetes' own shape (quantities as strings, e.g. `100m`, `128Mi`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

impl Resources {
    /// Whether neither requests nor limits are set.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// Log verbosity of a component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// The control plane deployment (`trellisd`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    /// Number of `trellisd` replicas.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
    /// Container image; the release's own image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default)]
    pub log_level: LogLevel,
}

fn default_replicas() -> i32 {
    1
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self { replicas: default_replicas(), image: None, resources: Resources::default(), log_level: LogLevel::Info }
    }
}

/// The injected proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default)]
    pub log_level: LogLevel,
    /// Run the proxy as a Kubernetes native sidecar (init container with `restartPolicy: Always`).
    #[serde(default = "default_true")]
    pub native_sidecar: bool,
    /// Start the application only once the proxy is ready.
    #[serde(default = "default_true")]
    pub hold_application_until_proxy_starts: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            image: None,
            resources: Resources::default(),
            log_level: LogLevel::Info,
            native_sidecar: true,
            hold_application_until_proxy_starts: true,
        }
    }
}

/// What the API server does when the injection webhook cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

/// The injection webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Injection {
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// Mesh-wide mutual-TLS mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MeshMtlsMode {
    #[default]
    Permissive,
    Strict,
}

/// Mesh-wide mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshMtls {
    #[serde(default)]
    pub mode: MeshMtlsMode,
}

/// Kubernetes Service type of a gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    #[default]
    LoadBalancer,
}

/// A port a gateway's Service exposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Container port; `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u16>,
}

/// One ingress or egress gateway deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    pub name: String,
    #[serde(default)]
    pub service_type: ServiceType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port"]))]
    pub ports: Vec<GatewayPort>,
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Pod labels; Istio `Gateway` objects select gateways by these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Gateways to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateways {
    /// Ingress gateways; by default one named `trellis-ingressgateway` labelled `istio: ingressgateway`.
    #[serde(default = "default_ingress")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub ingress: Vec<GatewaySpec>,
    /// Egress gateways; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub egress: Vec<GatewaySpec>,
}

impl Default for Gateways {
    fn default() -> Self {
        Self { ingress: default_ingress(), egress: Vec::new() }
    }
}

/// The default ingress gateway: the one Istio's tutorials' `selector: {istio: ingressgateway}` picks.
pub fn default_ingress() -> Vec<GatewaySpec> {
    let (key, value) = INGRESS_GATEWAY_LABEL;
    vec![GatewaySpec {
        name: "trellis-ingressgateway".to_owned(),
        service_type: ServiceType::LoadBalancer,
        ports: vec![
            GatewayPort { name: "http2".to_owned(), port: 80, target_port: Some(8080) },
            GatewayPort { name: "https".to_owned(), port: 443, target_port: Some(8443) },
        ],
        replicas: 1,
        labels: BTreeMap::from([(key.to_owned(), value.to_owned())]),
    }]
}

/// Treatment of traffic to destinations outside the mesh's registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Pass it through unchanged.
    #[default]
    AllowAny,
    /// Refuse it.
    RegistryOnly,
}

/// What happens to traffic for destinations the mesh does not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// Access log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
}

/// Access logging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLog {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// Distributed tracing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Percentage of requests traced, 0 to 100.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub sampling_percent: f64,
    /// OTLP/gRPC collector, such as `http://otel-collector.observability:4317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Zipkin collector, such as `http://zipkin.observability:9411/api/v2/spans`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin_endpoint: Option<String>,
}

/// Metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Also expose Istio's metric names (`istio_requests_total`, ...) so existing dashboards work.
    #[serde(default = "default_true")]
    pub istio_compatible_names: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { enabled: true, istio_compatible_names: true }
    }
}

/// Access logs, tracing and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default)]
    pub access_log: AccessLog,
    #[serde(default)]
    pub tracing: Tracing,
    #[serde(default)]
    pub metrics: Metrics,
}

impl Validate for MeshSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.trust_domain.is_empty() || self.trust_domain.contains(['/', ' ']) {
            issues.error(&path.key("trustDomain"), format!("{:?} is not a valid trust domain", self.trust_domain));
        }
        if self.root_namespace.is_empty() {
            issues.error(&path.key("rootNamespace"), "must not be empty");
        }
        let tracing = &self.telemetry.tracing;
        if !(0.0..=100.0).contains(&tracing.sampling_percent) {
            let at = path.key("telemetry").key("tracing").key("samplingPercent");
            issues.error(&at, format!("{} must be between 0 and 100", tracing.sampling_percent));
        }
        for (kind, list) in [("ingress", &self.gateways.ingress), ("egress", &self.gateways.egress)] {
            let at = path.key("gateways").key(kind);
            let mut names = std::collections::BTreeSet::new();
            for (i, gateway) in list.iter().enumerate() {
                if !names.insert(&gateway.name) {
                    issues.error(&at.index(i).key("name"), format!("gateway name {:?} is used twice", gateway.name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_mesh_spec_gets_every_default() {
        let spec: MeshSpec = serde_json::from_value(serde_json::json!({})).expect("empty spec is valid");
        assert_eq!(spec.trust_domain, DEFAULT_TRUST_DOMAIN);
        assert_eq!(spec.root_namespace, DEFAULT_ROOT_NAMESPACE);
        assert!(spec.proxy.native_sidecar && spec.proxy.hold_application_until_proxy_starts);
        assert_eq!(spec.injection.failure_policy, FailurePolicy::Fail);
        assert_eq!(spec.mtls.mode, MeshMtlsMode::Permissive);
        assert_eq!(spec.outbound_traffic_policy.mode, OutboundMode::AllowAny);
        assert!(spec.telemetry.metrics.enabled && spec.telemetry.metrics.istio_compatible_names);
        let ingress = &spec.gateways.ingress[0];
        assert_eq!(ingress.labels.get("istio").map(String::as_str), Some("ingressgateway"));
    }

    #[test]
    fn every_mesh_field_has_the_documented_name_and_values() {
        let json = serde_json::json!({
            "profile": "demo", "trustDomain": "example.org", "rootNamespace": "istio-system",
            "controlPlane": {"replicas": 2, "image": "trellisd:dev", "resources": {"requests": {"cpu": "100m"}}, "logLevel": "debug"},
            "proxy": {"image": "trellis-proxy:dev", "logLevel": "warn", "nativeSidecar": false, "holdApplicationUntilProxyStarts": false},
            "injection": {"failurePolicy": "Ignore"},
            "mtls": {"mode": "STRICT"},
            "gateways": {"ingress": [], "egress": [{"name": "egress", "serviceType": "ClusterIP", "ports": [{"name": "tls", "port": 443}], "replicas": 1, "labels": {"istio": "egressgateway"}}]},
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            "telemetry": {"accessLog": {"enabled": true, "format": "json"}, "tracing": {"samplingPercent": 10.0, "otlpEndpoint": "http://otel:4317", "zipkinEndpoint": "http://zipkin:9411/api/v2/spans"}, "metrics": {"enabled": true, "istioCompatibleNames": false}}
        });
        let spec: MeshSpec = serde_json::from_value(json.clone()).expect("valid");
        assert_eq!(serde_json::to_value(&spec).expect("serialize"), json);
        let mut issues = Issues::default();
        spec.validate(&FieldPath::of("spec"), &mut issues);
        assert!(!issues.has_errors(), "{issues:?}");
    }

    #[test]
    fn a_bad_sampling_percent_and_duplicate_gateway_names_are_errors_at_their_fields() {
        let spec: MeshSpec = serde_json::from_value(serde_json::json!({
            "telemetry": {"tracing": {"samplingPercent": 150.0}},
            "gateways": {"ingress": [{"name": "a"}, {"name": "a"}]}
        }))
        .expect("valid shape");
        let mut issues = Issues::default();
        spec.validate(&FieldPath::of("spec"), &mut issues);
        let paths: Vec<String> = issues.iter().map(|i| i.path.to_string()).collect();
        assert_eq!(paths, ["spec.telemetry.tracing.samplingPercent", "spec.gateways.ingress[1].name"]);
    }

    #[test]
    fn an_unknown_profile_is_refused() {
        assert!(serde_json::from_value::<MeshSpec>(serde_json::json!({"profile": "huge"})).is_err());
    }
}
