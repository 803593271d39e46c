//! The value matchers of an authorization policy, each compiled once per config: Istio's string forms (exact,
//! `abc*` prefix, `*abc` suffix, `*` presence), IP blocks, ports, path templates, and the `not*` pairing of a
//! field with its negative form.

use std::net::IpAddr;

use regex::Regex;

/// What one segment of a path template's `{*}` may hold: RFC 3986 `pchar`s, at least one (Envoy's
/// `uri_template` matcher, which Istio uses for `{*}` / `{**}` paths).
const TEMPLATE_ONE_SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+";
/// What `{**}` may hold: any number of segments, `/` included, possibly none.
const TEMPLATE_ANY_SEGMENTS: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*";

/// A field and its `not` form: any value of the first must match (unless it is empty), and no value of the
/// second may match.
#[derive(Debug, Clone)]
pub(super) struct ValueSet<T> {
    any: Vec<T>,
    none: Vec<T>,
}

impl<T> Default for ValueSet<T> {
    fn default() -> Self {
        ValueSet { any: Vec::new(), none: Vec::new() }
    }
}

impl<T> ValueSet<T> {
    /// Compiles both lists; `at` is where the field sits (`rules[0].from[0].source`), `names` its two names.
    pub(super) fn compile(
        at: &str,
        names: (&str, &str),
        values: (Option<&Vec<String>>, Option<&Vec<String>>),
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Self, String> {
        let one = |name: &str, list: Option<&Vec<String>>| -> Result<Vec<T>, String> {
            let mut compiled = Vec::new();
            for (i, value) in list.into_iter().flatten().enumerate() {
                let parsed = if value.is_empty() { Err("value must not be empty".to_string()) } else { parse(value) };
                compiled.push(parsed.map_err(|message| format!("{at}.{name}[{i}]: {message}"))?);
            }
            Ok(compiled)
        };
        Ok(ValueSet { any: one(names.0, values.0)?, none: one(names.1, values.1)? })
    }

    /// Whether either list constrains anything.
    pub(super) fn is_set(&self) -> bool {
        !self.any.is_empty() || !self.none.is_empty()
    }

    /// Whether the request satisfies both lists, `matches` telling whether one value matches the request.
    pub(super) fn check(&self, matches: impl Fn(&T) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&matches)) && !self.none.iter().any(&matches)
    }
}

/// Istio's string match forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StrMatch {
    Exact(Box<str>),
    /// `abc*`: starts with `abc` (`abc` itself included).
    Prefix(Box<str>),
    /// `*abc`: ends with `abc` (`abc` itself included).
    Suffix(Box<str>),
    /// `*`: any non-empty value.
    Present,
}

impl StrMatch {
    pub(super) fn parse(value: &str) -> Result<Self, String> {
        Ok(if value == "*" {
            StrMatch::Present
        } else if let Some(suffix) = value.strip_prefix('*') {
            StrMatch::Suffix(suffix.into())
        } else if let Some(prefix) = value.strip_suffix('*') {
            StrMatch::Prefix(prefix.into())
        } else {
            StrMatch::Exact(value.into())
        })
    }

    pub(super) fn matches(&self, value: &[u8]) -> bool {
        match self {
            StrMatch::Exact(s) => value == s.as_bytes(),
            StrMatch::Prefix(p) => value.starts_with(p.as_bytes()),
            StrMatch::Suffix(s) => value.ends_with(s.as_bytes()),
            StrMatch::Present => !value.is_empty(),
        }
    }

    /// As [`StrMatch::matches`], ASCII case ignored (hosts).
    pub(super) fn matches_ignoring_case(&self, value: &[u8]) -> bool {
        match self {
            StrMatch::Exact(s) => value.eq_ignore_ascii_case(s.as_bytes()),
            StrMatch::Prefix(p) => value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
            StrMatch::Suffix(s) => {
                value.len() >= s.len() && value[value.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            StrMatch::Present => !value.is_empty(),
        }
    }

    /// Whether any of `values` matches (none when the attribute is absent).
    pub(super) fn matches_any<'v>(&self, mut values: impl Iterator<Item = &'v [u8]>) -> bool {
        values.any(|value| self.matches(value))
    }
}

/// An IP address or CIDR range, with the host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub(super) fn parse(value: &str) -> Result<Self, String> {
        let invalid = || format!("{value:?} is not an IP or CIDR");
        let (address, prefix) = match value.split_once('/') {
            None => (value, None),
            Some((address, bits)) => (address, Some(bits)),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(bits) if !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) => {
                bits.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(invalid)?
            }
            Some(_) => return Err(invalid()),
        };
        Ok(Cidr { network: mask(address, prefix), prefix })
    }

    /// Whether `ip` is in the range; IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix))) };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix))) };
            IpAddr::V6(kept.into())
        }
    }
}

/// A destination port, 1-65535 in decimal.
pub(super) fn parse_port(value: &str) -> Result<u16, String> {
    let digits = value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u16>() {
        Ok(port) if digits && port != 0 => Ok(port),
        _ => Err(format!("{value:?} is not a port (1-65535)")),
    }
}

/// A `paths` value: a string form, or a path template with `{*}` (one segment) / `{**}` (any segments).
#[derive(Debug, Clone)]
pub(super) enum PathMatch {
    Str(StrMatch),
    Template(Regex),
}

impl PathMatch {
    pub(super) fn parse(value: &str) -> Result<Self, String> {
        if !value.contains("{*}") && !value.contains("{**}") {
            return StrMatch::parse(value).map(PathMatch::Str);
        }
        let mut pattern = String::from("^");
        let mut any_seen = false;
        for (i, segment) in value.split('/').enumerate() {
            if i > 0 {
                pattern.push('/');
            }
            match segment {
                _ if any_seen && (segment == "{*}" || segment == "{**}") => {
                    return Err(format!("path template {value:?} has an operator after {{**}}, which must be last"));
                }
                "{*}" => pattern.push_str(TEMPLATE_ONE_SEGMENT),
                "{**}" => {
                    any_seen = true;
                    pattern.push_str(TEMPLATE_ANY_SEGMENTS);
                }
                _ if segment.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "path template {value:?} has segment {segment:?}; only whole {{*}} or {{**}} segments are templates"
                    ));
                }
                _ => pattern.push_str(&regex::escape(segment)),
            }
        }
        pattern.push('$');
        Regex::new(&pattern).map(PathMatch::Template).map_err(|e| format!("path template {value:?}: {e}"))
    }

    pub(super) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path.as_bytes()),
            PathMatch::Template(re) => re.is_match(path),
        }
    }
}

/// A `serviceAccounts` value: `name` (in the policy's namespace) or `namespace/name`, matched exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceAccount {
    namespace: Box<str>,
    name: Box<str>,
}

impl ServiceAccount {
    pub(super) fn parse(value: &str, policy_namespace: Option<&str>) -> Result<Self, String> {
        if value.contains('*') {
            return Err(format!("service account {value:?} must not contain a wildcard"));
        }
        let (namespace, name) = match value.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                (namespace, name)
            }
            Some(_) => return Err(format!("service account {value:?} must be name or namespace/name")),
            None => match policy_namespace {
                Some(namespace) => (namespace, value),
                None => return Err(format!("service account {value:?} needs a namespace: the policy has none")),
            },
        };
        Ok(ServiceAccount { namespace: namespace.into(), name: name.into() })
    }

    pub(super) fn matches(&self, namespace: Option<&str>, name: Option<&str>) -> bool {
        namespace == Some(&*self.namespace) && name == Some(&*self.name)
    }
}
