//! `AuthorizationPolicy` (security.istio.io): which requests a workload allows, denies, audits or hands to an
//! external authorizer.

use std::net::IpAddr;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PolicyTargetReference, WorkloadSelector, validate_targeting};
use crate::{FieldPath, Issues, Validate, status::Status};

/// Most rules one policy may hold, and most `from` entries one rule may hold.
const MAX_RULES: usize = 512;
/// Most entries of `serviceAccounts` / `notServiceAccounts`.
const MAX_SERVICE_ACCOUNTS: usize = 16;
/// Longest `serviceAccounts` entry.
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// What happens to a request that matches a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Let matching requests through (the default); once any ALLOW policy selects a workload, others are denied.
    #[default]
    Allow,
    /// Reject matching requests.
    Deny,
    /// Log matching requests for audit; does not change the decision.
    Audit,
    /// Ask the external authorizer named by `provider` about matching requests.
    Custom,
}

/// The external authorizer a CUSTOM policy delegates to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Name of an extension provider declared in the mesh configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who sent a request; every field set must match (AND), any value of one field may match (OR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true").message("Cannot set serviceAccounts with namespaces or principals"))]
pub struct Source {
    /// Peer identities (mutual TLS), such as `cluster.local/ns/default/sa/sleep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    /// Peer identities that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_principals: Option<Vec<String>>,
    /// JWT principals, `<issuer>/<subject>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_principals: Option<Vec<String>>,
    /// JWT principals that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_request_principals: Option<Vec<String>>,
    /// Namespaces of the peer (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces of the peer that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_namespaces: Option<Vec<String>>,
    /// Peer service accounts, `serviceAccount` or `namespace/serviceAccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16), inner(length(max = 320)))]
    pub service_accounts: Option<Vec<String>>,
    /// Peer service accounts that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16), inner(length(max = 320)))]
    pub not_service_accounts: Option<Vec<String>>,
    /// Source IPs or CIDR ranges of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_blocks: Option<Vec<String>>,
    /// Source IPs or CIDR ranges that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ip_blocks: Option<Vec<String>>,
    /// Original client IPs or CIDR ranges (X-Forwarded-For or PROXY protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_blocks: Option<Vec<String>>,
    /// Original client IPs or CIDR ranges that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_remote_ip_blocks: Option<Vec<String>>,
    /// Trust domains of the peer identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domains: Option<Vec<String>>,
    /// Trust domains of the peer identity that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_trust_domains: Option<Vec<String>>,
}

/// What a request asks for; every field set must match (AND), any value of one field may match (OR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (`:authority`), `*` prefix or suffix wildcards allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Hosts that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_hosts: Option<Vec<String>>,
    /// Destination ports, as decimal strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    /// Destination ports that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ports: Option<Vec<String>>,
    /// HTTP methods (`GET`), or gRPC's `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// HTTP methods that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_methods: Option<Vec<String>>,
    /// Paths: exact, `*` prefix or suffix wildcards, or `{*}` / `{**}` path templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Paths that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_paths: Option<Vec<String>>,
}

/// One `from` entry of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One `to` entry of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// An extra condition on a request attribute (see Istio's list of condition keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute, such as `request.headers[User-Agent]` or `source.ip`.
    pub key: String,
    /// Values of which one must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Values none of which may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_values: Option<Vec<String>>,
}

/// A request matches a rule when it matches any `from`, any `to` and every `when` (absent lists match all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources, any of which may match; all sources when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 512))]
    pub from: Option<Vec<RuleFrom>>,
    /// Operations, any of which may match; all operations when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    /// Conditions, all of which must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<Condition>>,
}

/// Access control for the workloads it selects (or the whole namespace, or the mesh in the root namespace).
///
/// An ALLOW policy whose `rules` is present but empty (`rules: []`) is valid and matches no request,
/// so it denies everything on the workloads it selects; a policy with `rules` absent matches nothing
/// either, and `rules: [{}]` matches every request.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    namespaced,
    status = "Status",
    shortname = "ap",
    category = "istio-io",
    category = "security-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1").message("only one of targetRefs or selector can be set"))]
pub struct AuthorizationPolicySpec {
    /// Workloads this applies to; all of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The object (such as a Gateway) this applies to; deprecated in favour of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The objects (such as Gateways or Services) this applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16))]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// The rules; a request matching any of them gets `action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 512))]
    // `self::` because the schema derive brings kube's CEL `Rule` into scope.
    pub rules: Option<Vec<self::Rule>>,
    /// What to do with matching requests; ALLOW when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The external authorizer; only with the CUSTOM action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// The action in force: `action`, or ALLOW when absent.
    pub fn effective_action(&self) -> Action {
        self.action.unwrap_or_default()
    }
}

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

/// Records an error for every empty entry of an optional string list.
pub(super) fn non_empty_entries(path: &FieldPath, values: Option<&Vec<String>>, issues: &mut Issues) {
    each_value(path, values, issues, |_| Ok(()));
}

/// Checks every entry of an optional string list: empty entries are errors, others go through `check`.
fn each_value(
    path: &FieldPath,
    values: Option<&Vec<String>>,
    issues: &mut Issues,
    check: impl Fn(&str) -> Result<(), String>,
) {
    for (i, value) in values.into_iter().flatten().enumerate() {
        let at = path.index(i);
        if value.is_empty() {
            issues.error(&at, "value must not be empty");
        } else if let Err(message) = check(value) {
            issues.error(&at, message);
        }
    }
}

/// `<issuer>/<subject>`, `*`, or a value with a `*` prefix or suffix wildcard.
fn request_principal(value: &str) -> Result<(), ()> {
    if value.contains('/') || value.starts_with('*') || value.ends_with('*') { Ok(()) } else { Err(()) }
}

/// `serviceAccount` or `namespace/serviceAccount`, no wildcard, at most 320 characters.
fn service_account(value: &str) -> Result<(), String> {
    if value.contains('*') {
        return Err(format!("service account {value:?} must not contain a wildcard"));
    }
    if value.len() > MAX_SERVICE_ACCOUNT_LEN {
        return Err(format!("service account {value:?} is longer than {MAX_SERVICE_ACCOUNT_LEN} characters"));
    }
    let well_formed = match value.split_once('/') {
        Some((namespace, name)) => !namespace.is_empty() && !name.is_empty() && !name.contains('/'),
        None => true,
    };
    if well_formed {
        Ok(())
    } else {
        Err(format!("service account {value:?} must have the form serviceAccount or namespace/serviceAccount"))
    }
}

/// An IP address or a CIDR range, as Go's `netip` parses them.
fn ip_or_cidr(value: &str) -> Result<(), String> {
    match value.split_once('/') {
        None => value.parse::<IpAddr>().map(|_| ()).map_err(|_| format!("{value:?} is not a valid IP address")),
        Some((address, bits)) => {
            let Ok(ip) = address.parse::<IpAddr>() else {
                return Err(format!("{value:?} is not a valid CIDR range: bad address {address:?}"));
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let digits_only = !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit());
            let canonical = bits == "0" || !bits.starts_with('0');
            match bits.parse::<u32>() {
                Ok(len) if digits_only && canonical && len <= max => Ok(()),
                _ => Err(format!("{value:?} is not a valid CIDR range: prefix length must be 0-{max}")),
            }
        }
    }
}

/// A port number 1-65535 written in decimal.
fn port(value: &str) -> Result<(), String> {
    let numeric = value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u32>() {
        Ok(port) if numeric && (1..=65535).contains(&port) => Ok(()),
        _ => Err(format!("port {value:?} must be a number between 1-65535")),
    }
}

/// The value without its `*` prefix or suffix wildcard (`*` alone leaves nothing).
fn strip_wildcard(value: &str) -> &str {
    if value == "*" {
        return "";
    }
    value.strip_prefix('*').or_else(|| value.strip_suffix('*')).unwrap_or(value)
}

/// An HTTP method token in upper case, with an optional `*` prefix or suffix wildcard.
fn method(value: &str) -> Result<(), String> {
    let core = strip_wildcard(value);
    if core.contains('*') {
        return Err(format!("method {value:?} may only use * as a prefix or suffix wildcard"));
    }
    if core.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!("method {value:?} must be upper case, as methods match case-sensitively"));
    }
    let token = core.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b));
    if token { Ok(()) } else { Err(format!("method {value:?} is not a valid HTTP method")) }
}

/// A request path: starts with `/` or `*`; `{*}` / `{**}` templates as Istio accepts them.
fn request_path(value: &str) -> Result<(), String> {
    if !value.starts_with('/') && !value.starts_with('*') {
        return Err(format!("path {value:?} must start with / or *"));
    }
    let template = value.contains("{*}") || value.contains("{**}");
    let mut match_any_seen = false;
    for segment in value.trim_matches('/').split('/') {
        match segment {
            "{*}" | "{**}" if match_any_seen => {
                return Err(format!(
                    "path {value:?} has a path template after {{**}}, which must be the last operator"
                ));
            }
            "{*}" => continue,
            "{**}" => {
                match_any_seen = true;
                continue;
            }
            _ => {}
        }
        if segment.contains(['{', '}']) {
            return Err(format!("path {value:?} uses {{ or }} outside a supported path template ({{*}} or {{**}})"));
        }
        if template && !is_path_literal(segment) {
            return Err(format!(
                "path {value:?} has segment {segment:?} that is not a valid literal in a path template"
            ));
        }
    }
    Ok(())
}

/// RFC 3986 `pchar`s (without `*`), the characters a path template segment may hold.
fn is_path_literal(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

#[cfg(test)]
mod tests;
