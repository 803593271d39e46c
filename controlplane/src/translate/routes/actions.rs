//! What a VirtualService HTTP rule does: forward (weights, per-destination headers, rewrites), redirect or
//! answer directly; and its retries, fault injection and mirrors, with Istio's defaults made explicit.

use trellis_api::FieldPath;
use trellis_api::istio::virtual_service::{HttpRoute, RedirectPortSelection};
use trellis_api::proxy_config::{
    Fault, FaultAbort, FaultDelay, Mirror, RetryPolicy, Rewrite, RouteAction, WeightedCluster,
};

use super::super::clusters::{self, Clusters};
use super::super::{Context, policy::parse_duration};
use super::{VirtualServiceRef, derived_port, header_ops, weight};
use crate::index::Key;

pub use trellis_api::proxy_config::{DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_ON};

/// Status of a redirect that names none.
pub const DEFAULT_REDIRECT_STATUS: u16 = 301;
/// Share of traffic a mirror copies when it names none (Istio: all of it).
pub const DEFAULT_MIRROR_PERCENT: f64 = 100.0;

/// Istio's default retry policy.
pub fn default_retries() -> RetryPolicy {
    RetryPolicy::istio_default()
}

/// The action of a rule; `None` (with a recorded reason) when it cannot be expressed.
pub(super) fn action<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    rule: &HttpRoute,
    at: &FieldPath,
    listener_port: u16,
) -> Option<RouteAction> {
    if let Some(redirect) = &rule.redirect {
        let at = at.key("redirect");
        if redirect.prefix_rewrite.is_some() {
            let reason = "a redirect that rewrites the path prefix cannot be expressed yet; the rule is left out";
            cx.skip(vs.key, at.key("prefixRewrite"), reason);
            return None;
        }
        let scheme = redirect.scheme.clone();
        let port = match (redirect.port, redirect.derive_port) {
            (Some(port), _) => u16::try_from(port).ok(),
            (None, Some(RedirectPortSelection::FromRequestPort)) => {
                let reason = "FROM_REQUEST_PORT cannot be expressed yet; the redirect names no port";
                cx.skip(vs.key, at.key("derivePort"), reason);
                None
            }
            (None, Some(selection)) => derived_port(selection, scheme.as_deref()),
            (None, None) => None,
        };
        let status = redirect.redirect_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(DEFAULT_REDIRECT_STATUS);
        return Some(RouteAction::Redirect {
            uri: redirect.uri.clone(),
            authority: redirect.authority.clone(),
            scheme,
            port,
            status,
        });
    }
    if let Some(direct) = &rule.direct_response {
        let at = at.key("directResponse");
        let status = u16::try_from(direct.status).unwrap_or(500);
        let body = match direct.body.as_ref() {
            None => String::new(),
            Some(body) => match (&body.string, &body.bytes) {
                (Some(text), _) => text.clone(),
                (None, Some(encoded)) => match decode_base64(encoded).and_then(|b| String::from_utf8(b).ok()) {
                    Some(text) => text,
                    None => {
                        let reason = "the body is not base64 of UTF-8 text, which is all a direct response can \
                                      carry yet; the rule is left out";
                        cx.skip(vs.key, at.key("body").key("bytes"), reason);
                        return None;
                    }
                },
                (None, None) => String::new(),
            },
        };
        return Some(RouteAction::DirectResponse { status, body });
    }
    if rule.delegate.is_some() {
        cx.skip(vs.key, at.key("delegate"), "delegation is not supported yet; the rule is left out");
        return None;
    }
    let destinations = rule.route.as_deref().unwrap_or(&[]);
    if destinations.is_empty() {
        cx.skip(vs.key, at.clone(), "the rule has no route, redirect or direct response; it is left out");
        return None;
    }
    let single = destinations.len() == 1;
    let mut targets = Vec::new();
    for (d, target) in destinations.iter().enumerate() {
        let at = at.key("route").index(d);
        let cluster =
            clusters::destination(cx, clusters, &target.destination, vs.key, &at.key("destination"), listener_port);
        let (request_headers, response_headers) = header_ops(target.headers.as_ref());
        targets.push(WeightedCluster {
            cluster,
            weight: weight(target.weight, single),
            request_headers,
            response_headers,
        });
    }
    let rewrite = rule.rewrite.as_ref().map(|r| Rewrite {
        uri: r.uri.clone(),
        uri_regex: r
            .uri_regex_rewrite
            .as_ref()
            .and_then(|re| Some((re.r#match.clone()?, rust_replacement(re.rewrite.as_deref().unwrap_or_default())))),
        authority: r.authority.clone(),
    });
    Some(RouteAction::Forward { clusters: targets, rewrite })
}

/// Istio's retry semantics: no `retries` means the default policy; `attempts` of 0 (or absent) turns
/// retries off; `retryOn` absent means the default conditions.
pub(super) fn retries(cx: &mut Context<'_>, key: &Key, rule: &HttpRoute, at: &FieldPath) -> Option<RetryPolicy> {
    let Some(retries) = &rule.retries else { return Some(default_retries()) };
    let attempts = u32::try_from(retries.attempts.unwrap_or(0)).ok().filter(|a| *a > 0)?;
    let at = at.key("retries");
    let retry_on = match retries.retry_on.as_deref() {
        Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        None => DEFAULT_RETRY_ON.iter().map(|s| (*s).to_owned()).collect(),
    };
    Some(RetryPolicy {
        attempts,
        per_try_timeout: parse_duration(cx, key, &at.key("perTryTimeout"), retries.per_try_timeout.as_deref()),
        retry_on,
        backoff: parse_duration(cx, key, &at.key("backoff"), retries.backoff.as_deref()),
        allow_previous_hosts: retries.retry_ignore_previous_hosts == Some(false),
        remote_localities: retries.retry_remote_localities == Some(true),
    })
}

/// Fault injection. A delay or abort without a percentage applies to no request, as Istio translates it.
pub(super) fn fault(cx: &mut Context<'_>, key: &Key, rule: &HttpRoute, at: &FieldPath) -> Option<Fault> {
    let fault = rule.fault.as_ref()?;
    let at = at.key("fault");
    let delay = fault.delay.as_ref().and_then(|delay| {
        let at = at.key("delay");
        if delay.exponential_delay.is_some() {
            cx.skip(key, at.key("exponentialDelay"), "exponential delays are not supported (Istio refuses them)");
        }
        let fixed_delay = parse_duration(cx, key, &at.key("fixedDelay"), delay.fixed_delay.as_deref())?;
        let percentage =
            delay.percentage.as_ref().and_then(|p| p.value).or(delay.percent.map(f64::from)).unwrap_or(0.0);
        Some(FaultDelay { fixed_delay, percentage })
    });
    let abort = fault.abort.as_ref().and_then(|abort| {
        if abort.http2_error.is_some() {
            cx.skip(
                key,
                at.key("abort").key("http2Error"),
                "HTTP/2 error aborts are not supported (Istio refuses them)",
            );
            return None;
        }
        let http_status = abort.http_status.and_then(|s| u16::try_from(s).ok());
        if http_status.is_none() && abort.grpc_status.is_none() {
            return None;
        }
        let percentage = abort.percentage.as_ref().and_then(|p| p.value).unwrap_or(0.0);
        Some(FaultAbort { http_status, grpc_status: abort.grpc_status.clone(), percentage })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

/// Mirrors: the deprecated `mirror` (with `mirrorPercentage`, `mirrorPercent` or `mirror_percent`) and
/// `mirrors`; all traffic is copied when no percentage is given.
pub(super) fn mirrors<'a>(
    cx: &mut Context<'a>,
    clusters: &mut Clusters<'a>,
    vs: VirtualServiceRef<'a>,
    rule: &HttpRoute,
    at: &FieldPath,
    listener_port: u16,
) -> Vec<Mirror> {
    let mut out = Vec::new();
    if let Some(mirror) = &rule.mirror {
        let percentage = rule
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.value)
            .or(rule.mirror_percent.or(rule.legacy_mirror_percent).map(f64::from))
            .unwrap_or(DEFAULT_MIRROR_PERCENT);
        let cluster = clusters::destination(cx, clusters, mirror, vs.key, &at.key("mirror"), listener_port);
        out.push(Mirror { cluster, percentage });
    }
    for (i, mirror) in rule.mirrors.iter().flatten().enumerate() {
        let at = at.key("mirrors").index(i).key("destination");
        let cluster = clusters::destination(cx, clusters, &mirror.destination, vs.key, &at, listener_port);
        let percentage = mirror.percentage.as_ref().and_then(|p| p.value).unwrap_or(DEFAULT_MIRROR_PERCENT);
        out.push(Mirror { cluster, percentage });
    }
    out
}

/// An RE2 replacement (`\1` for the first group, as Istio and Envoy write it) in the proxy's regex syntax
/// (`${1}`); a `$` is escaped so it stays literal.
fn rust_replacement(re2: &str) -> String {
    let mut out = String::with_capacity(re2.len());
    let mut chars = re2.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut group = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    group.push(d);
                    chars.next();
                }
                out.push_str(&format!("${{{group}}}"));
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

/// Standard base64 (padding optional) into bytes; `None` when it is not base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let body: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = body.strip_suffix(b"==").or_else(|| body.strip_suffix(b"=")).unwrap_or(&body);
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_group_references_become_rust_ones() {
        assert_eq!(rust_replacement(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(rust_replacement(r"\12$"), "${12}$$");
    }

    #[test]
    fn base64_bodies_decode_with_or_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("not base64!"), None);
    }
}
