//! Validation of a `DestinationRule`: the spec, subsets, traffic policies, connection pools, outlier
//! detection, upstream TLS, tunnels, retry budgets and `exportTo`.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, H2UpgradePolicy, HttpSettings,
    OutlierDetection, PortTrafficPolicy, RetryBudget, Subset, TcpSettings, TrafficPolicy, TunnelSettings,
};
use crate::{FieldPath, Issues, Validate, duration};
use checks::{
    fqdn, is_dns1123_label, is_label_value, label_key, ms_duration, non_negative, percent, syntax_duration,
    wildcard_domain,
};

mod checks;
pub(super) mod load_balancer;

impl Validate for DestinationRuleSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let host = path.key("host");
        if self.host.is_empty() {
            issues.error(&host, "host is required");
        } else if let Err(reason) = wildcard_domain(&self.host) {
            issues.error(&host, reason);
        }
        self.traffic_policy.validate(&path.key("trafficPolicy"), issues);

        let mut names = BTreeSet::new();
        for (i, subset) in self.subsets.iter().flatten().enumerate() {
            let at = path.key("subsets").index(i);
            if !subset.name.is_empty() && !names.insert(subset.name.as_str()) {
                issues.error(&at.key("name"), format!("duplicate subset name {:?}", subset.name));
            }
            subset.validate(&at, issues);
        }

        validate_export_to(path, self.export_to.as_deref(), self.workload_selector.is_some(), issues);

        if let Some(selector) = &self.workload_selector {
            let at = path.key("workloadSelector");
            selector.validate(&at, issues);
            if selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty) {
                issues.warn(&at, "workload selector has no labels, so it selects every workload in the namespace");
            }
        }
    }
}

impl Validate for Subset {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let name = path.key("name");
        if self.name.is_empty() {
            issues.error(&name, "subset name must not be empty");
        } else if !is_dns1123_label(&self.name) {
            issues.error(&name, format!("subset name {:?} must be a DNS label (letters, digits, '-')", self.name));
        }
        let labels = path.key("labels");
        match &self.labels {
            Some(labels_map) if !labels_map.is_empty() => {
                for (key, value) in labels_map {
                    if let Err(reason) = label_key(key) {
                        issues.error(&labels.key(key), reason);
                    }
                    if !is_label_value(value) {
                        issues.error(&labels.key(key), format!("invalid label value {value:?}"));
                    }
                }
            }
            _ => issues.warn(
                &labels,
                format!(
                    "subset {:?} has no labels; unless the host is a ServiceEntry it selects every endpoint",
                    self.name
                ),
            ),
        }
        self.traffic_policy.validate(&path.key("trafficPolicy"), issues);
    }
}

impl Validate for TrafficPolicy {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let empty = self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_none()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none();
        if empty {
            issues.error(path, "traffic policy must set at least one field");
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            issues.error(path, "tunnel and proxyProtocol must not be set together");
        }
        self.outlier_detection.validate(&path.key("outlierDetection"), issues);
        self.connection_pool.validate(&path.key("connectionPool"), issues);
        if let Some(lb) = &self.load_balancer {
            lb.validate_with(&path.key("loadBalancer"), self.outlier_detection.is_some(), issues);
        }
        self.tls.validate(&path.key("tls"), issues);
        if let Some(ports) = &self.port_level_settings {
            validate_port_level_settings(&path.key("portLevelSettings"), ports, issues);
        }
        self.tunnel.validate(&path.key("tunnel"), issues);
        self.retry_budget.validate(&path.key("retryBudget"), issues);
    }
}

fn validate_port_level_settings(path: &FieldPath, ports: &[PortTrafficPolicy], issues: &mut Issues) {
    if ports.len() > 4096 {
        issues.error(path, format!("at most 4096 port level settings are allowed, found {}", ports.len()));
    }
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = path.index(i);
        match port.port.as_ref().and_then(|p| p.number) {
            None => issues.error(&at.key("port"), "port level setting needs port.number"),
            Some(number) => {
                let number_at = at.key("port").key("number");
                if !(1..=65535).contains(&number) {
                    issues.error(&number_at, format!("port {number} is out of range 1-65535"));
                } else if !seen.insert(number) {
                    issues.error(&number_at, format!("port {number} has more than one port level setting"));
                }
            }
        }
        port.validate(&at, issues);
    }
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
        {
            issues.error(path, "port level setting must set at least one field besides port");
        }
        self.outlier_detection.validate(&path.key("outlierDetection"), issues);
        self.connection_pool.validate(&path.key("connectionPool"), issues);
        if let Some(lb) = &self.load_balancer {
            lb.validate_with(&path.key("loadBalancer"), self.outlier_detection.is_some(), issues);
        }
        self.tls.validate(&path.key("tls"), issues);
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.tcp.is_none() && self.http.is_none() {
            issues.error(path, "connection pool must set tcp or http");
        }
        self.tcp.validate(&path.key("tcp"), issues);
        self.http.validate(&path.key("http"), issues);
    }
}

impl Validate for TcpSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        non_negative(issues, &path.key("maxConnections"), self.max_connections);
        ms_duration(issues, &path.key("connectTimeout"), self.connect_timeout.as_deref());
        ms_duration(issues, &path.key("maxConnectionDuration"), self.max_connection_duration.as_deref());
        let idle = path.key("idleTimeout");
        if let Some(text) = self.idle_timeout.as_deref() {
            // `0s` turns the idle timeout off; anything else must be a whole number of milliseconds >= 1ms.
            match duration::parse(text) {
                Ok(d) if d.is_zero() => {}
                Ok(_) => ms_duration(issues, &idle, Some(text)),
                Err(err) => issues.error(&idle, err.to_string()),
            }
        }
        if let Some(keepalive) = &self.tcp_keepalive {
            let at = path.key("tcpKeepalive");
            ms_duration(issues, &at.key("time"), keepalive.time.as_deref());
            ms_duration(issues, &at.key("interval"), keepalive.interval.as_deref());
        }
    }
}

impl Validate for HttpSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        non_negative(issues, &path.key("http1MaxPendingRequests"), self.http1_max_pending_requests);
        non_negative(issues, &path.key("http2MaxRequests"), self.http2_max_requests);
        non_negative(issues, &path.key("maxRequestsPerConnection"), self.max_requests_per_connection);
        non_negative(issues, &path.key("maxRetries"), self.max_retries);
        non_negative(issues, &path.key("maxConcurrentStreams"), self.max_concurrent_streams);
        ms_duration(issues, &path.key("idleTimeout"), self.idle_timeout.as_deref());
        if self.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && self.use_client_protocol == Some(true) {
            issues.error(
                &path.key("useClientProtocol"),
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(keepalive) = &self.http2_keep_alive {
            let at = path.key("http2KeepAlive");
            ms_duration(issues, &at.key("interval"), keepalive.interval.as_deref());
            ms_duration(issues, &at.key("timeout"), keepalive.timeout.as_deref());
        }
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        ms_duration(issues, &path.key("baseEjectionTime"), self.base_ejection_time.as_deref());
        ms_duration(issues, &path.key("interval"), self.interval.as_deref());
        if self.consecutive_errors.is_some_and(|n| n != 0) {
            issues.warn(
                &path.key("consecutiveErrors"),
                "consecutiveErrors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors",
            );
        }
        if self.consecutive_local_origin_failures.is_some_and(|n| n > 0)
            && self.split_external_local_origin_errors != Some(true)
        {
            issues.error(
                &path.key("consecutiveLocalOriginFailures"),
                "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
            );
        }
        percent(issues, &path.key("maxEjectionPercent"), self.max_ejection_percent);
        percent(issues, &path.key("minHealthPercent"), self.min_health_percent);
        for (i, code) in self.outlier_detection_http_error_codes.iter().flatten().enumerate() {
            if !(100..=599).contains(code) {
                issues.error(
                    &path.key("outlierDetectionHttpErrorCodes").index(i),
                    format!("status code {code} must be between 100 and 599"),
                );
            }
        }
    }
}

impl Validate for ClientTlsSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let set = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
        let has_credential = set(&self.credential_name);
        let has_sans = self.subject_alt_names.is_some();
        if self.insecure_skip_verify == Some(true) {
            let conflicts: &[(&str, bool)] = match self.mode {
                Some(ClientTlsMode::Simple) => &[
                    ("caCertificates", set(&self.ca_certificates)),
                    ("credentialName", has_credential),
                    ("subjectAltNames", has_sans),
                ],
                Some(ClientTlsMode::Mutual) => {
                    &[("caCertificates", set(&self.ca_certificates)), ("subjectAltNames", has_sans)]
                }
                _ => &[],
            };
            for (field, present) in conflicts {
                if *present {
                    issues.error(&path.key(field), format!("{field} cannot be set when insecureSkipVerify is true"));
                }
            }
        }
        let simple_or_mutual = matches!(self.mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual));
        if simple_or_mutual && has_credential {
            for (field, value) in [
                ("clientCertificate", &self.client_certificate),
                ("privateKey", &self.private_key),
                ("caCertificates", &self.ca_certificates),
                ("caCrl", &self.ca_crl),
            ] {
                if set(value) {
                    issues.error(&path.key(field), format!("{field} cannot be set together with credentialName"));
                }
            }
            return;
        }
        if self.mode == Some(ClientTlsMode::Mutual) {
            if !set(&self.client_certificate) {
                issues.error(&path.key("clientCertificate"), "MUTUAL mode needs clientCertificate (or credentialName)");
            }
            if !set(&self.private_key) {
                issues.error(&path.key("privateKey"), "MUTUAL mode needs privateKey (or credentialName)");
            }
        }
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(protocol) = self.protocol.as_deref()
            && !matches!(protocol, "" | "CONNECT" | "POST")
        {
            issues.error(&path.key("protocol"), format!("tunnel protocol {protocol:?} must be CONNECT or POST"));
        }
        if fqdn(&self.target_host).is_err() && self.target_host.parse::<std::net::IpAddr>().is_err() {
            issues.error(
                &path.key("targetHost"),
                format!("tunnel target host {:?} must be an FQDN or an IP address", self.target_host),
            );
        }
        if !(1..=65535).contains(&self.target_port) {
            issues.error(&path.key("targetPort"), format!("port {} is out of range 1-65535", self.target_port));
        }
    }
}

impl Validate for RetryBudget {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(percent) = self.percent
            && !(0.0..=100.0).contains(&percent)
        {
            issues.error(&path.key("percent"), format!("percent {percent} must be between 0 and 100"));
        }
        syntax_duration(issues, &path.key("budgetInterval"), self.budget_interval.as_deref());
    }
}

/// Istio's `exportTo` rules for a DestinationRule (the rule's own namespace is unknown here, so `.` stands for it).
fn validate_export_to(spec: &FieldPath, export_to: Option<&[String]>, has_selector: bool, issues: &mut Issues) {
    let Some(entries) = export_to.filter(|e| !e.is_empty()) else { return };
    let path = spec.key("exportTo");
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        if !seen.insert(entry.as_str()) {
            issues.error(&at, format!("duplicate exportTo entry {entry:?}"));
        } else if entry != "." && entry != "*" && !is_dns1123_label(entry) {
            issues.error(&at, format!("exportTo entry {entry:?} must be '.', '*' or a namespace name"));
        }
    }
    if seen.contains("*") && entries.len() > 1 {
        issues.error(&path, "exportTo cannot mix '*' with other entries");
    }
    if has_selector {
        if seen.len() > 1 {
            issues.error(&path, "a destination rule with workloadSelector can only be exported to its own namespace");
        } else if seen.contains("*") {
            issues.error(&path, "a destination rule with workloadSelector cannot be exported beyond its own namespace");
        }
    }
}
