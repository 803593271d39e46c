//! Validation of an `AuthorizationPolicy`: its action and provider, and each rule's sources, operations and
//! conditions.

use super::{Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source};
use crate::istio::common::validate_targeting;
use crate::{FieldPath, Issues, Validate};
use values::{
    each_value, ip_or_cidr, method, non_empty_entries, port, request_path, request_principal, service_account,
};

pub(super) mod values;

/// Most rules one policy may hold, and most `from` entries one rule may hold.
const MAX_RULES: usize = 512;
/// Most entries of `serviceAccounts` / `notServiceAccounts`.
const MAX_SERVICE_ACCOUNTS: usize = 16;

impl Validate for AuthorizationPolicySpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        validate_targeting(path, self.selector.as_ref(), self.target_ref.as_ref(), self.target_refs.as_ref(), issues);
        let action = self.effective_action();
        let rules_at = path.key("rules");
        match action {
            Action::Custom if self.rules.is_none() => issues.error(
                &rules_at,
                "the CUSTOM action without rules never triggers; add an empty rule {} to apply it to every request",
            ),
            Action::Custom => {
                let name = self.provider.as_ref().and_then(|p| p.name.as_deref());
                if name.is_none_or(str::is_empty) {
                    let at =
                        if self.provider.is_some() { path.key("provider").key("name") } else { path.key("provider") };
                    issues.error(&at, "the CUSTOM action requires provider.name");
                }
            }
            Action::Deny if self.rules.is_none() => issues.error(
                &rules_at,
                "the DENY action without rules never triggers; add an empty rule {} to apply it to every request",
            ),
            _ => {}
        }
        if self.provider.is_some() && action != Action::Custom {
            issues.error(
                &path.key("provider"),
                format!("provider can only be set with the CUSTOM action, not {}", action_name(action)),
            );
        }
        if let Some(rules) = &self.rules {
            if rules.len() > MAX_RULES {
                issues.error(&rules_at, format!("at most {MAX_RULES} rules can be set, found {}", rules.len()));
            }
            for (i, rule) in rules.iter().enumerate() {
                validate_rule(rule, action, &rules_at.index(i), issues);
            }
        }
    }
}

/// The name Istio writes for an action.
fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
    }
}

fn validate_rule(rule: &Rule, action: Action, path: &FieldPath, issues: &mut Issues) {
    let mut from_exists = false;
    let mut tcp_in_from = false;
    if let Some(from) = &rule.from {
        let at = path.key("from");
        if from.is_empty() {
            issues.error(&at, "from must not be empty when set");
        }
        if from.len() > MAX_RULES {
            issues.error(&at, format!("at most {MAX_RULES} from entries can be set, found {}", from.len()));
        }
        for (j, entry) in from.iter().enumerate() {
            let entry_at = at.index(j);
            match &entry.source {
                None => issues.error(&entry_at.key("source"), "source must be set"),
                Some(source) => {
                    from_exists = true;
                    tcp_in_from |= source.has_tcp_attributes();
                    validate_source(source, action, &entry_at.key("source"), issues);
                }
            }
        }
    }
    let mut to_exists = false;
    let mut tcp_in_to = false;
    if let Some(to) = &rule.to {
        let at = path.key("to");
        if to.is_empty() {
            issues.error(&at, "to must not be empty when set");
        }
        for (j, entry) in to.iter().enumerate() {
            let entry_at = at.index(j);
            match &entry.operation {
                None => issues.error(&entry_at.key("operation"), "operation must be set"),
                Some(operation) => {
                    to_exists = true;
                    tcp_in_to |= operation.ports.is_some() || operation.not_ports.is_some();
                    validate_operation(operation, &entry_at.key("operation"), issues);
                }
            }
        }
    }
    for (k, condition) in rule.when.iter().flatten().enumerate() {
        validate_condition(condition, action, &path.key("when").index(k), issues);
    }
    if action == Action::Deny && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to)) {
        issues.warn(
            path,
            "this DENY rule uses only HTTP attributes, so it denies all traffic to TCP ports in scope; \
             name the ports explicitly to limit it",
        );
    }
}

impl Source {
    /// Whether any field set here can be checked on a plain TCP connection.
    fn has_tcp_attributes(&self) -> bool {
        [
            &self.principals,
            &self.not_principals,
            &self.namespaces,
            &self.not_namespaces,
            &self.service_accounts,
            &self.not_service_accounts,
            &self.ip_blocks,
            &self.not_ip_blocks,
            &self.remote_ip_blocks,
            &self.not_remote_ip_blocks,
        ]
        .iter()
        .any(|list| list.is_some())
    }

    /// Whether every list is absent or empty.
    fn is_empty(&self) -> bool {
        [
            &self.principals,
            &self.not_principals,
            &self.request_principals,
            &self.not_request_principals,
            &self.namespaces,
            &self.not_namespaces,
            &self.service_accounts,
            &self.not_service_accounts,
            &self.ip_blocks,
            &self.not_ip_blocks,
            &self.remote_ip_blocks,
            &self.not_remote_ip_blocks,
            &self.trust_domains,
            &self.not_trust_domains,
        ]
        .iter()
        .all(|list| list.as_ref().is_none_or(Vec::is_empty))
    }
}

fn validate_source(source: &Source, action: Action, path: &FieldPath, issues: &mut Issues) {
    if source.is_empty() {
        issues.error(path, "source must set at least one field");
    }
    let has_service_accounts = source.service_accounts.is_some() || source.not_service_accounts.is_some();
    let has_identities = source.principals.is_some()
        || source.not_principals.is_some()
        || source.namespaces.is_some()
        || source.not_namespaces.is_some();
    if has_service_accounts && has_identities {
        issues.error(path, "cannot set serviceAccounts with namespaces or principals");
    }
    let plain = [
        ("principals", &source.principals),
        ("notPrincipals", &source.not_principals),
        ("namespaces", &source.namespaces),
        ("notNamespaces", &source.not_namespaces),
        ("trustDomains", &source.trust_domains),
        ("notTrustDomains", &source.not_trust_domains),
    ];
    for (field, values) in plain {
        non_empty_entries(&path.key(field), values.as_ref(), issues);
    }
    for (field, values) in
        [("requestPrincipals", &source.request_principals), ("notRequestPrincipals", &source.not_request_principals)]
    {
        each_value(&path.key(field), values.as_ref(), issues, |value| {
            request_principal(value)
                .map_err(|()| format!("{field} must be of the form <issuer>/<subject>, found {value:?}"))
        });
    }
    for (field, values) in
        [("serviceAccounts", &source.service_accounts), ("notServiceAccounts", &source.not_service_accounts)]
    {
        let at = path.key(field);
        if let Some(list) = values
            && list.len() > MAX_SERVICE_ACCOUNTS
        {
            issues.error(&at, format!("at most {MAX_SERVICE_ACCOUNTS} {field} can be set, found {}", list.len()));
        }
        each_value(&at, values.as_ref(), issues, service_account);
    }
    let ips = [
        ("ipBlocks", &source.ip_blocks),
        ("notIpBlocks", &source.not_ip_blocks),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ];
    for (field, values) in ips {
        each_value(&path.key(field), values.as_ref(), issues, ip_or_cidr);
    }
    if action == Action::Custom {
        let unsupported = [
            ("principals", &source.principals),
            ("notPrincipals", &source.not_principals),
            ("requestPrincipals", &source.request_principals),
            ("notRequestPrincipals", &source.not_request_principals),
            ("namespaces", &source.namespaces),
            ("notNamespaces", &source.not_namespaces),
            ("serviceAccounts", &source.service_accounts),
            ("notServiceAccounts", &source.not_service_accounts),
        ];
        for (field, values) in unsupported {
            if values.as_ref().is_some_and(|v| !v.is_empty()) {
                issues.error(&path.key(field), format!("{field} cannot be used with the CUSTOM action"));
            }
        }
    }
}

fn validate_operation(operation: &Operation, path: &FieldPath, issues: &mut Issues) {
    let lists = [
        &operation.hosts,
        &operation.not_hosts,
        &operation.ports,
        &operation.not_ports,
        &operation.methods,
        &operation.not_methods,
        &operation.paths,
        &operation.not_paths,
    ];
    if lists.iter().all(|list| list.as_ref().is_none_or(Vec::is_empty)) {
        issues.error(path, "operation must set at least one field");
    }
    for (field, values) in [("hosts", &operation.hosts), ("notHosts", &operation.not_hosts)] {
        non_empty_entries(&path.key(field), values.as_ref(), issues);
    }
    for (field, values) in [("ports", &operation.ports), ("notPorts", &operation.not_ports)] {
        each_value(&path.key(field), values.as_ref(), issues, port);
    }
    for (field, values) in [("methods", &operation.methods), ("notMethods", &operation.not_methods)] {
        each_value(&path.key(field), values.as_ref(), issues, method);
    }
    for (field, values) in [("paths", &operation.paths), ("notPaths", &operation.not_paths)] {
        each_value(&path.key(field), values.as_ref(), issues, request_path);
    }
}

/// How the values of a condition key are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Text,
    Ip,
    Port,
    ServiceAccount,
}

fn validate_condition(condition: &Condition, action: Action, path: &FieldPath, issues: &mut Issues) {
    let key = condition.key.as_str();
    let key_at = path.key("key");
    if key.is_empty() {
        issues.error(&key_at, "key must not be empty");
        return;
    }
    let no_values = condition.values.as_ref().is_none_or(Vec::is_empty);
    let no_not_values = condition.not_values.as_ref().is_none_or(Vec::is_empty);
    if no_values && no_not_values {
        issues.error(path, format!("at least one of values or notValues must be set for key {key:?}"));
    }
    let kind = match condition_key(key) {
        Ok(kind) => kind,
        Err(message) => {
            issues.error(&key_at, message);
            return;
        }
    };
    if action == Action::Custom
        && (matches!(key, "source.namespace" | "source.serviceAccount" | "source.principal")
            || key.starts_with("request.auth."))
    {
        issues.error(&key_at, format!("condition key {key:?} cannot be used with the CUSTOM action"));
    }
    let check: fn(&str) -> Result<(), String> = match kind {
        ValueKind::Text => |_| Ok(()),
        ValueKind::Ip => ip_or_cidr,
        ValueKind::Port => port,
        ValueKind::ServiceAccount => service_account,
    };
    each_value(&path.key("values"), condition.values.as_ref(), issues, check);
    each_value(&path.key("notValues"), condition.not_values.as_ref(), issues, check);
}

/// Classifies a condition key the way istiod does, or says why it is not accepted.
fn condition_key(key: &str) -> Result<ValueKind, String> {
    let map_key = |key: &str| {
        let open = key.find('[').unwrap_or(0);
        if key.ends_with(']') && open > 0 && open + 2 < key.len() {
            Ok(ValueKind::Text)
        } else {
            Err(format!("condition key {key:?} must have the form name[entry]"))
        }
    };
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => Ok(ValueKind::Ip),
        "destination.port" => Ok(ValueKind::Port),
        "source.serviceAccount" => Ok(ValueKind::ServiceAccount),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(ValueKind::Text),
        _ if key.starts_with("request.headers")
            || key.starts_with("request.experimental.inline.headers")
            || key.starts_with("request.auth.claims")
            || key.starts_with("experimental.envoy.filters.") =>
        {
            map_key(key)
        }
        "destination.namespace" => {
            Err(format!("condition key {key:?} is not supported: the policy's own namespace is the destination"))
        }
        _ if key.starts_with("destination.labels") => {
            Err(format!("condition key {key:?} is not supported: use the workload selector instead"))
        }
        "destination.name" | "destination.user" => Err(format!("condition key {key:?} is no longer supported")),
        _ => Err(format!("unknown condition key {key:?}")),
    }
}
