//! The request `trellis explain` follows: a method, a URL and headers as a user writes them on the
//! command line, checked and split into the parts the proxy routes on.

use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

/// Port of an `http` URL that names none.
pub const DEFAULT_HTTP_PORT: u16 = 80;
/// Port of an `https` URL that names none.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// A request as the proxy would see it arrive from the application (or from outside, at a gateway).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// `http`, or `https` for TLS the application originates (routed by SNI, not by HTTP routes).
    pub scheme: String,
    /// Host without port (and without brackets for IPv6).
    pub host: String,
    /// The destination port: the URL's, else the scheme's default.
    pub port: u16,
    /// Path without the query string; `/` when the URL has none.
    pub path: String,
    pub query: Option<String>,
    /// The user's headers plus `Host`, which comes from the URL.
    pub headers: HeaderMap,
    /// The URL as given.
    pub url: String,
}

impl Request {
    /// Parses `url` (a scheme-less URL means `http://`), `method` and `NAME:VALUE` headers. Errors name
    /// the argument that is wrong.
    pub fn parse(method: &str, url: &str, headers: &[String]) -> Result<Self, String> {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("--method {method:?} is not an HTTP method"))?;
        let full = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
        let uri: Uri = full.parse().map_err(|e| format!("URL {url:?} cannot be read: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => DEFAULT_HTTP_PORT,
            "https" => DEFAULT_HTTPS_PORT,
            other => return Err(format!("URL {url:?}: scheme {other:?} is not http or https")),
        };
        let authority = uri.authority().ok_or_else(|| format!("URL {url:?} names no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(format!("URL {url:?} names no host"));
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let mut map = HeaderMap::new();
        for header in headers {
            let (name, value) = parse_header(header)?;
            if name == HOST {
                return Err(format!(
                    "--header {header:?}: the host comes from the URL; write http://{}/... instead",
                    value.to_str().unwrap_or("HOST")
                ));
            }
            map.append(name, value);
        }
        // The proxy routes and redirects on `Host`; a client sets it from the URL's authority.
        let host_value = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, h)| h);
        let host_value =
            HeaderValue::from_str(host_value).map_err(|_| format!("URL {url:?}: the host is not a valid header"))?;
        map.insert(HOST, host_value);
        let path = match uri.path() {
            "" => "/".to_owned(),
            path => path.to_owned(),
        };
        Ok(Self { method, scheme, host, port, path, query: uri.query().map(str::to_owned), headers: map, url: full })
    }

    /// Whether the application speaks TLS itself, so the sidecar sees only the SNI name.
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }
}

/// One `NAME:VALUE` (or `NAME: VALUE`) header.
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) =
        text.split_once(':').ok_or_else(|| format!("--header {text:?} is not NAME:VALUE (e.g. end-user:jason)"))?;
    let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("--header {text:?}: {:?} is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("--header {text:?}: {:?} is not a header value", value.trim()))?;
    Ok((name, value))
}
