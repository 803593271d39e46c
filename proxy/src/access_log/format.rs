//! The access log's lines: an [`Entry`] (what one HTTP request or one TCP connection did) written in
//! Envoy's default text format (Istio's default, `[%START_TIME%] "%REQ(:METHOD)% ..."`) or as the JSON
//! object of Istio's JSON encoding. Pure functions of the entry, so every field is tested without
//! sockets. Unknown values are `-` in text and `null` in JSON, as Envoy writes them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri, Version};

use crate::metrics::ResponseFlag;

/// Which way lines are written (`telemetry.accessLog` encoding of the Mesh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Envoy's default text format.
    Text,
    /// One JSON object per line, with Istio's keys.
    Json,
}

/// Envoy's response flags of one request or connection, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);

    /// The set holding only `flag`.
    pub fn of(flag: ResponseFlag) -> Self {
        Flags(flag.bit())
    }

    /// Adds `flag`.
    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= flag.bit();
    }

    /// Both sets together.
    #[must_use]
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags set, in Envoy's order.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        ResponseFlag::ALL.into_iter().filter(move |flag| self.contains(*flag))
    }
}

/// `%RESPONSE_FLAGS%`: the short names joined by commas in Envoy's order (`UF,URX`), `-` for none.
impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            f.write_str(flag.short())?;
        }
        Ok(())
    }
}

/// The request half of an HTTP entry, taken from the request head when it arrived. Header values
/// are shared with the request (cloning one is a reference count), not copied.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// `x-envoy-original-path`, which Envoy logs in place of the path when a rewrite set it.
    pub original_path: Option<HeaderValue>,
    pub host: Option<HeaderValue>,
    pub forwarded_for: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
}

/// What one request or connection did: every field of the log line.
#[derive(Debug, Clone)]
pub struct Entry {
    pub start: SystemTime,
    /// The request (HTTP); `None` for a TCP connection.
    pub request: Option<RequestFacts>,
    /// The response status; 0 when there was none (TCP, or no response head was sent).
    pub status: u16,
    pub flags: Flags,
    /// `%RESPONSE_CODE_DETAILS%` (`via_upstream`, `route_not_found`...).
    pub details: Option<&'static str>,
    /// `%CONNECTION_TERMINATION_DETAILS%` (a TCP connection an authorization policy closed...).
    pub termination: Option<&'static str>,
    /// Body bytes received from the downstream (TCP: bytes received on the connection).
    pub bytes_received: u64,
    /// Body bytes sent to the downstream (TCP: bytes sent on the connection).
    pub bytes_sent: u64,
    /// From the start until the last byte was sent (TCP: until the connection closed).
    pub duration: Duration,
    /// The response's `x-envoy-upstream-service-time`, when an upstream set it.
    pub upstream_service_time: Option<HeaderValue>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    /// The address the downstream connected to (the original destination of captured traffic).
    pub downstream_local: SocketAddr,
    pub downstream_remote: SocketAddr,
    /// The TLS server name of a connection routed by SNI.
    pub server_name: Option<String>,
    pub route_name: Option<String>,
}

impl Entry {
    /// The entry of a request (`request`) or connection (`None`) starting now, between `remote` and
    /// `local`, before anything happened to it.
    pub fn starting(request: Option<RequestFacts>, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            start: SystemTime::now(),
            request,
            status: 0,
            flags: Flags::NONE,
            details: None,
            termination: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream_service_time: None,
            upstream_host: None,
            upstream_cluster: None,
            downstream_local: local,
            downstream_remote: remote,
            server_name: None,
            route_name: None,
        }
    }
}

/// `%START_TIME%` as Envoy writes it by default: UTC with milliseconds, `2026-11-26T10:30:01.123Z`.
pub fn start_time(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `%PROTOCOL%`.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A header value as text (non-UTF-8 bytes replaced); `None` when absent or empty.
fn header(value: Option<&HeaderValue>) -> Option<std::borrow::Cow<'_, str>> {
    value.filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v.as_bytes()))
}

/// The values of an entry's fields, as both formats read them.
struct Fields<'a> {
    method: Option<&'a str>,
    path: Option<std::borrow::Cow<'a, str>>,
    protocol: Option<&'static str>,
    forwarded_for: Option<std::borrow::Cow<'a, str>>,
    user_agent: Option<std::borrow::Cow<'a, str>>,
    request_id: Option<std::borrow::Cow<'a, str>>,
    authority: Option<std::borrow::Cow<'a, str>>,
    upstream_service_time: Option<std::borrow::Cow<'a, str>>,
    duration_ms: u64,
}

impl<'a> Fields<'a> {
    fn of(entry: &'a Entry) -> Self {
        let request = entry.request.as_ref();
        let path = request.and_then(|r| {
            header(r.original_path.as_ref()).or_else(|| r.uri.path_and_query().map(|p| p.as_str().into()))
        });
        let authority = request.and_then(|r| {
            r.uri.authority().map(|a| std::borrow::Cow::Borrowed(a.as_str())).or_else(|| header(r.host.as_ref()))
        });
        Self {
            method: request.map(|r| r.method.as_str()),
            path,
            protocol: request.map(|r| protocol(r.version)),
            forwarded_for: request.and_then(|r| header(r.forwarded_for.as_ref())),
            user_agent: request.and_then(|r| header(r.user_agent.as_ref())),
            request_id: request.and_then(|r| header(r.request_id.as_ref())),
            authority,
            upstream_service_time: header(entry.upstream_service_time.as_ref()),
            duration_ms: u64::try_from(entry.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The text of an optional value: itself, or `-`.
fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// One line in Envoy's default format (Istio's `TEXT` encoding), newline included. The upstream
/// transport failure reason and upstream local address are not tracked: always `-`.
pub fn text_line(entry: &Entry) -> String {
    let fields = Fields::of(entry);
    let mut line = String::with_capacity(256);
    // Writing into a String cannot fail.
    let _ = writeln!(
        line,
        "[{start}] \"{method} {path} {protocol}\" {status} {flags} {details} {termination} \"-\" \
         {received} {sent} {duration} {service_time} \"{xff}\" \"{agent}\" \"{id}\" \"{authority}\" \"{host}\" \
         {cluster} - {local} {remote} {sni} {route}",
        start = start_time(entry.start),
        method = fields.method.unwrap_or("-"),
        path = or_dash(fields.path),
        protocol = fields.protocol.unwrap_or("-"),
        status = entry.status,
        flags = entry.flags,
        details = entry.details.unwrap_or("-"),
        termination = entry.termination.unwrap_or("-"),
        received = entry.bytes_received,
        sent = entry.bytes_sent,
        duration = fields.duration_ms,
        service_time = or_dash(fields.upstream_service_time),
        xff = or_dash(fields.forwarded_for),
        agent = or_dash(fields.user_agent),
        id = or_dash(fields.request_id),
        authority = or_dash(fields.authority),
        host = or_dash(entry.upstream_host),
        cluster = entry.upstream_cluster.as_deref().unwrap_or("-"),
        local = entry.downstream_local,
        remote = entry.downstream_remote,
        sni = entry.server_name.as_deref().unwrap_or("-"),
        route = entry.route_name.as_deref().unwrap_or("-"),
    );
    line
}

/// One line as a JSON object with Istio's keys (`start_time`, `method`, `path`, `response_code`...),
/// `null` for what is unknown, newline included.
pub fn json_line(entry: &Entry) -> String {
    let fields = Fields::of(entry);
    let flags = (!entry.flags.is_empty()).then(|| entry.flags.to_string());
    let object = serde_json::json!({
        "start_time": start_time(entry.start),
        "method": fields.method,
        "path": fields.path,
        "protocol": fields.protocol,
        "response_code": entry.status,
        "response_flags": flags,
        "response_code_details": entry.details,
        "connection_termination_details": entry.termination,
        "upstream_transport_failure_reason": null,
        "bytes_received": entry.bytes_received,
        "bytes_sent": entry.bytes_sent,
        "duration": fields.duration_ms,
        "upstream_service_time": fields.upstream_service_time,
        "x_forwarded_for": fields.forwarded_for,
        "user_agent": fields.user_agent,
        "request_id": fields.request_id,
        "authority": fields.authority,
        "upstream_host": entry.upstream_host.map(|h| h.to_string()),
        "upstream_cluster": entry.upstream_cluster,
        "upstream_local_address": null,
        "downstream_local_address": entry.downstream_local.to_string(),
        "downstream_remote_address": entry.downstream_remote.to_string(),
        "requested_server_name": entry.server_name,
        "route_name": entry.route_name,
    });
    let mut line = object.to_string();
    line.push('\n');
    line
}

/// The line of `entry` in `format`.
pub fn line(format: Format, entry: &Entry) -> String {
    match format {
        Format::Text => text_line(entry),
        Format::Json => json_line(entry),
    }
}
