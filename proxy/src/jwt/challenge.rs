//! The `www-authenticate` challenge on a 401 for a refused JWT, as Envoy's `jwt_authn` writes it
//! (RFC 6750): `Bearer realm="<scheme>://<host><path>", error="invalid_token"`, the realm being the
//! request's URL without its query.

use http::HeaderValue;
use http::request::Parts;

/// Scheme of the realm when the request does not say (`x-forwarded-proto`).
pub const DEFAULT_REALM_SCHEME: &str = "http";
/// The challenge when the request's URL cannot be written into a header value.
pub const BARE_CHALLENGE: &str = "Bearer error=\"invalid_token\"";

/// The `www-authenticate` value for a request whose token was refused.
pub fn www_authenticate(parts: &Parts) -> HeaderValue {
    let header = |name: http::header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = header(http::header::HeaderName::from_static("x-forwarded-proto"))
        .or_else(|| parts.uri.scheme_str())
        .unwrap_or(DEFAULT_REALM_SCHEME);
    let host = header(http::header::HOST).or_else(|| parts.uri.authority().map(|a| a.as_str())).unwrap_or("");
    let path = parts.uri.path();
    if [scheme, host, path].iter().any(|part| part.contains(['"', '\\'])) {
        return HeaderValue::from_static(BARE_CHALLENGE);
    }
    HeaderValue::from_str(&format!("Bearer realm=\"{scheme}://{host}{path}\", error=\"invalid_token\""))
        .unwrap_or_else(|_| HeaderValue::from_static(BARE_CHALLENGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn the_realm_is_the_requests_url_without_its_query() {
        let value = www_authenticate(&parts("/api/v1/booking?id=3", &[("host", "booking:8080")]));
        assert_eq!(value, "Bearer realm=\"http://booking:8080/api/v1/booking\", error=\"invalid_token\"");
    }

    #[test]
    fn a_forwarded_scheme_and_an_absolute_uri_are_used() {
        let value = www_authenticate(&parts("http://shop.local/cart", &[("x-forwarded-proto", "https")]));
        assert_eq!(value, "Bearer realm=\"https://shop.local/cart\", error=\"invalid_token\"");
    }

    #[test]
    fn a_host_that_would_break_the_quoting_gives_the_bare_challenge() {
        let value = www_authenticate(&parts("/x", &[("host", "evil\"host")]));
        assert_eq!(value, BARE_CHALLENGE);
    }
}
