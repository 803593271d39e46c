//! Istio's per-pod annotations that shape the injection: interception exclusions
//! (`traffic.sidecar.istio.io/*`, handed to `trellis-proxy init`), proxy resources
//! (`sidecar.istio.io/proxyCPU` ...) and the ProxyConfig overrides of `proxy.istio.io/config` (of which
//! Trellis reads `holdApplicationUntilProxyStarts`). Values are checked here so a bad one is an error naming the
//! annotation at admission, not an init container that crashes and a pod that never starts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::Error;

pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
/// `"false"` keeps the app's probes as they are (Istio's annotation).
pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// Istio's per-pod ProxyConfig overrides: a YAML (or JSON) map such as
/// `holdApplicationUntilProxyStarts: false`. Keys Trellis does not use are accepted and ignored.
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// Everything captured: the default of the include lists.
const ALL: &str = "*";

/// What a list annotation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Ports,
    Cidrs,
}

/// Each interception annotation, the `init` flag it becomes, what it holds, whether `*` is allowed,
/// and the value used when absent (`None`: the flag is left out).
const INIT_FLAGS: [(&str, &str, ListKind, bool, Option<&str>); 6] = [
    (INCLUDE_INBOUND_PORTS, "--include-inbound-ports", ListKind::Ports, true, Some(ALL)),
    (EXCLUDE_INBOUND_PORTS, "--exclude-inbound-ports", ListKind::Ports, false, None),
    (INCLUDE_OUTBOUND_PORTS, "--include-outbound-ports", ListKind::Ports, false, None),
    (EXCLUDE_OUTBOUND_PORTS, "--exclude-outbound-ports", ListKind::Ports, false, None),
    (INCLUDE_OUTBOUND_IP_RANGES, "--include-outbound-ip-ranges", ListKind::Cidrs, true, Some(ALL)),
    (EXCLUDE_OUTBOUND_IP_RANGES, "--exclude-outbound-ip-ranges", ListKind::Cidrs, false, None),
];

/// The arguments of `trellis-proxy init` for a pod with these annotations.
pub fn init_args(pod: &str, annotations: &BTreeMap<String, String>) -> Result<Vec<String>, Error> {
    let mut args = vec!["init".to_owned()];
    for (key, flag, kind, star, default) in INIT_FLAGS {
        let value = match annotations.get(key) {
            Some(value) => {
                let value: String = value.split(',').map(str::trim).collect::<Vec<_>>().join(",");
                check_list(&value, kind, star).map_err(|reason| Error::Annotation {
                    pod: pod.to_owned(),
                    key: key.to_owned(),
                    value: value.clone(),
                    reason,
                })?;
                value
            }
            None => match default {
                Some(default) => default.to_owned(),
                None => continue,
            },
        };
        args.push(flag.to_owned());
        args.push(value);
    }
    Ok(args)
}

fn check_list(value: &str, kind: ListKind, star: bool) -> Result<(), String> {
    if value == ALL {
        return if star { Ok(()) } else { Err("`*` is not allowed here".to_owned()) };
    }
    for item in value.split(',').filter(|item| !item.is_empty()) {
        match kind {
            ListKind::Ports => {
                if !item.parse::<u16>().is_ok_and(|port| port > 0) {
                    return Err(format!("{item:?} is not a port (1-65535)"));
                }
            }
            ListKind::Cidrs => check_cidr(item)?,
        }
    }
    Ok(())
}

fn check_cidr(item: &str) -> Result<(), String> {
    let bad = || format!("{item:?} is not a CIDR (such as 10.0.0.0/8 or fd00::/8)");
    let (ip, prefix) = item.split_once('/').unwrap_or((item, ""));
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if !prefix.is_empty() && !prefix.parse::<u8>().is_ok_and(|p| p <= max) {
        return Err(bad());
    }
    Ok(())
}

/// A Kubernetes quantity (`100m`, `128Mi`, `0.5`, `1e3`).
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
        .expect("the quantity pattern is valid")
});

/// Resource name to quantity.
type Quantities = BTreeMap<String, String>;

/// The proxy's resources from `base` (the Mesh's) overridden by the pod's resource annotations:
/// `(requests, limits)`.
pub fn resources(
    pod: &str,
    annotations: &BTreeMap<String, String>,
    mut requests: BTreeMap<String, String>,
    mut limits: BTreeMap<String, String>,
) -> Result<(Quantities, Quantities), Error> {
    for (key, resource, is_limit) in [
        (PROXY_CPU, "cpu", false),
        (PROXY_MEMORY, "memory", false),
        (PROXY_CPU_LIMIT, "cpu", true),
        (PROXY_MEMORY_LIMIT, "memory", true),
    ] {
        let Some(value) = annotations.get(key) else { continue };
        let value = value.trim();
        if !QUANTITY.is_match(value) {
            return Err(Error::Annotation {
                pod: pod.to_owned(),
                key: key.to_owned(),
                value: value.to_owned(),
                reason: "not a Kubernetes quantity (such as 100m, 0.5 or 128Mi)".to_owned(),
            });
        }
        let target = if is_limit { &mut limits } else { &mut requests };
        target.insert(resource.to_owned(), value.to_owned());
    }
    Ok((requests, limits))
}

/// The keys of [`PROXY_CONFIG`] that Trellis reads; the others are skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyConfigOverrides {
    #[serde(default)]
    hold_application_until_proxy_starts: Option<bool>,
}

/// Whether the app is held until the proxy is ready: the pod's [`PROXY_CONFIG`]
/// `holdApplicationUntilProxyStarts` when it sets one, else `mesh_default` (the Mesh's
/// `proxy.holdApplicationUntilProxyStarts`). An annotation that is not a map, or whose value there is
/// not a boolean, is an error naming the annotation.
pub fn hold_application(pod: &str, annotations: &BTreeMap<String, String>, mesh_default: bool) -> Result<bool, Error> {
    let Some(text) = annotations.get(PROXY_CONFIG) else { return Ok(mesh_default) };
    if text.trim().is_empty() {
        return Ok(mesh_default);
    }
    let overrides: ProxyConfigOverrides = serde_saphyr::from_str(text).map_err(|err| Error::Annotation {
        pod: pod.to_owned(),
        key: PROXY_CONFIG.to_owned(),
        value: text.clone(),
        reason: format!(
            "not a YAML or JSON map of ProxyConfig fields with holdApplicationUntilProxyStarts a boolean ({})",
            first_line(&err.to_string())
        ),
    })?;
    Ok(overrides.hold_application_until_proxy_starts.unwrap_or(mesh_default))
}

/// The first line of a (possibly multi-line, snippet-rendering) parser message, without its `error: `.
fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or(message).trim();
    line.strip_prefix("error: ").unwrap_or(line)
}
