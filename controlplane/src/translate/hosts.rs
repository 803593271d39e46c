//! Host names: qualifying short names, matching wildcards, intersecting gateway and route hosts, and the
//! names clients in a namespace use for a service.

use trellis_api::crosscheck::{CLUSTER_DOMAIN_SUFFIX, qualify_host};

/// A host as written in an object of `namespace`, fully qualified (Istio: a short name is interpreted in
/// the namespace of the rule, not of the service).
pub fn qualify(host: &str, namespace: &str) -> String {
    qualify_host(host, namespace)
}

/// Whether `pattern` (exact, `*`, or `*.suffix`) covers `host` (which may itself be a wildcard host, then
/// covered when it is a subset of `pattern`).
pub fn matches(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => false,
    }
}

/// The hosts two host patterns have in common, as the more specific of the two, if they overlap (Istio:
/// a gateway server's host and a VirtualService host bind where they intersect).
pub fn intersect(a: &str, b: &str) -> Option<String> {
    if matches(a, b) {
        Some(b.to_owned())
    } else if matches(b, a) {
        Some(a.to_owned())
    } else {
        None
    }
}

/// The shorter names clients in `client_ns` use for a Kubernetes-style host, as Istio generates them:
/// the host without the suffix it shares with the client's `<ns>.svc.cluster.local`, then that name with
/// each longer part of the shared suffix, short of the whole host. For `reviews.default.svc.cluster.local`
/// a client in `default` gets `reviews`, `reviews.default`, `reviews.default.svc`,
/// `reviews.default.svc.cluster`; a client elsewhere the same without `reviews`.
pub fn client_names(hostname: &str, client_ns: &str) -> Vec<String> {
    if hostname.starts_with('*') || !hostname.ends_with(&format!(".{CLUSTER_DOMAIN_SUFFIX}")) {
        return Vec::new();
    }
    let client_domain = format!("{client_ns}.{CLUSTER_DOMAIN_SUFFIX}");
    let host: Vec<&str> = hostname.split('.').collect();
    let domain: Vec<&str> = client_domain.split('.').collect();
    let shared = host.iter().rev().zip(domain.iter().rev()).take_while(|(a, b)| a == b).count();
    if shared == 0 || shared >= host.len() {
        return Vec::new();
    }
    let unique = host[..host.len() - shared].join(".");
    let suffix = &host[host.len() - shared..];
    let mut names = vec![unique.clone()];
    for k in 1..suffix.len() {
        names.push(format!("{unique}.{}", suffix[..k].join(".")));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_in_the_services_namespace_may_use_its_short_name() {
        assert_eq!(
            client_names("reviews.default.svc.cluster.local", "default"),
            ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster"]
        );
    }

    #[test]
    fn a_client_elsewhere_needs_the_namespace_in_the_name() {
        assert_eq!(
            client_names("reviews.default.svc.cluster.local", "shop"),
            ["reviews.default", "reviews.default.svc", "reviews.default.svc.cluster"]
        );
        assert!(client_names("api.example.com", "shop").is_empty());
    }

    #[test]
    fn wildcards_cover_deeper_names_and_narrower_wildcards() {
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(matches("*.example.com", "*.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("*", "anything"));
        assert_eq!(intersect("*", "shop.example.com").as_deref(), Some("shop.example.com"));
        assert_eq!(intersect("*.example.com", "a.example.com").as_deref(), Some("a.example.com"));
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
    }
}
