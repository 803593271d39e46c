//! Field-level checks shared by the rules of a `VirtualService`: string matches, regexes, header names,
//! durations, ports, labels, subnets, gateway references and `exportTo`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use super::Scope;
use super::hosts::{fqdn_problem, is_dns1123_label};
use crate::istio::common::{Labels, StringMatch};
use crate::{FieldPath, Issues, duration};

/// Longest regular expression Istio accepts (Envoy's RE2 program size, approximated by length).
const MAX_REGEX_LEN: usize = 1024;

/// How a [`StringMatch`] field is checked.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MatchRules {
    /// An empty `prefix` is allowed (paths).
    pub(super) empty_prefix: bool,
    /// A `regex` of `*` means "present" rather than a regular expression (`withoutHeaders`).
    pub(super) star_means_present: bool,
}

/// At most one of exact/prefix/regex, prefix non-empty where Envoy needs it, regex compiles.
pub(super) fn check_string_match(
    path: &FieldPath,
    value: Option<&StringMatch>,
    rules: MatchRules,
    issues: &mut Issues,
) {
    let Some(value) = value else { return };
    let set = [&value.exact, &value.prefix, &value.regex].iter().filter(|v| v.is_some()).count();
    if set > 1 {
        issues.error(path, "only one of exact, prefix or regex can be set");
    }
    if value.prefix.as_deref().is_some_and(str::is_empty) && !rules.empty_prefix {
        issues.error(&path.key("prefix"), "prefix must not be empty");
    }
    if let Some(regex) = value.regex.as_deref()
        && !(rules.star_means_present && regex == "*")
    {
        check_regex(&path.key("regex"), regex, issues);
    }
}

/// A regular expression: non-empty, at most 1024 characters, and valid.
pub(super) fn check_regex(path: &FieldPath, pattern: &str, issues: &mut Issues) {
    if pattern.is_empty() {
        issues.error(path, "regex must not be empty");
    } else if pattern.len() > MAX_REGEX_LEN {
        issues.error(path, format!("regex is {} characters long; the limit is {MAX_REGEX_LEN}", pattern.len()));
    } else {
        issues.regex(path, Some(pattern));
    }
}

/// A header name in a match: a token, or a JWT claim (`@request.auth.claims.<name>`), which needs a gateway.
pub(super) fn check_header_match_name(path: &FieldPath, name: &str, scope: &Scope<'_>, issues: &mut Issues) {
    if name.is_empty() {
        issues.error(path, "header name must not be empty");
    } else if name.starts_with("@request.auth.claims.") || name.starts_with("@request.auth.claims[") {
        if !scope.gateway_only {
            issues.error(path, format!("JWT claim routing ({name}) only works on gateways, not the mesh"));
        }
    } else if !is_header_token(name) {
        issues.error(path, format!("{name:?} is not a valid header name"));
    }
}
/// Header names Istio accepts in matches and CORS lists: letters, digits, `-` and `_`.
pub(super) fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Durations Envoy can represent: valid, at least 1ms, and a whole number of the given unit.
#[derive(Debug, Clone, Copy)]
pub(super) enum Precision {
    Millisecond,
    Second,
}

pub(super) fn check_duration(path: &FieldPath, value: Option<&str>, precision: Precision, issues: &mut Issues) {
    let Some(text) = value else { return };
    issues.duration(path, Some(text));
    let (step, unit) = match precision {
        Precision::Millisecond => (Duration::from_millis(1), "millisecond"),
        Precision::Second => (Duration::from_secs(1), "second"),
    };
    if let Ok(parsed) = duration::parse(text)
        && parsed >= Duration::from_millis(1)
        && parsed.as_nanos() % step.as_nanos() != 0
    {
        issues.error(path, format!("duration {text:?} must be a whole number of {unit}s"));
    }
}

/// A port in a match: 0 means unset, otherwise 1-65535.
pub(super) fn check_match_port(path: &FieldPath, port: Option<u32>, issues: &mut Issues) {
    issues.port(path, port.filter(|p| *p != 0));
}

/// Source labels as Istio checks them: Kubernetes label keys and values.
pub(super) fn check_labels(path: &FieldPath, labels: Option<&Labels>, issues: &mut Issues) {
    for (key, value) in labels.into_iter().flatten() {
        let at = path.key(key);
        if !is_label_key(key) {
            issues.error(&at, format!("label key {key:?} is invalid"));
        }
        if !value.is_empty() && !is_qualified_name(value) {
            issues.error(&at, format!("label value {value:?} is invalid"));
        }
    }
}

fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns1123_label));
    prefix_ok && name.len() <= 63 && is_qualified_name(name)
}

/// Kubernetes "qualified name": alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn is_qualified_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Destination subnets: IP addresses or CIDR blocks.
pub(super) fn check_subnets(path: &FieldPath, subnets: Option<&[String]>, issues: &mut Issues) {
    for (k, subnet) in subnets.unwrap_or_default().iter().enumerate() {
        if !is_ip_or_cidr(subnet) {
            issues.error(&path.index(k), format!("{subnet:?} is not a valid IP address or CIDR block"));
        }
    }
}

fn is_ip_or_cidr(text: &str) -> bool {
    match text.split_once('/') {
        None => text.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) && bits.parse::<u32>().is_ok_and(|b| b <= max)
        }
    }
}

/// Gateway references: `<namespace>/<name>`, or a bare name such as `mesh` (a dotted `name.namespace` is legacy).
pub(super) fn check_gateway_names(path: &FieldPath, names: &[String], issues: &mut Issues) {
    for (i, name) in names.iter().enumerate() {
        let at = path.index(i);
        match name.split_once('/') {
            Some((namespace, gateway)) => {
                if namespace.is_empty() || gateway.is_empty() {
                    issues.error(&at, format!("gateway {name:?} must be <namespace>/<name> with both parts set"));
                    continue;
                }
                if !is_dns1123_label(namespace) {
                    issues.error(&at, format!("gateway {name:?} has an invalid namespace {namespace:?}"));
                }
                if !is_dns1123_label(gateway) {
                    issues.error(&at, format!("gateway {name:?} has an invalid name {gateway:?}"));
                }
            }
            None => {
                if let Some(problem) = fqdn_problem(name) {
                    issues.error(&at, problem);
                } else if let Some((gateway, rest)) = name.split_once('.') {
                    let namespace = rest.split('.').next().unwrap_or_default();
                    issues.warn(&at, format!("gateway {name:?} uses the legacy format; prefer {namespace}/{gateway}"));
                }
            }
        }
    }
}

/// `exportTo`: `.`, `*` or namespace names, no duplicates, `*` alone.
pub(super) fn check_export_to(path: &FieldPath, entries: &[String], issues: &mut Issues) {
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        if !seen.insert(entry.as_str()) {
            issues.error(&at, format!("duplicate exportTo entry {entry:?}"));
            continue;
        }
        match entry.as_str() {
            "." | "*" => {}
            "~" => issues.error(&at, "exportTo \"~\" (visible to no one) is only allowed on ServiceEntry"),
            _ if !is_dns1123_label(entry) => {
                issues.error(&at, format!("exportTo entry {entry:?} must be \".\", \"*\" or a namespace name"));
            }
            _ => {}
        }
    }
    if entries.len() > 1 && entries.iter().any(|e| e == "*") {
        issues.error(path, "exportTo \"*\" cannot be combined with other entries");
    }
}
