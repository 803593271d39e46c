//! The app's probes kept working under STRICT mutual TLS, Istio's way: the kubelet does not speak
//! mTLS, so each HTTP, TCP or gRPC probe of an app container is rewritten into an HTTP GET on the
//! proxy's readiness port 15021 at `/app-health/<container>/livez|readyz|startupz`, and the original
//! probe (its port resolved to a number) is handed to the proxy in the `TRELLIS_APP_PROBERS`
//! environment variable (a JSON object keyed by that path). The proxy runs the original probe
//! against the app over loopback, where its own traffic (UID 1337) is never captured. Exec probes
//! and HTTPS probes are left as they are (the proxy does not probe over TLS).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

use super::sidecar::READINESS_PORT;
use crate::Error;

/// The proxy's environment variable holding the original probes (JSON, keyed by path).
pub const APP_PROBERS_ENV: &str = "TRELLIS_APP_PROBERS";
/// Prefix of the rewritten probes' paths on the readiness port.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// One container's probe rewritten: where it is in the pod, and its new value.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub container: usize,
    /// `livenessProbe`, `readinessProbe` or `startupProbe`.
    pub field: &'static str,
    pub probe: Probe,
}

/// The rewritten probes of `containers` and the `TRELLIS_APP_PROBERS` value (`None` when nothing was
/// rewritten).
pub fn rewrite(pod: &str, containers: &[Container]) -> Result<(Vec<Rewrite>, Option<String>), Error> {
    let mut rewrites = Vec::new();
    let mut probers = Map::new();
    for (index, container) in containers.iter().enumerate() {
        for (field, kind, probe) in [
            ("livenessProbe", "livez", &container.liveness_probe),
            ("readinessProbe", "readyz", &container.readiness_probe),
            ("startupProbe", "startupz", &container.startup_probe),
        ] {
            let Some(probe) = probe else { continue };
            let at = || format!("spec.containers[{}].{field}", container.name);
            let Some(original) = prober(probe, container).map_err(|reason| Error::InvalidPod {
                pod: pod.to_owned(),
                field: at(),
                reason,
            })?
            else {
                continue;
            };
            let path = format!("{APP_HEALTH_PREFIX}{}/{kind}", container.name);
            probers.insert(path.clone(), original);
            let rewritten = Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(i32::from(READINESS_PORT)),
                    ..HTTPGetAction::default()
                }),
                exec: None,
                grpc: None,
                tcp_socket: None,
                ..probe.clone()
            };
            rewrites.push(Rewrite { container: index, field, probe: rewritten });
        }
    }
    let env = (!probers.is_empty()).then(|| Value::Object(probers).to_string());
    Ok((rewrites, env))
}

/// The original probe as the proxy runs it, or `None` when it is not rewritten (exec, HTTPS).
fn prober(probe: &Probe, container: &Container) -> Result<Option<Value>, String> {
    let timeout = probe.timeout_seconds.unwrap_or(1);
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
            return Ok(None);
        }
        let port = port_number(&http.port, container)?;
        let headers: BTreeMap<&str, &str> =
            http.http_headers.iter().flatten().map(|h| (h.name.as_str(), h.value.as_str())).collect();
        let mut get = json!({ "port": port, "path": http.path.clone().unwrap_or_else(|| "/".to_owned()) });
        if let Some(host) = &http.host {
            get["host"] = json!(host);
        }
        if !headers.is_empty() {
            get["httpHeaders"] = json!(headers);
        }
        return Ok(Some(json!({ "httpGet": get, "timeoutSeconds": timeout })));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port_number(&tcp.port, container)?;
        return Ok(Some(json!({ "tcpSocket": { "port": port }, "timeoutSeconds": timeout })));
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("grpc.port {} is not a port", grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        return Ok(Some(json!({ "grpc": { "port": port, "service": service }, "timeoutSeconds": timeout })));
    }
    Ok(None)
}

/// A probe's port as a number; a name is looked up in the container's ports.
fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(number) => number,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("port {name:?} is not a named port of the container"))?,
        },
    };
    u16::try_from(number).ok().filter(|p| *p > 0).ok_or_else(|| format!("port {number} is not a port (1-65535)"))
}
