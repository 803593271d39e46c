//! Host-name checks for a `VirtualService`: DNS labels, wildcard hosts, generated SNI names, and how two
//! hosts overlap.

/// A DNS-1123 label as Istio checks it (either letter case).
pub(super) fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// Why a host name (whose first label may be `*`) is invalid, if it is. With `auto_sni`, also accepts the
/// `outbound_.<port>_._.<host>` names the proxy generates for AUTO_PASSTHROUGH gateways.
pub(super) fn domain_problem(host: &str, auto_sni: bool) -> Option<String> {
    if host.is_empty() {
        return Some("host must not be empty".to_owned());
    }
    if host.len() > 255 {
        return Some(format!("host {host:?} is longer than 255 characters"));
    }
    if auto_sni && host.starts_with("outbound_") {
        return auto_sni_problem(host);
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if first != "*" && !is_dns1123_label(first) {
        return Some(label_problem(host, first));
    }
    rest.and_then(|rest| labels_problem(host, rest))
}

/// Why a dotted name with no wildcard is invalid, if it is.
pub(super) fn fqdn_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name must not be empty".to_owned());
    }
    if name.len() > 255 {
        return Some(format!("name {name:?} is longer than 255 characters"));
    }
    labels_problem(name, name)
}

/// Checks the labels of `domain` (a suffix of `whole`): DNS-1123 labels, a trailing dot allowed, and a
/// top-level label that is not all digits.
fn labels_problem(whole: &str, domain: &str) -> Option<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if top.parse::<i64>().is_ok() {
        return Some(format!("{whole:?} is invalid: top-level domain {top:?} cannot be all digits"));
    }
    for (i, label) in labels.iter().enumerate() {
        if i + 1 == labels.len() && label.is_empty() {
            return None;
        }
        if !is_dns1123_label(label) {
            return Some(label_problem(whole, label));
        }
    }
    None
}

fn label_problem(whole: &str, label: &str) -> String {
    if label.contains('*') {
        format!("{whole:?} is invalid: \"*\" is only allowed as the whole first label (\"*.example.com\" or \"*\")")
    } else {
        format!("{whole:?} is invalid: label {label:?} is not a DNS-1123 label")
    }
}

/// `outbound_.<port>_._.<host>`: a port with a digit and a host with a letter.
fn auto_sni_problem(host: &str) -> Option<String> {
    let parts: Vec<&str> = host.split('_').collect();
    let port = parts.get(1).map(|p| p.trim_matches('.')).unwrap_or_default();
    let name = parts.get(3).map(|p| p.trim_matches('.')).unwrap_or_default();
    let valid =
        parts.len() >= 4 && port.bytes().any(|b| b.is_ascii_digit()) && name.bytes().any(|b| b.is_ascii_alphabetic());
    (!valid).then(|| format!("{host:?} is invalid: generated SNI names have the form outbound_.<port>_._.<hostname>"))
}

/// Whether two hosts (either may start with `*`) match some name in common, as Istio's duplicate check sees it.
pub(super) fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a), Some(b)) => {
            if a.len() < b.len() {
                b.ends_with(a)
            } else {
                a.ends_with(b)
            }
        }
        (Some(a), None) => b.ends_with(a),
        (None, Some(b)) => a.ends_with(b),
        (None, None) => a == b,
    }
}

/// Whether every name `inner` matches is also matched by `outer`.
pub(super) fn host_subset_of(inner: &str, outer: &str) -> bool {
    match (inner.strip_prefix('*'), outer.strip_prefix('*')) {
        (Some(inner), Some(outer)) => inner.len() >= outer.len() && inner.ends_with(outer),
        (Some(_), None) => false,
        (None, Some(outer)) => inner.ends_with(outer),
        (None, None) => inner == outer,
    }
}
