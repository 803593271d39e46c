//! Where an outbound request goes, as pure functions: dependency URLs (`http://host:port/path`), and
//! the explicit proxy named by `HTTP_PROXY`/`http_proxy` with its `NO_PROXY`/`no_proxy` exclusions.
//!
//! Local mode without root cannot capture the app's traffic with iptables, so it starts the app with
//! `HTTP_PROXY` pointing at its sidecar: requests then go to the proxy in absolute form
//! (`GET http://inventory-service/api/v1/inventory HTTP/1.1`) and the proxy resolves the service name.
//!
//! `NO_PROXY` is a comma-separated list; an entry is `*` (nothing is proxied), a host name that also
//! matches its subdomains (`example.com` and `.example.com` both match `a.example.com`), an IP
//! address, a CIDR block (`10.0.0.0/8`), and any of the names or addresses may carry a `:port`.

use std::net::IpAddr;

use http::Uri;
use thiserror::Error;

/// Environment variables naming the explicit proxy, in the order they are read.
pub const ENV_HTTP_PROXY: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
/// Environment variables listing what bypasses the proxy, in the order they are read.
pub const ENV_NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// Port of an `http://` URL that names none.
pub const HTTP_DEFAULT_PORT: u16 = 80;

/// A URL that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("`{url}` is not a URL: {reason}")]
    Syntax { url: String, reason: String },
    #[error("`{url}`: only `http://` URLs are supported")]
    Scheme { url: String },
    #[error("`{url}` has no host")]
    NoHost { url: String },
    #[error("`{url}`: user names and passwords in the URL are not supported")]
    UserInfo { url: String },
}

/// A plain `http://` URL split into what a connection and a request line need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The host, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = text.to_owned();
        let uri: Uri = text
            .parse()
            .map_err(|err: http::uri::InvalidUri| UrlError::Syntax { url: url.clone(), reason: err.to_string() })?;
        if uri.scheme_str() != Some("http") {
            return Err(UrlError::Scheme { url });
        }
        let Some(authority) = uri.authority() else { return Err(UrlError::NoHost { url }) };
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo { url });
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(UrlError::NoHost { url });
        }
        let path_and_query = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) => pq.to_owned(),
        };
        Ok(HttpUrl { host, port: authority.port_u16().unwrap_or(HTTP_DEFAULT_PORT), path_and_query })
    }

    /// The `Host` header: the host, with the port only when it is not 80 (as HTTP clients send it).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == HTTP_DEFAULT_PORT { host } else { format!("{host}:{}", self.port) }
    }

    /// The path and query with `extra` query parameters appended (`extra` is already encoded).
    pub fn path_with_query(&self, extra: &str) -> String {
        if extra.is_empty() {
            self.path_and_query.clone()
        } else if self.path_and_query.contains('?') {
            format!("{}&{extra}", self.path_and_query)
        } else {
            format!("{}?{extra}", self.path_and_query)
        }
    }

    /// The absolute form of a request for `path_and_query` on this URL's host.
    pub fn absolute(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.authority())
    }
}

/// An explicit-proxy setting that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{var}: {problem}")]
pub struct ProxyEnvError {
    pub var: &'static str,
    pub problem: UrlError,
}

/// The explicit proxy from the environment, if any, and what bypasses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// The proxy's host and port.
    pub proxy: Option<(String, u16)>,
    pub no_proxy: NoProxy,
}

impl ProxyEnv {
    /// Reads `HTTP_PROXY`/`http_proxy` and `NO_PROXY`/`no_proxy` through `var` (the process
    /// environment in the binary, a map in tests). A proxy without scheme is taken as `http://`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyEnvError> {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| var(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        };
        let proxy = match first(ENV_HTTP_PROXY) {
            None => None,
            Some((name, value)) => {
                let value = value.trim();
                let text = if value.contains("://") { value.to_owned() } else { format!("http://{value}") };
                let url = HttpUrl::parse(&text).map_err(|problem| ProxyEnvError { var: name, problem })?;
                Some((url.host, url.port))
            }
        };
        let no_proxy = first(ENV_NO_PROXY).map(|(_, value)| NoProxy::parse(&value)).unwrap_or_default();
        Ok(ProxyEnv { proxy, no_proxy })
    }

    /// The proxy to send a request for `host:port` through, or `None` to connect directly.
    pub fn proxy_for(&self, host: &str, port: u16) -> Option<&(String, u16)> {
        self.proxy.as_ref().filter(|_| !self.no_proxy.matches(host, port))
    }
}

/// The parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// `*`: nothing goes through the proxy.
    all: bool,
    entries: Vec<Exclusion>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A host name (lowercase, no leading dot) matching itself and its subdomains.
    Domain(String),
    Ip(IpAddr),
    Cidr(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Exclusion {
    pattern: Pattern,
    port: Option<u16>,
}

impl NoProxy {
    /// Parses a comma-separated list; entries that are neither names, addresses nor CIDR blocks are
    /// kept as names (so nothing is silently dropped) and simply match only themselves.
    pub fn parse(list: &str) -> Self {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.all = true;
            } else {
                no_proxy.entries.push(Exclusion::parse(entry));
            }
        }
        no_proxy
    }

    /// Whether a request for `host:port` bypasses the proxy.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.entries.iter().any(|e| e.port.is_none_or(|p| p == port) && e.pattern.matches(&host, ip))
    }
}

impl Exclusion {
    fn parse(entry: &str) -> Self {
        let entry = entry.to_ascii_lowercase();
        if let Some((net, len)) = entry.split_once('/')
            && let (Ok(ip), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u8>())
            && len <= if ip.is_ipv4() { 32 } else { 128 }
        {
            return Exclusion { pattern: Pattern::Cidr(ip, len), port: None };
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Exclusion { pattern: Pattern::Ip(ip), port: None };
        }
        // `host:port`, `[v6]:port` or `[v6]`.
        let (name, port) = match entry.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') => match port.parse::<u16>() {
                Ok(port) => (name, Some(port)),
                Err(_) => (entry.as_str(), None),
            },
            _ => (entry.as_str(), None),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Exclusion { pattern: Pattern::Ip(ip), port };
        }
        let name = name.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
        Exclusion { pattern: Pattern::Domain(name.to_owned()), port }
    }
}

impl Pattern {
    fn matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match self {
            Pattern::Domain(domain) => {
                host == domain || host.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.'))
            }
            Pattern::Ip(expected) => ip == Some(*expected),
            Pattern::Cidr(net, len) => ip.is_some_and(|ip| in_cidr(ip, *net, *len)),
        }
    }
}

/// Whether `ip` lies in `net/len` (IPv4 and IPv6 never match each other).
fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_url_splits_into_host_port_and_path() {
        let url = HttpUrl::parse("http://inventory-service:80/api/v1/inventory?x=1").expect("valid");
        assert_eq!(url.host, "inventory-service");
        assert_eq!(url.port, 80);
        assert_eq!(url.path_and_query, "/api/v1/inventory?x=1");
        assert_eq!(url.authority(), "inventory-service");
        let url = HttpUrl::parse("http://[::1]:8080").expect("valid");
        assert_eq!((url.host.as_str(), url.port, url.path_and_query.as_str()), ("::1", 8080, "/"));
        assert_eq!(url.authority(), "[::1]:8080");
        assert_eq!(url.absolute("/a"), "http://[::1]:8080/a");
    }

    #[test]
    fn https_credentials_and_hostless_urls_are_refused() {
        assert!(matches!(HttpUrl::parse("https://shipping-service/"), Err(UrlError::Scheme { .. })));
        assert!(matches!(HttpUrl::parse("http://u:p@shipping-service/"), Err(UrlError::UserInfo { .. })));
        assert!(matches!(HttpUrl::parse("/api/v1/shipping"), Err(UrlError::Scheme { .. })));
        assert!(matches!(HttpUrl::parse("http://exa mple/"), Err(UrlError::Syntax { .. })));
    }

    #[test]
    fn extra_query_parameters_are_appended_to_the_urls_own() {
        let plain = HttpUrl::parse("http://inventory-service/api/v1/inventory").expect("valid");
        assert_eq!(plain.path_with_query(""), "/api/v1/inventory");
        assert_eq!(plain.path_with_query("delay_ms=5"), "/api/v1/inventory?delay_ms=5");
        let with_query = HttpUrl::parse("http://inventory-service/api/v1/inventory?a=b").expect("valid");
        assert_eq!(with_query.path_with_query("fail=1"), "/api/v1/inventory?a=b&fail=1");
    }

    #[test]
    fn the_upper_case_proxy_variable_wins_and_a_bare_address_means_http() {
        let proxy = ProxyEnv::from_vars(env(&[("HTTP_PROXY", "127.0.1.2:15001"), ("http_proxy", "http://other:1")]))
            .expect("valid");
        assert_eq!(proxy.proxy, Some(("127.0.1.2".to_owned(), 15001)));
        let lower = ProxyEnv::from_vars(env(&[("http_proxy", "http://sidecar")])).expect("valid");
        assert_eq!(lower.proxy, Some(("sidecar".to_owned(), 80)));
        let none = ProxyEnv::from_vars(env(&[("HTTP_PROXY", "  ")])).expect("valid");
        assert_eq!(none.proxy, None);
    }

    #[test]
    fn an_unusable_proxy_variable_is_an_error_naming_it() {
        let err = ProxyEnv::from_vars(env(&[("http_proxy", "https://proxy:3128")])).expect_err("https proxy");
        assert_eq!(err.var, "http_proxy");
        assert!(err.to_string().starts_with("http_proxy: "), "{err}");
    }

    #[test]
    fn no_proxy_matches_names_subdomains_addresses_blocks_and_ports() {
        let list = NoProxy::parse("example.com, .corp.local,10.0.0.0/8, 192.168.1.5, [::1], shipping-service:8080");
        assert!(list.matches("example.com", 80));
        assert!(list.matches("api.example.com", 80));
        assert!(!list.matches("badexample.com", 80));
        assert!(list.matches("a.corp.local", 80));
        assert!(list.matches("corp.local", 80));
        assert!(list.matches("10.3.4.5", 80));
        assert!(!list.matches("11.3.4.5", 80));
        assert!(list.matches("192.168.1.5", 1234));
        assert!(list.matches("[::1]", 80));
        assert!(list.matches("shipping-service", 8080));
        assert!(!list.matches("shipping-service", 80));
        assert!(!list.matches("inventory-service", 80));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));
    }

    #[test]
    fn no_proxy_sends_excluded_hosts_directly() {
        let env = ProxyEnv::from_vars(env(&[("HTTP_PROXY", "http://127.0.0.1:15001"), ("no_proxy", "127.0.0.1")]))
            .expect("valid");
        assert_eq!(env.proxy_for("inventory-service", 80), Some(&("127.0.0.1".to_owned(), 15001)));
        assert_eq!(env.proxy_for("127.0.0.1", 9000), None);
    }

    #[test]
    fn cidr_blocks_of_any_length_work_for_both_families() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(in_cidr(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(in_cidr(ip("1.2.3.4"), ip("1.2.3.4"), 32));
        assert!(!in_cidr(ip("1.2.3.5"), ip("1.2.3.4"), 32));
        assert!(in_cidr(ip("fd00::7"), ip("fd00::"), 64));
        assert!(!in_cidr(ip("fd01::7"), ip("fd00::"), 16));
        assert!(!in_cidr(ip("1.2.3.4"), ip("::"), 0));
    }
}
