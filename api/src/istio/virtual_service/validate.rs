//! Validation of a `VirtualService`: the spec, its HTTP, TLS and TCP rules, their destinations and weights.

use std::net::IpAddr;

use super::{
    Destination, HttpMatchRequest, HttpRoute, PortSelector, RouteDestination, TcpRoute, TlsMatchAttributes, TlsRoute,
    VirtualServiceSpec,
};
use crate::{FieldPath, Issues, Validate};
use fields::{
    MatchRules, Precision, check_duration, check_export_to, check_gateway_names, check_header_match_name, check_labels,
    check_match_port, check_string_match, check_subnets,
};
use hosts::{domain_problem, host_subset_of, hosts_overlap, is_dns1123_label};
use http::check_authority_rewrites;

mod fields;
mod hosts;
mod http;

/// The gateway name that stands for every sidecar of the mesh.
const MESH_GATEWAY: &str = "mesh";

/// What the checks of nested fields need to know about the whole virtual service.
#[derive(Debug)]
struct Scope<'a> {
    /// The service's hosts.
    hosts: &'a [String],
    /// Bound only to gateways, not to the mesh's sidecars.
    gateway_only: bool,
    /// Some TLS condition names SNI hosts.
    has_sni: bool,
}

impl Validate for VirtualServiceSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let hosts = self.hosts.as_deref().unwrap_or_default();
        let gateways = self.gateways.as_deref().unwrap_or_default();
        let tls = self.tls.as_deref().unwrap_or_default();
        let scope = Scope {
            hosts,
            gateway_only: !gateways.is_empty() && !gateways.iter().any(|g| g == MESH_GATEWAY),
            has_sni: tls.iter().any(|route| route.r#match.iter().any(|m| !m.sni_hosts.is_empty())),
        };

        check_hosts(&path.key("hosts"), &scope, issues);
        check_gateway_names(&path.key("gateways"), gateways, issues);

        let http = self.http.as_deref().unwrap_or_default();
        let tcp = self.tcp.as_deref().unwrap_or_default();
        if http.is_empty() && tcp.is_empty() && tls.is_empty() {
            issues.error(path, "at least one of http, tcp or tls routes is required");
        }
        for (i, route) in http.iter().enumerate() {
            route.check(&path.key("http").index(i), &scope, issues);
        }
        for (i, route) in tls.iter().enumerate() {
            route.check(&path.key("tls").index(i), &scope, issues);
        }
        for (i, route) in tcp.iter().enumerate() {
            route.check(&path.key("tcp").index(i), issues);
        }
        check_export_to(&path.key("exportTo"), self.export_to.as_deref().unwrap_or_default(), issues);
    }
}

/// The service's hosts: present, well formed, `*` only on gateways, no two overlapping.
fn check_hosts(path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
    let hosts = scope.hosts;
    if hosts.is_empty() {
        // Istio accepts a VirtualService without hosts as the target of another one's `delegate`.
        issues.warn(path, "no hosts: usable only as a delegate target, which Trellis does not act on yet");
        return;
    }
    let mut all_valid = true;
    for (i, host) in hosts.iter().enumerate() {
        let at = path.index(i);
        if let Some(problem) = domain_problem(host, scope.gateway_only && scope.has_sni) {
            if host.parse::<IpAddr>().is_err() {
                issues.error(&at, problem);
                all_valid = false;
            }
        } else if !scope.gateway_only && host == "*" {
            issues.error(&at, "host \"*\" is only allowed when the virtual service is bound to gateways, not the mesh");
            all_valid = false;
        }
    }
    if all_valid {
        for (i, first) in hosts.iter().enumerate() {
            for (j, second) in hosts.iter().enumerate().skip(i + 1) {
                if hosts_overlap(first, second) {
                    issues.error(&path.index(j), format!("host {second:?} duplicates or overlaps host {first:?}"));
                }
            }
        }
    }
}

impl HttpRoute {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        self.check_actions(path, issues);
        for (j, condition) in self.r#match.iter().flatten().enumerate() {
            condition.check(&path.key("match").index(j), scope, issues);
        }
        self.headers.validate(&path.key("headers"), issues);
        check_authority_rewrites(path, self.rewrite.as_ref(), self.headers.as_ref(), issues);
        self.cors_policy.validate(&path.key("corsPolicy"), issues);
        self.fault.validate(&path.key("fault"), issues);

        for (key, value) in [("mirrorPercent", self.mirror_percent), ("mirror_percent", self.legacy_mirror_percent)] {
            if let Some(value) = value {
                let at = path.key(key);
                if value > 100 {
                    issues.error(&at, format!("mirror percent {value} must be at most 100"));
                }
                issues.warn(&at, format!("{key} is deprecated; use mirrorPercentage"));
            }
        }
        if self.mirror_percent.is_some() && self.legacy_mirror_percent.is_some() {
            issues.error(&path.key("mirror_percent"), "only one of mirrorPercent or mirror_percent can be set");
        }
        self.mirror_percentage.validate(&path.key("mirrorPercentage"), issues);
        self.mirror.validate(&path.key("mirror"), issues);
        for (k, mirror) in self.mirrors.iter().flatten().enumerate() {
            let at = path.key("mirrors").index(k);
            mirror.destination.validate(&at.key("destination"), issues);
            mirror.percentage.validate(&at.key("percentage"), issues);
        }

        self.redirect.validate(&path.key("redirect"), issues);
        self.direct_response.validate(&path.key("directResponse"), issues);
        self.retries.validate(&path.key("retries"), issues);
        self.rewrite.validate(&path.key("rewrite"), issues);
        if let Some(delegate) = &self.delegate
            && delegate.name.as_deref().is_none_or(str::is_empty)
        {
            issues.warn(&path.key("delegate").key("name"), "delegate has no name, so it hands requests to nothing");
        }

        let route = self.route.as_deref().unwrap_or_default();
        for (k, destination) in route.iter().enumerate() {
            let at = path.key("route").index(k);
            destination.destination.validate(&at.key("destination"), issues);
            destination.headers.validate(&at.key("headers"), issues);
        }
        check_weights(&path.key("route"), &route.iter().map(|d| d.weight).collect::<Vec<_>>(), issues);
        check_duration(&path.key("timeout"), self.timeout.as_deref(), Precision::Millisecond, issues);
    }

    /// Exactly one way of answering: forward (`route`), `redirect`, `directResponse` or `delegate`.
    fn check_actions(&self, path: &FieldPath, issues: &mut Issues) {
        let has_route = self.route.as_ref().is_some_and(|route| !route.is_empty());
        if self.delegate.is_some() {
            let at = path.key("delegate");
            if has_route {
                issues.error(&at, "delegate cannot be combined with route");
            }
            if self.redirect.is_some() {
                issues.error(&at, "delegate cannot be combined with redirect");
            }
        } else if self.redirect.is_some() {
            if has_route {
                issues.error(&path.key("redirect"), "redirect cannot be combined with route");
            }
            if self.fault.is_some() {
                issues.error(&path.key("fault"), "fault cannot be combined with redirect");
            }
            if self.rewrite.is_some() {
                issues.error(&path.key("rewrite"), "rewrite cannot be combined with redirect");
            }
            if self.direct_response.is_some() {
                issues.error(&path.key("directResponse"), "directResponse cannot be combined with redirect");
            }
        } else if self.direct_response.is_some() {
            if has_route {
                issues.error(&path.key("directResponse"), "directResponse cannot be combined with route");
            }
            if self.fault.is_some() {
                issues.error(&path.key("fault"), "fault cannot be combined with directResponse");
            }
            if self.rewrite.is_some() {
                issues.error(&path.key("rewrite"), "rewrite cannot be combined with directResponse");
            }
        } else if !has_route {
            issues.error(path, "one of route, redirect, directResponse or delegate is required");
        }
        if self.mirror.is_some() && self.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
            issues.error(&path.key("mirrors"), "mirror and mirrors cannot both be set");
        }
    }
}

impl HttpMatchRequest {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        // Envoy allows an empty path prefix, but not an empty prefix for the other string matches.
        check_string_match(
            &path.key("uri"),
            self.uri.as_ref(),
            MatchRules { empty_prefix: true, ..MatchRules::default() },
            issues,
        );
        check_string_match(&path.key("scheme"), self.scheme.as_ref(), MatchRules::default(), issues);
        check_string_match(&path.key("method"), self.method.as_ref(), MatchRules::default(), issues);
        check_string_match(&path.key("authority"), self.authority.as_ref(), MatchRules::default(), issues);
        for (field, headers, rules) in [
            ("headers", &self.headers, MatchRules::default()),
            ("withoutHeaders", &self.without_headers, MatchRules { star_means_present: true, ..MatchRules::default() }),
        ] {
            for (name, value) in headers.iter().flatten() {
                let at = path.key(field).key(name);
                check_header_match_name(&at, name, scope, issues);
                check_string_match(&at, Some(value), rules, issues);
            }
        }
        for (name, value) in self.query_params.iter().flatten() {
            check_string_match(&path.key("queryParams").key(name), Some(value), MatchRules::default(), issues);
        }
        check_match_port(&path.key("port"), self.port, issues);
        check_labels(&path.key("sourceLabels"), self.source_labels.as_ref(), issues);
        check_gateway_names(&path.key("gateways"), self.gateways.as_deref().unwrap_or_default(), issues);
        if let Some(namespace) = self.source_namespace.as_deref()
            && !namespace.is_empty()
            && !is_dns1123_label(namespace)
        {
            issues.error(
                &path.key("sourceNamespace"),
                format!("sourceNamespace {namespace:?} is not a valid namespace name"),
            );
        }
    }
}

impl TlsRoute {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        if self.r#match.is_empty() {
            issues.error(&path.key("match"), "a tls route needs at least one match");
        }
        for (j, condition) in self.r#match.iter().enumerate() {
            condition.check(&path.key("match").index(j), scope, issues);
        }
        check_route_destinations(&path.key("route"), self.route.as_deref().unwrap_or_default(), "tls", issues);
    }
}

impl TlsMatchAttributes {
    fn check(&self, path: &FieldPath, scope: &Scope<'_>, issues: &mut Issues) {
        let at = path.key("sniHosts");
        if self.sni_hosts.is_empty() {
            issues.error(&at, "a tls match needs at least one sniHost");
        }
        for (k, sni) in self.sni_hosts.iter().enumerate() {
            let at = at.index(k);
            if let Some(problem) = domain_problem(sni, scope.gateway_only) {
                if sni.parse::<IpAddr>().is_ok() {
                    issues
                        .warn(&at, format!("sni host {sni:?} is an IP address, which most clients never send as SNI"));
                } else {
                    issues.error(&at, problem);
                }
                continue;
            }
            if !scope.hosts.iter().any(|host| host_subset_of(sni, host)) {
                issues.error(&at, format!("sni host {sni:?} is not covered by any host of the virtual service"));
            }
        }
        check_subnets(&path.key("destinationSubnets"), self.destination_subnets.as_deref(), issues);
        check_match_port(&path.key("port"), self.port, issues);
        check_labels(&path.key("sourceLabels"), self.source_labels.as_ref(), issues);
        check_gateway_names(&path.key("gateways"), self.gateways.as_deref().unwrap_or_default(), issues);
    }
}

impl TcpRoute {
    fn check(&self, path: &FieldPath, issues: &mut Issues) {
        for (j, condition) in self.r#match.iter().flatten().enumerate() {
            let at = path.key("match").index(j);
            check_subnets(&at.key("destinationSubnets"), condition.destination_subnets.as_deref(), issues);
            check_match_port(&at.key("port"), condition.port, issues);
            check_labels(&at.key("sourceLabels"), condition.source_labels.as_ref(), issues);
            check_gateway_names(&at.key("gateways"), condition.gateways.as_deref().unwrap_or_default(), issues);
        }
        check_route_destinations(&path.key("route"), self.route.as_deref().unwrap_or_default(), "tcp", issues);
    }
}

/// The destinations of a TLS or TCP rule: at least one, each valid, weights sensible.
fn check_route_destinations(path: &FieldPath, route: &[RouteDestination], kind: &str, issues: &mut Issues) {
    if route.is_empty() {
        issues.error(path, format!("a {kind} route needs at least one route destination"));
    }
    for (k, destination) in route.iter().enumerate() {
        destination.destination.validate(&path.index(k).key("destination"), issues);
    }
    check_weights(path, &route.iter().map(|d| d.weight).collect::<Vec<_>>(), issues);
}

/// Weights are relative: none negative, and not all zero (an omitted weight counts as 0). A single
/// destination takes all traffic whatever its weight, so Istio accepts `weight: 0` there, and so do we.
fn check_weights(path: &FieldPath, weights: &[Option<i32>], issues: &mut Issues) {
    let mut total = 0i64;
    for (k, weight) in weights.iter().enumerate() {
        if let Some(weight) = *weight {
            if weight < 0 {
                issues.error(&path.index(k).key("weight"), format!("weight {weight} must not be negative"));
            }
            total += i64::from(weight);
        }
    }
    if weights.len() > 1 && total == 0 {
        if weights.iter().any(Option::is_none) {
            issues.error(path, "all route weights are zero (an omitted weight counts as 0)");
        } else {
            issues.error(path, "all route weights are zero");
        }
    }
}

impl Validate for Destination {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at = path.key("host");
        if self.host.is_empty() {
            issues.error(&at, "destination host is required");
        } else if self.host == "*" {
            issues.error(&at, "destination host cannot be \"*\"");
        } else if let Some(problem) = domain_problem(&self.host, false) {
            issues.error(&at, problem);
        }
        if let Some(subset) = self.subset.as_deref()
            && !subset.is_empty()
            && !is_dns1123_label(subset)
        {
            issues.error(&path.key("subset"), format!("subset name {subset:?} must be a DNS-1123 label"));
        }
        self.port.validate(&path.key("port"), issues);
    }
}

impl Validate for PortSelector {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at = path.key("number");
        match self.number {
            None | Some(0) => issues.error(&at, "port number is required and must be between 1-65535"),
            Some(number) => issues.port(&at, Some(number)),
        }
    }
}
