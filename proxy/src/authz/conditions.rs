//! The `when` conditions of an authorization rule: Istio's condition keys
//! (<https://istio.io/latest/docs/reference/config/security/conditions/>) parsed once into an attribute and
//! typed values, and checked against a request's facts.

use http::HeaderName;
use serde_json::Value;
use trellis_api::istio::authorization_policy::Condition;

use super::Context;
use super::matchers::{Cidr, ServiceAccount, StrMatch, ValueSet, parse_port};

/// The request attribute a condition reads.
#[derive(Debug, Clone)]
enum Attribute {
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    ConnectionSni,
    /// `request.headers[name]`: several lines of one header are joined with `,` before matching, as Envoy does.
    RequestHeader(HeaderKey),
    /// `request.experimental.inline.headers[name]`: any one comma-separated element matches.
    RequestInlineHeader(HeaderKey),
    RequestAuthPrincipal,
    RequestAuthAudiences,
    RequestAuthPresenter,
    /// `request.auth.claims[a][b]`: the path into the JWT payload.
    RequestAuthClaims(Vec<String>),
}

/// A header a condition reads; the pseudo-headers (and `host`, which Envoy folds into `:authority`) come
/// from the request line.
#[derive(Debug, Clone)]
enum HeaderKey {
    Authority,
    Method,
    Path,
    Name(HeaderName),
}

/// The values of a condition, typed by its attribute.
#[derive(Debug, Clone)]
enum Values {
    Ips(ValueSet<Cidr>),
    Ports(ValueSet<u16>),
    Strings(ValueSet<StrMatch>),
    ServiceAccounts(ValueSet<ServiceAccount>),
}

/// One compiled `when` entry.
#[derive(Debug, Clone)]
pub(super) struct ConditionMatch {
    attribute: Attribute,
    values: Values,
}

impl ConditionMatch {
    /// Compiles `condition`, found at `at` (`rules[0].when[1]`); errors name the field.
    pub(super) fn compile(condition: &Condition, at: &str, policy_namespace: Option<&str>) -> Result<Self, String> {
        let key = condition.key.as_str();
        let attribute = parse_key(key).map_err(|message| format!("{at}.key: {message}"))?;
        let no_values = condition.values.as_ref().is_none_or(Vec::is_empty);
        let no_not_values = condition.not_values.as_ref().is_none_or(Vec::is_empty);
        if no_values && no_not_values {
            return Err(format!("{at}: condition {key:?} needs values or notValues"));
        }
        let lists = (condition.values.as_ref(), condition.not_values.as_ref());
        let names = ("values", "notValues");
        let values = match attribute {
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
                Values::Ips(ValueSet::compile(at, names, lists, Cidr::parse)?)
            }
            Attribute::DestinationPort => Values::Ports(ValueSet::compile(at, names, lists, parse_port)?),
            Attribute::SourceServiceAccount => Values::ServiceAccounts(ValueSet::compile(at, names, lists, |v| {
                ServiceAccount::parse(v, policy_namespace)
            })?),
            _ => Values::Strings(ValueSet::compile(at, names, lists, StrMatch::parse)?),
        };
        Ok(ConditionMatch { attribute, values })
    }

    /// Whether the attribute exists only on HTTP requests.
    pub(super) fn is_http_only(&self) -> bool {
        matches!(
            self.attribute,
            Attribute::RequestHeader(_)
                | Attribute::RequestInlineHeader(_)
                | Attribute::RequestAuthPrincipal
                | Attribute::RequestAuthAudiences
                | Attribute::RequestAuthPresenter
                | Attribute::RequestAuthClaims(_)
        )
    }

    /// Whether the request satisfies the condition. On a TCP connection, HTTP-only attributes count as
    /// matching; the caller has already skipped ALLOW rules that use them (see the module's TCP notes).
    pub(super) fn matches(&self, cx: &Context<'_, '_>) -> bool {
        let facts = cx.facts;
        match (&self.attribute, &self.values) {
            (Attribute::SourceIp, Values::Ips(set)) => set.check(|c| c.contains(facts.source_ip)),
            (Attribute::RemoteIp, Values::Ips(set)) => set.check(|c| c.contains(facts.remote_ip)),
            (Attribute::DestinationIp, Values::Ips(set)) => set.check(|c| c.contains(facts.destination_ip)),
            (Attribute::DestinationPort, Values::Ports(set)) => set.check(|p| *p == facts.destination_port),
            (Attribute::SourceServiceAccount, Values::ServiceAccounts(set)) => {
                set.check(|sa| sa.matches(cx.peer.namespace, cx.peer.service_account))
            }
            (attribute, Values::Strings(set)) => self.check_strings(attribute, set, cx),
            // `compile` pairs every attribute with its kind of values.
            _ => false,
        }
    }

    fn check_strings(&self, attribute: &Attribute, set: &ValueSet<StrMatch>, cx: &Context<'_, '_>) -> bool {
        let one = |value: Option<&str>| set.check(|m| value.is_some_and(|v| m.matches(v.as_bytes())));
        match attribute {
            Attribute::SourceNamespace => one(cx.peer.namespace),
            Attribute::SourcePrincipal => one(cx.facts.peer),
            Attribute::ConnectionSni => one(cx.facts.sni),
            _ => {
                let Some(http) = &cx.facts.http else { return true };
                let jwt = http.jwt.as_ref();
                match attribute {
                    Attribute::RequestHeader(key) => match header_value(key, cx) {
                        Some(value) => set.check(|m| m.matches(&value)),
                        None => set.check(|_| false),
                    },
                    Attribute::RequestInlineHeader(key) => {
                        let value = header_value(key, cx);
                        set.check(|m| m.matches_any(value.iter().flat_map(|v| v.split(|b| *b == b','))))
                    }
                    Attribute::RequestAuthPrincipal => one(jwt.map(|j| j.principal)),
                    Attribute::RequestAuthAudiences => {
                        let claim = jwt.and_then(|j| j.claims.get("aud"));
                        set.check(|m| m.matches_any(claim_strings(claim)))
                    }
                    Attribute::RequestAuthPresenter => {
                        let claim = jwt.and_then(|j| j.claims.get("azp"));
                        set.check(|m| m.matches_any(claim_strings(claim)))
                    }
                    Attribute::RequestAuthClaims(path) => {
                        let claim = jwt.and_then(|j| path.iter().try_fold(j.claims, |v, name| v.get(name)));
                        set.check(|m| m.matches_any(claim_strings(claim)))
                    }
                    _ => false,
                }
            }
        }
    }
}

/// The strings of a claim: itself if a string, its string elements if a list, nothing otherwise (Istio
/// matches string and list-of-string claims only).
fn claim_strings(claim: Option<&Value>) -> impl Iterator<Item = &[u8]> + '_ {
    let (single, list) = match claim {
        Some(Value::String(s)) => (Some(s.as_bytes()), None),
        Some(Value::Array(items)) => (None, Some(items.iter().filter_map(|v| v.as_str().map(str::as_bytes)))),
        _ => (None, None),
    };
    single.into_iter().chain(list.into_iter().flatten())
}

/// A header's value as matched: its lines joined with `,`; `None` when absent.
fn header_value<'c>(key: &HeaderKey, cx: &Context<'c, '_>) -> Option<std::borrow::Cow<'c, [u8]>> {
    use std::borrow::Cow;
    let http = cx.facts.http.as_ref()?;
    match key {
        HeaderKey::Authority => Some(Cow::Borrowed(http.host.as_bytes())),
        HeaderKey::Method => Some(Cow::Borrowed(http.method.as_bytes())),
        HeaderKey::Path => Some(Cow::Borrowed(http.path.as_bytes())),
        HeaderKey::Name(name) => {
            let mut lines = http.headers.get_all(name).iter();
            let first = lines.next()?;
            match lines.next() {
                None => Some(Cow::Borrowed(first.as_bytes())),
                Some(second) => {
                    let mut joined = [first.as_bytes(), b",", second.as_bytes()].concat();
                    for line in lines {
                        joined.push(b',');
                        joined.extend_from_slice(line.as_bytes());
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
    }
}

/// Parses a condition key, or says why it is refused.
fn parse_key(key: &str) -> Result<Attribute, String> {
    Ok(match key {
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "destination.ip" => Attribute::DestinationIp,
        "destination.port" => Attribute::DestinationPort,
        "source.namespace" => Attribute::SourceNamespace,
        "source.principal" => Attribute::SourcePrincipal,
        "source.serviceAccount" => Attribute::SourceServiceAccount,
        "connection.sni" => Attribute::ConnectionSni,
        "request.auth.principal" => Attribute::RequestAuthPrincipal,
        "request.auth.audiences" => Attribute::RequestAuthAudiences,
        "request.auth.presenter" => Attribute::RequestAuthPresenter,
        _ => {
            if let Some(rest) = key.strip_prefix("request.experimental.inline.headers") {
                Attribute::RequestInlineHeader(header_key(key, rest)?)
            } else if let Some(rest) = key.strip_prefix("request.headers") {
                Attribute::RequestHeader(header_key(key, rest)?)
            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                Attribute::RequestAuthClaims(bracketed(key, rest)?)
            } else {
                return Err(format!("unknown condition key {key:?}"));
            }
        }
    })
}

fn header_key(key: &str, rest: &str) -> Result<HeaderKey, String> {
    let names = bracketed(key, rest)?;
    let [name] = names.as_slice() else {
        return Err(format!("condition key {key:?} must name one header: request.headers[name]"));
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        ":authority" | "host" => HeaderKey::Authority,
        ":method" => HeaderKey::Method,
        ":path" => HeaderKey::Path,
        lower => HeaderKey::Name(
            HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| format!("condition key {key:?}: {name:?} is not a valid header name"))?,
        ),
    })
}

/// `[a][b]` as `["a", "b"]`; at least one non-empty name.
fn bracketed(key: &str, mut rest: &str) -> Result<Vec<String>, String> {
    let malformed = || format!("condition key {key:?} must have the form name[entry] (or claims[a][b])");
    let mut names = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?;
        let (name, after) = inner.split_once(']').ok_or_else(malformed)?;
        if name.is_empty() || name.contains('[') {
            return Err(malformed());
        }
        names.push(name.to_string());
        rest = after;
    }
    if names.is_empty() { Err(malformed()) } else { Ok(names) }
}
