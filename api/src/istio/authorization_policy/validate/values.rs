//! Checks of the values in an `AuthorizationPolicy`'s lists: request principals, service accounts, IP blocks,
//! ports, methods and paths.

use std::net::IpAddr;

use crate::{FieldPath, Issues};

/// Longest `serviceAccounts` entry.
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// Records an error for every empty entry of an optional string list.
pub(in crate::istio) fn non_empty_entries(path: &FieldPath, values: Option<&Vec<String>>, issues: &mut Issues) {
    each_value(path, values, issues, |_| Ok(()));
}

/// Checks every entry of an optional string list: empty entries are errors, others go through `check`.
pub(super) fn each_value(
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
pub(super) fn request_principal(value: &str) -> Result<(), ()> {
    if value.contains('/') || value.starts_with('*') || value.ends_with('*') { Ok(()) } else { Err(()) }
}

/// `serviceAccount` or `namespace/serviceAccount`, no wildcard, at most 320 characters.
pub(super) fn service_account(value: &str) -> Result<(), String> {
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
pub(super) fn ip_or_cidr(value: &str) -> Result<(), String> {
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
pub(super) fn port(value: &str) -> Result<(), String> {
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
pub(super) fn method(value: &str) -> Result<(), String> {
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
pub(super) fn request_path(value: &str) -> Result<(), String> {
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
