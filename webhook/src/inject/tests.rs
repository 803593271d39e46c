use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use trellis_api::mesh::MeshSpec;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn enabled() -> BTreeMap<String, String> {
    labels(&[("trellis-injection", "enabled")])
}

/// A shop pod: two containers, an existing init container and volumes, env, probes of every kind,
/// annotations and labels with `/` in their keys.
fn realistic_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "shop-7d9f", "namespace": "shop",
            "labels": {"app": "shop", "version": "v2", "app.kubernetes.io/name": "shop"},
            "annotations": {"example.com/owner": "team-a", "traffic.sidecar.istio.io/excludeOutboundPorts": "5432"}
        },
        "spec": {
            "serviceAccountName": "shop",
            "initContainers": [{"name": "migrate", "image": "shop:v2", "args": ["migrate"]}],
            "containers": [
                {
                    "name": "shop", "image": "shop:v2",
                    "ports": [{"name": "http", "containerPort": 8080}, {"name": "grpc", "containerPort": 9090}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "livenessProbe": {"httpGet": {"path": "/live", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 7, "timeoutSeconds": 2},
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 3},
                    "startupProbe": {"grpc": {"port": 9090, "service": "shop"}, "failureThreshold": 30}
                },
                {
                    "name": "logger", "image": "fluent-bit:3",
                    "livenessProbe": {"exec": {"command": ["true"]}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 2020, "scheme": "HTTPS"}}
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

fn minimal_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
}

/// Injects `pod`, applies the patch to the original JSON, checks that the result is a Pod and that a
/// second injection changes nothing; returns the injection and the patched pod.
fn injected(pod: &Value, ns_labels: Option<&BTreeMap<String, String>>, mesh: &MeshSpec) -> (Injection, Value) {
    let typed: Pod = serde_json::from_value(pod.clone()).expect("the fixture is a Pod");
    let namespace = Namespace { name: "shop", labels: ns_labels };
    let injection = inject(&typed, &namespace, mesh).expect("injection decided");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &injection.patch).expect("the patch applies to the original");
    let again: Pod = serde_json::from_value(patched.clone()).expect("the patched pod deserializes into a Pod");
    let second = inject(&again, &namespace, mesh).expect("second injection decided");
    assert!(second.patch.0.is_empty(), "a second injection patched again: {:?}", second.patch);
    if injection.decision == Decision::Inject {
        assert_eq!(second.decision, Decision::Skip(Skip::AlreadyInjected));
    }
    (injection, patched)
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list].as_array().and_then(|l| l.iter().find(|c| c["name"] == name)).unwrap_or_else(|| {
        panic!("no {list} entry named {name} in {}", serde_json::to_string_pretty(&pod["spec"]).expect("json"))
    })
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map_or_else(Vec::new, |l| l.iter().map(|c| c["name"].as_str().expect("a name").to_owned()).collect())
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = e.get("value").cloned().unwrap_or_else(|| e["valueFrom"]["fieldRef"]["fieldPath"].clone());
            (e["name"].as_str().expect("a name").to_owned(), value)
        })
        .collect()
}

#[test]
fn a_realistic_pod_gets_the_native_sidecar_first_and_keeps_everything_it_had() {
    let (injection, pod) = injected(&realistic_pod(), Some(&enabled()), &MeshSpec::default());
    assert_eq!(injection.decision, Decision::Inject);
    assert_eq!(names(&pod, "initContainers"), [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    assert_eq!(names(&pod, "containers"), ["shop", "logger"]);
    assert_eq!(names(&pod, "volumes"), ["data", TOKEN_VOLUME, CA_VOLUME]);
    assert_eq!(pod["metadata"]["annotations"]["example.com/owner"], "team-a");
    assert_eq!(pod["metadata"]["annotations"][PROMETHEUS_PORT_ANNOTATION], "15090");
    assert_eq!(pod["metadata"]["annotations"][DEFAULT_CONTAINER], "shop");
    let status: Value =
        serde_json::from_str(pod["metadata"]["annotations"][STATUS_ANNOTATION].as_str().expect("status"))
            .expect("the status is JSON");
    assert_eq!(status["version"], VERSION);
    assert_eq!(status["initContainers"], json!([INIT_CONTAINER, PROXY_CONTAINER]));

    let proxy = container(&pod, "initContainers", PROXY_CONTAINER);
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["args"], json!(["sidecar"]));
    assert_eq!(proxy["image"], DEFAULT_PROXY_IMAGE);
    assert_eq!(proxy["startupProbe"]["httpGet"], json!({"path": READINESS_PATH, "port": 15021}));
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    let security = &proxy["securityContext"];
    assert_eq!(security["runAsUser"], 1337);
    assert_eq!(security["runAsGroup"], 1337);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(proxy["resources"]["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
    let env = env_of(proxy);
    assert_eq!(env["POD_NAME"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(env["INSTANCE_IP"], "status.podIP");
    assert_eq!(env["SERVICE_ACCOUNT"], "spec.serviceAccountName");
    assert_eq!(env[LABELS_ENV], "app=shop,app.kubernetes.io/name=shop,security.istio.io/tlsMode=istio,version=v2");
    assert_eq!(pod["metadata"]["labels"][TLS_MODE_LABEL], TLS_MODE_ISTIO);
    assert_eq!(env[DISCOVERY_ENV], "trellisd.trellis-system.svc:15012");
    assert_eq!(env[CA_ENV], "/var/run/secrets/trellis/ca/root-cert.pem");
    assert_eq!(env[TRUST_DOMAIN_ENV], "cluster.local");
    let mounts: Vec<(&str, &str)> = proxy["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| (m["name"].as_str().expect("name"), m["mountPath"].as_str().expect("path")))
        .collect();
    assert_eq!(mounts, [(TOKEN_VOLUME, TOKEN_DIR), (CA_VOLUME, CA_DIR)]);
    let token = &container(&pod, "volumes", TOKEN_VOLUME)["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], TOKEN_AUDIENCE);
    assert_eq!(format!("{TOKEN_DIR}/{}", token["path"].as_str().expect("path")), "/var/run/secrets/tokens/trellis-ca");
    assert_eq!(container(&pod, "volumes", CA_VOLUME)["configMap"]["name"], CA_ROOT_CONFIGMAP);

    let init = container(&pod, "initContainers", INIT_CONTAINER);
    assert_eq!(
        init["args"],
        json!([
            "init",
            "--include-inbound-ports",
            "*",
            "--exclude-outbound-ports",
            "5432",
            "--include-outbound-ip-ranges",
            "*"
        ])
    );
    assert_eq!(init["securityContext"]["runAsNonRoot"], true);
    assert_eq!(init["securityContext"]["capabilities"], json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}));

    // The app keeps its env, mounts and ports.
    let app = container(&pod, "containers", "shop");
    assert_eq!(app["env"], json!([{"name": "MODE", "value": "prod"}]));
    assert_eq!(app["volumeMounts"], json!([{"name": "data", "mountPath": "/data"}]));
    assert_eq!(container(&pod, "initContainers", "migrate")["args"], json!(["migrate"]));
}

#[test]
fn http_tcp_and_grpc_probes_go_through_the_proxy_and_exec_and_https_probes_stay() {
    let (injection, pod) = injected(&realistic_pod(), Some(&enabled()), &MeshSpec::default());
    let app = container(&pod, "containers", "shop");
    assert_eq!(
        app["livenessProbe"],
        json!({"httpGet": {"path": "/app-health/shop/livez", "port": 15021}, "periodSeconds": 7, "timeoutSeconds": 2})
    );
    assert_eq!(
        app["readinessProbe"],
        json!({"httpGet": {"path": "/app-health/shop/readyz", "port": 15021}, "initialDelaySeconds": 3})
    );
    assert_eq!(
        app["startupProbe"],
        json!({"httpGet": {"path": "/app-health/shop/startupz", "port": 15021}, "failureThreshold": 30})
    );
    let logger = container(&pod, "containers", "logger");
    assert_eq!(logger["livenessProbe"], json!({"exec": {"command": ["true"]}}));
    assert_eq!(logger["readinessProbe"]["httpGet"]["port"], 2020);
    assert!(injection.warnings.iter().any(|w| w.contains("logger") && w.contains("HTTPS")), "{:?}", injection.warnings);

    let probers = env_of(container(&pod, "initContainers", PROXY_CONTAINER))[APP_PROBERS_ENV].clone();
    let probers: Value = serde_json::from_str(probers.as_str().expect("a string")).expect("JSON");
    assert_eq!(
        probers,
        json!({
            "/app-health/shop/livez": {"httpGet": {"port": 8080, "path": "/live", "httpHeaders": {"X-Probe": "1"}}, "timeoutSeconds": 2},
            "/app-health/shop/readyz": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
            "/app-health/shop/startupz": {"grpc": {"port": 9090, "service": "shop"}, "timeoutSeconds": 1}
        })
    );
}

#[test]
fn absent_parents_are_added_before_their_children_and_slashes_in_keys_are_escaped() {
    let (injection, pod) = injected(&minimal_pod("bare"), Some(&enabled()), &MeshSpec::default());
    let paths: Vec<String> = injection
        .patch
        .0
        .iter()
        .map(|op| match op {
            PatchOperation::Add(add) => add.path.to_string(),
            other => panic!("only adds expected for a bare pod, got {other:?}"),
        })
        .collect();
    assert_eq!(paths[0], "/metadata/annotations");
    assert!(paths.contains(&"/metadata/annotations/prometheus.io~1scrape".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/metadata/annotations/trellis.dev~1sidecar-status".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/metadata/labels".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/metadata/labels/security.istio.io~1tlsMode".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/spec/initContainers".to_owned()) && paths.contains(&"/spec/volumes".to_owned()));
    assert_eq!(names(&pod, "initContainers"), [INIT_CONTAINER, PROXY_CONTAINER]);
    assert!(!env_of(container(&pod, "initContainers", PROXY_CONTAINER)).contains_key(APP_PROBERS_ENV));
}

#[test]
fn opt_in_and_opt_out_follow_istio_with_the_label_winning_over_the_annotation() {
    let none: &[(&str, &str)] = &[];
    type Case<'a> =
        (&'a str, Option<BTreeMap<String, String>>, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)], Decision);
    let cases: Vec<Case<'_>> = vec![
        ("enabled namespace", Some(enabled()), none, none, Decision::Inject),
        ("istio label", Some(labels(&[("istio-injection", "enabled")])), none, none, Decision::Inject),
        (
            "annotation false",
            Some(enabled()),
            none,
            &[(INJECT_KEY, "false")],
            Decision::Skip(Skip::OptedOut { by_label: false }),
        ),
        (
            "label false",
            Some(enabled()),
            &[(INJECT_KEY, "false")],
            none,
            Decision::Skip(Skip::OptedOut { by_label: true }),
        ),
        (
            "label true beats annotation false",
            Some(enabled()),
            &[(INJECT_KEY, "true")],
            &[(INJECT_KEY, "false")],
            Decision::Inject,
        ),
        (
            "label false beats annotation true",
            Some(labels(&[])),
            &[(INJECT_KEY, "false")],
            &[(INJECT_KEY, "true")],
            Decision::Skip(Skip::OptedOut { by_label: true }),
        ),
        (
            "unlabelled namespace",
            Some(labels(&[])),
            none,
            none,
            Decision::Skip(Skip::NamespaceNotEnabled("shop".into())),
        ),
        ("annotation true opts in", Some(labels(&[])), none, &[(INJECT_KEY, "true")], Decision::Inject),
        ("label true opts in", Some(labels(&[])), &[(INJECT_KEY, "true")], none, Decision::Inject),
        (
            "disabled namespace wins",
            Some(labels(&[("trellis-injection", "disabled")])),
            &[(INJECT_KEY, "true")],
            none,
            Decision::Skip(Skip::NamespaceDisabled("shop".into())),
        ),
        ("unknown namespace labels: the caller chose", None, none, none, Decision::Inject),
        (
            "a bad value is ignored",
            Some(labels(&[])),
            &[(INJECT_KEY, "yes please")],
            none,
            Decision::Skip(Skip::NamespaceNotEnabled("shop".into())),
        ),
    ];
    for (case, ns, pod_labels, pod_annotations, expected) in cases {
        let mut pod = minimal_pod("p");
        pod["metadata"]["labels"] = json!(labels(pod_labels));
        pod["metadata"]["annotations"] = json!(labels(pod_annotations));
        let (injection, patched) = injected(&pod, ns.as_ref(), &MeshSpec::default());
        assert_eq!(injection.decision, expected, "{case}");
        assert_eq!(injection.decision == Decision::Inject, patched != pod, "{case}: patched iff injected");
    }
}

#[test]
fn host_network_system_namespaces_mesh_components_and_injected_pods_are_left_alone() {
    let mesh = MeshSpec::default();
    let mut host = minimal_pod("host");
    host["spec"]["hostNetwork"] = json!(true);
    assert_eq!(injected(&host, Some(&enabled()), &mesh).0.decision, Decision::Skip(Skip::HostNetwork));

    let mut component = minimal_pod("trellisd");
    component["metadata"]["labels"] = json!({COMPONENT_LABEL: "controlplane"});
    assert_eq!(injected(&component, None, &mesh).0.decision, Decision::Skip(Skip::MeshComponent));

    let mut gateway = minimal_pod("gw");
    gateway["spec"]["containers"] = json!([{"name": PROXY_CONTAINER, "image": "trellis-proxy", "args": ["gateway"]}]);
    assert_eq!(injected(&gateway, None, &mesh).0.decision, Decision::Skip(Skip::AlreadyInjected));

    let typed: Pod = serde_json::from_value(minimal_pod("sys")).expect("a pod");
    for ns in ["kube-system", "kube-public", "kube-node-lease", "trellis-system", "istio-system"] {
        let namespace = Namespace { name: ns, labels: Some(&enabled()) };
        let decided = inject(&typed, &namespace, &mesh).expect("decided");
        assert_eq!(decided.decision, Decision::Skip(Skip::IgnoredNamespace(ns.to_owned())));
        assert!(decided.patch.0.is_empty());
    }
}

#[test]
fn without_native_sidecars_the_proxy_is_the_first_container_and_probes_stay_on_the_app() {
    let mesh: MeshSpec = serde_json::from_value(json!({"proxy": {"nativeSidecar": false}})).expect("mesh");
    let (_, pod) = injected(&realistic_pod(), Some(&enabled()), &mesh);
    assert_eq!(names(&pod, "initContainers"), [INIT_CONTAINER, "migrate"]);
    assert_eq!(names(&pod, "containers"), [PROXY_CONTAINER, "shop", "logger"]);
    let proxy = container(&pod, "containers", PROXY_CONTAINER);
    assert!(proxy.get("restartPolicy").is_none() && proxy.get("startupProbe").is_none());
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], READINESS_PATH);
    assert_eq!(container(&pod, "containers", "shop")["livenessProbe"]["httpGet"]["path"], "/app-health/shop/livez");
    assert_eq!(container(&pod, "containers", "logger")["livenessProbe"], json!({"exec": {"command": ["true"]}}));
}

#[test]
fn mesh_settings_and_pod_annotations_shape_the_proxy_and_the_init_arguments() {
    let mesh: MeshSpec = serde_json::from_value(json!({
        "trustDomain": "example.org", "rootNamespace": "mesh",
        "proxy": {"image": "registry.local/trellis-proxy:dev", "logLevel": "debug",
                  "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}}
    }))
    .expect("mesh");
    let mut pod = minimal_pod("tuned");
    pod["metadata"]["annotations"] = json!({
        PROXY_CPU: "200m", PROXY_MEMORY_LIMIT: "1Gi",
        INCLUDE_INBOUND_PORTS: "8080, 8443", EXCLUDE_INBOUND_PORTS: "9000",
        INCLUDE_OUTBOUND_PORTS: "443", EXCLUDE_OUTBOUND_IP_RANGES: "10.96.0.0/12,fd00::/8",
        INCLUDE_OUTBOUND_IP_RANGES: "10.0.0.0/8",
        PROMETHEUS_SCRAPE: "false", REWRITE_PROBES: "false"
    });
    pod["spec"]["containers"][0]["livenessProbe"] = json!({"httpGet": {"path": "/", "port": 80}});
    let (_, patched) = injected(&pod, Some(&enabled()), &mesh);
    let proxy = container(&patched, "initContainers", PROXY_CONTAINER);
    assert_eq!(proxy["image"], "registry.local/trellis-proxy:dev");
    assert_eq!(proxy["resources"], json!({"requests": {"cpu": "200m"}, "limits": {"memory": "1Gi"}}));
    let env = env_of(proxy);
    assert_eq!(env[DISCOVERY_ENV], "trellisd.mesh.svc:15012");
    assert_eq!(env[TRUST_DOMAIN_ENV], "example.org");
    assert_eq!(env["TRELLIS_LOG"], "debug");
    assert_eq!(
        container(&patched, "initContainers", INIT_CONTAINER)["args"],
        json!([
            "init",
            "--include-inbound-ports",
            "8080,8443",
            "--exclude-inbound-ports",
            "9000",
            "--include-outbound-ports",
            "443",
            "--include-outbound-ip-ranges",
            "10.0.0.0/8",
            "--exclude-outbound-ip-ranges",
            "10.96.0.0/12,fd00::/8"
        ])
    );
    let annotations = &patched["metadata"]["annotations"];
    assert_eq!(annotations[PROMETHEUS_SCRAPE], "false", "the pod's own scrape setting is kept");
    assert!(annotations.get(PROMETHEUS_PORT_ANNOTATION).is_none());
    assert_eq!(container(&patched, "containers", "app")["livenessProbe"]["httpGet"]["port"], 80, "probes kept");
}

#[test]
fn bad_annotations_and_unknown_probe_ports_are_errors_naming_them() {
    let mesh = MeshSpec::default();
    let namespace = Namespace { name: "shop", labels: Some(&enabled()) };
    for (key, value, expected) in [
        (EXCLUDE_INBOUND_PORTS, "80,http", "\"http\" is not a port"),
        (EXCLUDE_OUTBOUND_PORTS, "*", "`*` is not allowed"),
        (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33", "not a CIDR"),
        (PROXY_MEMORY, "lots", "not a Kubernetes quantity"),
    ] {
        let mut pod = minimal_pod("bad");
        pod["metadata"]["annotations"] = json!({ key: value });
        let typed: Pod = serde_json::from_value(pod).expect("a pod");
        let err = inject(&typed, &namespace, &mesh).expect_err("a bad annotation is refused").to_string();
        assert!(err.contains(key) && err.contains(expected) && err.contains("shop/bad"), "{err}");
    }
    let mut pod = minimal_pod("probe");
    pod["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"path": "/", "port": "web"}});
    let typed: Pod = serde_json::from_value(pod).expect("a pod");
    let err = inject(&typed, &namespace, &mesh).expect_err("an unknown port is refused").to_string();
    assert!(err.contains("spec.containers[app].readinessProbe") && err.contains("\"web\""), "{err}");

    let no_spec = Pod { metadata: typed.metadata.clone(), spec: None, status: None };
    assert!(inject(&no_spec, &namespace, &mesh).expect_err("no spec").to_string().contains("spec: missing"));
}

#[test]
fn a_pod_with_a_volume_of_the_sidecar_name_is_refused() {
    let mut pod = minimal_pod("clash");
    pod["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "emptyDir": {}}]);
    let typed: Pod = serde_json::from_value(pod).expect("a pod");
    let err = inject(&typed, &Namespace { name: "shop", labels: None }, &MeshSpec::default()).expect_err("refused");
    assert!(err.to_string().contains(TOKEN_VOLUME), "{err}");
}

fn mesh_with(native: bool, hold: Option<bool>) -> MeshSpec {
    let mut proxy = json!({"nativeSidecar": native});
    if let Some(hold) = hold {
        proxy["holdApplicationUntilProxyStarts"] = json!(hold);
    }
    serde_json::from_value(json!({"proxy": proxy})).expect("mesh")
}

/// The `postStart` command of the injected proxy, wherever it sits, or `None` without a hook.
fn post_start(pod: &Value) -> Option<Value> {
    let list =
        if names(pod, "initContainers").iter().any(|n| n == PROXY_CONTAINER) { "initContainers" } else { "containers" };
    let proxy = container(pod, list, PROXY_CONTAINER);
    proxy.get("lifecycle").map(|l| l["postStart"]["exec"]["command"].clone())
}

fn wait_command() -> Value {
    json!([PROXY_BINARY, WAIT_MODE, "--readiness-addr", format!("{WAIT_HOST}:{READINESS_PORT}")])
}

#[test]
fn without_native_sidecars_the_first_container_holds_the_app_with_a_post_start_wait() {
    let (injection, pod) = injected(&realistic_pod(), Some(&enabled()), &mesh_with(false, None));
    assert_eq!(injection.decision, Decision::Inject);
    assert_eq!(names(&pod, "containers"), [PROXY_CONTAINER, "shop", "logger"]);
    assert_eq!(post_start(&pod), Some(json!(["trellis-proxy", "wait", "--readiness-addr", "127.0.0.1:15021"])));
    let proxy = container(&pod, "containers", PROXY_CONTAINER);
    assert_eq!(proxy["lifecycle"], json!({"postStart": {"exec": {"command": wait_command()}}}), "nothing else");
    let status: Value =
        serde_json::from_str(pod["metadata"]["annotations"][STATUS_ANNOTATION].as_str().expect("status"))
            .expect("the status is JSON");
    assert_eq!(status["holdApplicationUntilProxyStarts"], true);
    assert_eq!(status["containers"], json!([PROXY_CONTAINER]));

    // The patched pod is a Pod the API server would take: the hook reads back through k8s-openapi.
    let typed: Pod = serde_json::from_value(pod).expect("a Pod");
    let spec = typed.spec.expect("a spec");
    let first = &spec.containers[0];
    assert_eq!(first.name, PROXY_CONTAINER);
    let command = first.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()).and_then(|h| h.exec.as_ref());
    assert_eq!(
        command.and_then(|e| e.command.clone()),
        Some(vec![
            PROXY_BINARY.to_owned(),
            WAIT_MODE.to_owned(),
            "--readiness-addr".to_owned(),
            "127.0.0.1:15021".to_owned()
        ])
    );
    assert!(spec.containers[1..].iter().all(|c| c.lifecycle.is_none()), "only the proxy gets the hook");
}

#[test]
fn the_mesh_and_the_proxy_config_annotation_decide_whether_the_app_is_held() {
    let hold_false = "holdApplicationUntilProxyStarts: false";
    let hold_true = "holdApplicationUntilProxyStarts: true";
    /// (case, nativeSidecar, the Mesh's hold (None: its default), the annotation, hook expected)
    type Case<'a> = (&'a str, bool, Option<bool>, Option<&'a str>, bool);
    let cases: [Case<'_>; 11] = [
        ("mesh default holds", false, None, None, true),
        ("mesh hold on", false, Some(true), None, true),
        ("mesh hold off", false, Some(false), None, false),
        ("annotation turns it off", false, Some(true), Some(hold_false), false),
        ("annotation turns it on", false, Some(false), Some(hold_true), true),
        ("JSON annotation", false, None, Some(r#"{"holdApplicationUntilProxyStarts": false}"#), false),
        (
            "other ProxyConfig keys leave the mesh's choice",
            false,
            Some(false),
            Some("terminationDrainDuration: 30s\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n"),
            false,
        ),
        (
            "multi-key annotation",
            false,
            Some(false),
            Some("concurrency: 2\nholdApplicationUntilProxyStarts: true\n"),
            true,
        ),
        ("empty annotation", false, None, Some("  "), true),
        ("native sidecars need no hook", true, None, None, false),
        ("native sidecars ignore an asked hold", true, Some(true), Some(hold_true), false),
    ];
    for (case, native, hold, annotation, expected) in cases {
        let mut pod = minimal_pod("held");
        if let Some(annotation) = annotation {
            pod["metadata"]["annotations"] = json!({PROXY_CONFIG: annotation});
        }
        let (injection, patched) = injected(&pod, Some(&enabled()), &mesh_with(native, hold));
        assert_eq!(injection.decision, Decision::Inject, "{case}");
        assert_eq!(post_start(&patched), expected.then(wait_command), "{case}");
        let list = if native { "initContainers" } else { "containers" };
        assert_eq!(
            names(&patched, list).iter().position(|n| n == PROXY_CONTAINER),
            Some(usize::from(native)),
            "{case}"
        );
        if let Some(annotation) = annotation {
            assert_eq!(patched["metadata"]["annotations"][PROXY_CONFIG], annotation, "{case}: the annotation is kept");
        }
    }
}

#[test]
fn a_proxy_config_annotation_that_cannot_be_read_is_an_error_naming_it() {
    let namespace = Namespace { name: "shop", labels: Some(&enabled()) };
    for native in [false, true] {
        for value in [
            "holdApplicationUntilProxyStarts: maybe",
            "holdApplicationUntilProxyStarts: 3",
            "holdApplicationUntilProxyStarts: {enabled: true}",
            "[holdApplicationUntilProxyStarts]",
            "{\"holdApplicationUntilProxyStarts\": ",
        ] {
            let mut pod = minimal_pod("bad");
            pod["metadata"]["annotations"] = json!({ PROXY_CONFIG: value });
            let typed: Pod = serde_json::from_value(pod).expect("a pod");
            let err = inject(&typed, &namespace, &mesh_with(native, None))
                .expect_err("a bad proxy.istio.io/config is refused")
                .to_string();
            assert!(err.contains("shop/bad") && err.contains("annotation proxy.istio.io/config="), "{value}: {err}");
            assert!(err.contains("holdApplicationUntilProxyStarts a boolean (line 1 column "), "{value}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
