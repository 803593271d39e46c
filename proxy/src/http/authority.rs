//! The host a request is for, as routing reads it: the URI's authority or the `Host` header, split
//! into host and port without copying either.

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderValue, Request};

/// The text a request names its host with: the URI's authority (absolute-form and HTTP/2 requests)
/// or else the `Host` header. Held by its own handle (a reference count, no copy), so routing can
/// read the name while the request moves on.
pub(super) enum HostText {
    Uri(Authority),
    Header(HeaderValue),
    Missing,
}

impl HostText {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        if let Some(authority) = req.uri().authority() {
            return Self::Uri(authority.clone());
        }
        match req.headers().get(HOST) {
            Some(value) => Self::Header(value.clone()),
            None => Self::Missing,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            Self::Uri(authority) => authority.as_str(),
            Self::Header(value) => value.to_str().unwrap_or_default(),
            Self::Missing => "",
        }
    }
}

/// The host (without user info or port) and the port of an authority's text.
pub(super) fn split(text: &str, default_port: u16) -> (&str, u16) {
    let text = text.rsplit_once('@').map_or(text, |(_, host)| host);
    if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port
        let (ip, port) = rest.split_once(']').unwrap_or((rest, ""));
        let port = port.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
        return (ip, port);
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().unwrap_or(default_port)),
        _ => (text, default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_read_from_every_authority_form() {
        assert_eq!(split("reviews", 9080), ("reviews", 9080));
        assert_eq!(split("reviews.default.svc:8080", 80), ("reviews.default.svc", 8080));
        assert_eq!(split("user:secret@reviews:81", 80), ("reviews", 81));
        assert_eq!(split("[fd00::1]:8443", 80), ("fd00::1", 8443));
        assert_eq!(split("[fd00::1]", 80), ("fd00::1", 80));
        assert_eq!(split("fd00::1", 80), ("fd00::1", 80));
        assert_eq!(split("reviews:notaport", 80), ("reviews", 80));
        assert_eq!(split("", 80), ("", 80));
    }

    #[test]
    fn the_uri_authority_wins_over_the_host_header_which_is_used_without_one() {
        let absolute = Request::builder().uri("http://ratings:9080/x").header(HOST, "other").body(()).expect("request");
        assert_eq!(HostText::of(&absolute).as_str(), "ratings:9080");
        let origin = Request::builder().uri("/x").header(HOST, "details:9080").body(()).expect("request");
        assert_eq!(HostText::of(&origin).as_str(), "details:9080");
        let neither = Request::builder().uri("/x").body(()).expect("request");
        assert_eq!(HostText::of(&neither).as_str(), "");
        let binary = Request::builder()
            .uri("/x")
            .header(HOST, HeaderValue::from_bytes(b"caf\xe9").expect("value"))
            .body(())
            .expect("request");
        assert_eq!(HostText::of(&binary).as_str(), "");
    }
}
