//! Checks that look at several objects at once: references that point nowhere and rules that
//! collide. Istio's `istioctl analyze` reports the same classes of problem.
//!
//! Works on the objects' JSON form, which [`crate::object::decode`] has already proven to be of the
//! right shape, so every field read here exists where the schema says.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::analyze::Located;
use crate::{FieldPath, Issue, Issues};

/// DNS suffix of Kubernetes services; short host names in policy expand with it.
pub const CLUSTER_DOMAIN_SUFFIX: &str = "svc.cluster.local";
/// The reserved gateway name meaning "every sidecar in the mesh".
pub const MESH_GATEWAY: &str = "mesh";

/// Expands a host as Istio does: a name without a dot is a service in `namespace`; anything else is
/// taken as written (lower-cased).
pub fn qualify_host(host: &str, namespace: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host.contains('*') { host } else { format!("{host}.{namespace}.{CLUSTER_DOMAIN_SUFFIX}") }
}

/// A Gateway reference (`name` or `namespace/name`) as `namespace/name`, relative to `namespace`.
pub fn qualify_gateway(reference: &str, namespace: &str) -> String {
    match reference.split_once('/') {
        Some((ns, name)) => format!("{ns}/{name}"),
        None if reference == MESH_GATEWAY => MESH_GATEWAY.to_owned(),
        None => format!("{namespace}/{reference}"),
    }
}

/// Runs every cross-object check; each issue is paired with the index of the object it is about.
pub fn check(objects: &[Located]) -> Vec<(usize, Issue)> {
    let mut out = Vec::new();
    let subsets = subsets_by_host(objects, &mut out);
    let gateways: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.id.kind == "Gateway")
        .map(|o| format!("{}/{}", o.id.namespace, o.id.name))
        .collect();
    let mut routed: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (index, located) in objects.iter().enumerate().filter(|(_, o)| o.id.kind == "VirtualService") {
        let mut issues = Issues::default();
        let ns = &located.id.namespace;
        let spec = &located.document.value["spec"];
        let at = FieldPath::of("spec");
        check_gateway_refs(spec, &at, ns, &gateways, &mut issues);
        for (path, destination) in destinations(spec, &at) {
            let Some(subset) = destination.get("subset").and_then(Value::as_str) else { continue };
            let host = qualify_host(destination["host"].as_str().unwrap_or_default(), ns);
            match subsets.get(&host) {
                None => issues.error(
                    &path.key("subset"),
                    format!("subset {subset:?} of host {host} is not defined: no DestinationRule for that host"),
                ),
                Some((rule, names)) if !names.contains(subset) => issues.error(
                    &path.key("subset"),
                    format!(
                        "subset {subset:?} is not defined by DestinationRule {rule} (it defines: {})",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ),
                Some(_) => {}
            }
        }
        for (h, host) in strings(&spec["hosts"]).enumerate() {
            let host = qualify_host(host, ns);
            for gateway in bound_gateways(spec, ns) {
                match routed.get(&(host.clone(), gateway.clone())) {
                    Some(&first) if first != index => {
                        let other = &objects[first].id;
                        let message = format!(
                            "host {host} is already routed for gateway {gateway} by VirtualService {}/{}; merge the two",
                            other.namespace, other.name
                        );
                        if gateway == MESH_GATEWAY {
                            issues.error(&at.key("hosts").index(h), message);
                        } else {
                            issues.warn(&at.key("hosts").index(h), message);
                        }
                    }
                    Some(_) => {}
                    None => {
                        routed.insert((host.clone(), gateway), index);
                    }
                }
            }
        }
        out.extend(issues.into_vec().into_iter().map(|issue| (index, issue)));
    }
    out
}

/// Subsets defined per qualified host, with the rule that defines them; warns about duplicate rules.
fn subsets_by_host(objects: &[Located], out: &mut Vec<(usize, Issue)>) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut by_host: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for (index, located) in objects.iter().enumerate().filter(|(_, o)| o.id.kind == "DestinationRule") {
        let spec = &located.document.value["spec"];
        if spec.get("workloadSelector").is_some() {
            continue;
        }
        let host = qualify_host(spec["host"].as_str().unwrap_or_default(), &located.id.namespace);
        let rule = format!("{}/{}", located.id.namespace, located.id.name);
        let names: BTreeSet<String> = spec["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .map(str::to_owned)
            .collect();
        if let Some((first, known)) = by_host.get_mut(&host) {
            let mut issues = Issues::default();
            let message = format!(
                "host {host} also has DestinationRule {first}; Istio merges them, the first one's traffic policy wins"
            );
            issues.warn(&FieldPath::of("spec").key("host"), message);
            out.extend(issues.into_vec().into_iter().map(|issue| (index, issue)));
            known.extend(names);
        } else {
            by_host.insert(host, (rule, names));
        }
    }
    by_host
}

fn check_gateway_refs(spec: &Value, at: &FieldPath, ns: &str, gateways: &BTreeSet<String>, issues: &mut Issues) {
    let mut refs: Vec<(FieldPath, &str)> =
        strings(&spec["gateways"]).enumerate().map(|(i, g)| (at.key("gateways").index(i), g)).collect();
    for kind in ["http", "tcp", "tls"] {
        for (r, route) in spec[kind].as_array().into_iter().flatten().enumerate() {
            for (m, matched) in route["match"].as_array().into_iter().flatten().enumerate() {
                let path = at.key(kind).index(r).key("match").index(m).key("gateways");
                refs.extend(strings(&matched["gateways"]).enumerate().map(|(i, g)| (path.index(i), g)));
            }
        }
    }
    for (path, reference) in refs {
        let qualified = qualify_gateway(reference, ns);
        if qualified != MESH_GATEWAY && !gateways.contains(&qualified) {
            issues.error(&path, format!("Gateway {qualified} does not exist"));
        }
    }
}

/// The gateways a VirtualService binds to: `mesh` when it names none.
fn bound_gateways(spec: &Value, ns: &str) -> Vec<String> {
    let named: Vec<String> = strings(&spec["gateways"]).map(|g| qualify_gateway(g, ns)).collect();
    if named.is_empty() { vec![MESH_GATEWAY.to_owned()] } else { named }
}

/// Every destination of a VirtualService (routes and mirrors of http, tcp and tls), with its path.
fn destinations<'a>(spec: &'a Value, at: &FieldPath) -> Vec<(FieldPath, &'a Value)> {
    let mut out = Vec::new();
    for kind in ["http", "tcp", "tls"] {
        for (r, route) in spec[kind].as_array().into_iter().flatten().enumerate() {
            let route_at = at.key(kind).index(r);
            for (d, target) in route["route"].as_array().into_iter().flatten().enumerate() {
                out.push((route_at.key("route").index(d).key("destination"), &target["destination"]));
            }
            if route["mirror"].is_object() {
                out.push((route_at.key("mirror"), &route["mirror"]));
            }
            for (m, mirror) in route["mirrors"].as_array().into_iter().flatten().enumerate() {
                out.push((route_at.key("mirrors").index(m).key("destination"), &mirror["destination"]));
            }
        }
    }
    out
}

fn strings(value: &Value) -> impl Iterator<Item = &str> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str)
}
