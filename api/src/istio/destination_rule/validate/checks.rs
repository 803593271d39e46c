//! Small field checks for a `DestinationRule`: durations, counts, percentages, DNS names, and label keys and
//! values.

use crate::{FieldPath, Issues, duration};

/// A duration Istio checks with `ValidateDuration`: Go syntax, at least 1ms, whole milliseconds.
pub(super) fn ms_duration(issues: &mut Issues, path: &FieldPath, value: Option<&str>) {
    let Some(text) = value else { return };
    let before = issues.iter().count();
    issues.duration(path, Some(text));
    if issues.iter().count() == before
        && let Ok(d) = duration::parse(text)
        && d.subsec_nanos() % 1_000_000 != 0
    {
        issues.error(path, format!("duration {text:?} must be a whole number of milliseconds"));
    }
}

/// A duration field Istio leaves unchecked beyond its syntax (zero allowed).
pub(super) fn syntax_duration(issues: &mut Issues, path: &FieldPath, value: Option<&str>) {
    if let Some(text) = value
        && let Err(err) = duration::parse(text)
    {
        issues.error(path, err.to_string());
    }
}

pub(super) fn non_negative(issues: &mut Issues, path: &FieldPath, value: Option<i32>) {
    if let Some(n) = value
        && n < 0
    {
        issues.error(path, format!("value {n} must not be negative"));
    }
}

pub(super) fn percent(issues: &mut Issues, path: &FieldPath, value: Option<i32>) {
    if let Some(n) = value
        && !(0..=100).contains(&n)
    {
        issues.error(path, format!("percentage {n} must be between 0 and 100"));
    }
}

/// A DNS-1123 label as Istio checks one: 1-63 letters, digits and `-`, starting and ending alphanumeric.
pub(super) fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A first host label that may carry a wildcard: `*`, `*foo`, `*-foo` or a plain label.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*-").or_else(|| s.strip_prefix('*')).unwrap_or(s);
    is_dns1123_label(rest)
}

/// The dot-separated `labels` of host name `domain` (named in messages); the last may be empty (trailing
/// dot) and must not be all digits.
fn dns1123_labels(domain: &str, labels: &str) -> Result<(), String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("domain name {domain:?} is invalid: top level domain {top:?} cannot be all-numeric"));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!("domain name {domain:?} is invalid: label {label:?} is not a DNS label"));
        }
    }
    Ok(())
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name is not allowed".to_owned());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} is longer than 255 characters"));
    }
    Ok(())
}

/// A host that may start with a wildcard label (`*.example.com`, `*`).
pub(super) fn wildcard_domain(domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!("domain name {domain:?} is invalid: label {first:?} is not a DNS label"));
    }
    rest.map_or(Ok(()), |rest| dns1123_labels(domain, rest))
}

/// A fully qualified domain name without wildcards.
pub(super) fn fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name, name)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a 1-63 character name.
pub(super) fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns1123_label);
        if !valid {
            return Err(format!("label key {key:?} has an invalid prefix {prefix:?}"));
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

/// A label value: empty, or up to 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
pub(super) fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric))
}
