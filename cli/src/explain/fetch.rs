//! A proxy's config from a running `trellisd`: `GET /v1/config?proxy=<id>` (`trellis_api::push::CONFIG_PATH`),
//! the config last sent to that connected proxy. trellisd answers HTTP/1.1 on its push port, so one
//! blocking request with `Connection: close` is all this needs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use trellis_api::proxy_config::ProxyConfig;
use trellis_api::push::{CONFIG_PATH, CONFIG_PROXY_PARAM, DEFAULT_PORT, STATUS_PATH};

/// How long connecting to trellisd may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long reading trellisd's answer may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (a config of thousands of services is a few MB).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// The config trellisd last sent to the proxy `proxy_id`. `address` is `host[:port]` (the port defaults
/// to trellisd's push port), optionally written as `http://host:port`.
pub fn config(address: &str, proxy_id: &str) -> Result<ProxyConfig> {
    let authority = address.strip_prefix("http://").unwrap_or(address).trim_end_matches('/');
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_owned()
    } else {
        format!("{authority}:{DEFAULT_PORT}")
    };
    let target = with_port
        .to_socket_addrs()
        .with_context(|| format!("--control-plane {address:?}: cannot resolve"))?
        .next()
        .ok_or_else(|| anyhow!("--control-plane {address:?}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to trellisd at {target}"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).context("setting a read timeout")?;
    let path = format!("{CONFIG_PATH}?{CONFIG_PROXY_PARAM}={}", percent_encode(proxy_id));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {with_port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).with_context(|| format!("sending the request to {target}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .with_context(|| format!("reading trellisd's answer from {target}"))?;
    let (status, body) = parse_response(&response).with_context(|| format!("trellisd at {target} answered"))?;
    match status {
        200 => serde_json::from_slice(&body).context("trellisd's config is not a ProxyConfig"),
        404 => bail!(
            "trellisd at {target} has no connected proxy {proxy_id:?} ({}); `trellis proxy-status` or {STATUS_PATH} \
             lists the connected ones",
            String::from_utf8_lossy(&body).trim()
        ),
        other => bail!("trellisd at {target} answered {other}: {}", String::from_utf8_lossy(&body).trim()),
    }
}

/// The status and body of an HTTP/1.1 response read to its end (fixed length or chunked).
pub fn parse_response(bytes: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("no complete HTTP header"))?;
    let head = std::str::from_utf8(&bytes[..split]).context("the HTTP header is not text")?;
    let body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line: {status_line:?}"))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok((status, dechunk(body)?));
    }
    match header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(length)) if length <= body.len() => Ok((status, body[..length].to_vec())),
        Some(Ok(length)) => bail!("the body ended after {} of {length} bytes", body.len()),
        Some(Err(_)) => bail!("a bad Content-Length"),
        None => Ok((status, body.to_vec())),
    }
}

/// A chunked body, decoded.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("a chunk size is cut off"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).context("a chunk size is not text")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("a chunk is cut off"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| anyhow!("a chunk is cut off"))?;
    }
}

/// `value` safe in a query string: unreserved characters kept, every other byte `%XX`.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_length_response_gives_its_status_and_body() {
        let (status, body) =
            parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!extra").expect("parses");
        assert_eq!((status, body.as_slice()), (404, b"nope!".as_slice()));
    }

    #[test]
    fn a_chunked_response_is_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let (status, body) = parse_response(raw).expect("parses");
        assert_eq!((status, body.as_slice()), (200, br#"{"a":1}"#.as_slice()));
    }

    #[test]
    fn a_cut_off_response_is_an_error() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn proxy_ids_are_percent_encoded() {
        assert_eq!(percent_encode("booking-v1.default"), "booking-v1.default");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn an_unreachable_control_plane_is_an_error_naming_it() {
        // Port 1 on loopback: nothing listens there.
        let err = config("127.0.0.1:1", "booking-v1.default").expect_err("nothing listens");
        assert!(format!("{err:#}").contains("cannot connect to trellisd at 127.0.0.1:1"), "{err:#}");
    }
}
