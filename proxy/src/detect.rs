//! Protocol detection: reads the first bytes of an accepted connection, within a byte bound and a
//! short timeout, and says whether the client speaks HTTP/1.x, HTTP/2 with prior knowledge, TLS
//! (with the SNI and ALPN of its ClientHello) or something else (opaque TCP). The bytes read are
//! handed back inside [`Prefixed`], which replays them before reading on, so the caller can pass
//! the stream to hyper, to rustls or to the TCP copier as if nothing had been read. Classification
//! is pure ([`classify`], [`classify_final`]); only [`detect`] does I/O. Ports whose protocol is
//! declared, or that belong to server-speaks-first protocols, skip detection ([`skips_detection`]).

mod prefixed;
mod tls;

#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use trellis_api::proxy_config::Protocol as DeclaredProtocol;

pub use prefixed::Prefixed;

/// Most bytes read from a connection while detecting its protocol. HTTP needs a few bytes and the
/// HTTP/2 preface 24; the bound is sized for TLS ClientHellos, which are typically 200 bytes to
/// 2 KiB (post-quantum key shares included). A ClientHello that does not fit is still TLS, with
/// no SNI or ALPN. The buffer lives only while detection runs.
pub const MAX_DETECT_BYTES: usize = 4 * 1024;

/// How long detection waits for the client's first bytes by default, like Istio's former
/// `protocolDetectionTimeout` default. A client that sends nothing for this long (a
/// server-speaks-first protocol on an undeclared port) is proxied as opaque TCP, so its server's
/// greeting is delayed by at most this much. `Duration::ZERO` passed to [`detect`] means no
/// timeout, as in Istio.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Well-known ports of protocols where detection only costs time or guesses wrong: the
/// server speaks first (SMTP 25 and 587, MySQL 3306) or the client's first bytes could pass for an
/// HTTP method (Redis and memcached text commands, 6379 and 11211; PostgreSQL 5432). Connections to
/// them are proxied as opaque TCP without waiting.
pub const SERVER_FIRST_PORTS: &[u16] = &[25, 587, 3306, 5432, 6379, 11211];

/// The HTTP/2 connection preface a client with prior knowledge sends first (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/1.x request methods recognised at the start of a connection, each with the space that
/// ends it: RFC 9110's methods, PATCH, QUERY, WebDAV's and CalDAV's, and PURGE. A connection whose
/// first bytes are none of these (nor the HTTP/2 preface's `PRI`) is not HTTP/1.x.
const HTTP1_METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
    b"QUERY ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
    b"SEARCH ",
    b"REPORT ",
    b"MKCALENDAR ",
    b"ACL ",
    b"BIND ",
    b"REBIND ",
    b"UNBIND ",
    b"LINK ",
    b"UNLINK ",
    b"MERGE ",
    b"MKACTIVITY ",
    b"CHECKOUT ",
    b"PURGE ",
];

/// The protocol a connection speaks, as far as its first bytes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.x request line starts the connection.
    Http1,
    /// The HTTP/2 prior-knowledge preface starts the connection.
    Http2,
    /// A TLS handshake record starts the connection. `sni` (lowercased) and `alpn` (in the
    /// client's order of preference) come from its ClientHello; both are empty when the
    /// ClientHello was malformed, did not fit in [`MAX_DETECT_BYTES`] or was incomplete when
    /// detection stopped.
    Tls { sni: Option<String>, alpn: Vec<String> },
    /// Anything else, including a client that sent nothing.
    Opaque,
}

impl Protocol {
    /// TLS whose ClientHello could not be read.
    fn tls_unknown() -> Protocol {
        Protocol::Tls { sni: None, alpn: Vec::new() }
    }
}

/// The outcome of [`detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub protocol: Protocol,
    /// The timeout expired before the bytes read decided the protocol (with no bytes at all, or
    /// with too few).
    pub timed_out: bool,
    /// How long detection took.
    pub elapsed: Duration,
}

/// Whether connections to `port` skip detection: its protocol is declared (anything but
/// `Detect`), or it is one of [`SERVER_FIRST_PORTS`]. The caller then proxies per the declared
/// protocol, or as opaque TCP for `Detect` on a server-speaks-first port.
pub fn skips_detection(port: u16, declared: DeclaredProtocol) -> bool {
    declared != DeclaredProtocol::Detect || SERVER_FIRST_PORTS.contains(&port)
}

/// Reads the first bytes of `stream` and classifies them. Reading stops as soon as the bytes
/// decide the protocol, at [`MAX_DETECT_BYTES`], at end of stream, or when `timeout` (counted from
/// the call; `Duration::ZERO` for none) expires. The stream comes back wrapped so the bytes read
/// are read again first. An I/O error while reading is returned as is (the connection is lost).
pub async fn detect<S: AsyncRead + Unpin>(mut stream: S, timeout: Duration) -> io::Result<(Detection, Prefixed<S>)> {
    let start = Instant::now();
    let deadline = if timeout.is_zero() { None } else { start.checked_add(timeout) };
    // On the heap and freed on return, so a connection's task does not carry it afterwards.
    let mut buf = vec![0u8; MAX_DETECT_BYTES];
    let mut len = 0;
    let mut timed_out = false;
    let protocol = loop {
        let read = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await {
                Ok(read) => read,
                Err(_elapsed) => {
                    timed_out = true;
                    break classify_final(&buf[..len]);
                }
            },
            None => stream.read(&mut buf[len..]).await,
        };
        let n = read?;
        if n == 0 {
            break classify_final(&buf[..len]);
        }
        len += n;
        if let Some(protocol) = classify(&buf[..len]) {
            break protocol;
        }
        if len == buf.len() {
            break classify_final(&buf[..len]);
        }
    };
    let detection = Detection { protocol, timed_out, elapsed: start.elapsed() };
    let prefix = Bytes::copy_from_slice(&buf[..len]);
    Ok((detection, Prefixed::new(prefix, stream)))
}

/// Classifies the first bytes of a connection, or returns `None` when more bytes could still
/// change the answer. Decides as early as it can: `GET ` is HTTP/1.x, a first byte that starts no
/// known protocol is opaque, and TLS is decided once its ClientHello is complete (or known to be
/// malformed or larger than [`MAX_DETECT_BYTES`]).
pub fn classify(prefix: &[u8]) -> Option<Protocol> {
    let first = *prefix.first()?;
    if first == tls::CONTENT_TYPE_HANDSHAKE {
        return tls::classify(prefix, MAX_DETECT_BYTES);
    }
    match match_prefix(prefix, HTTP2_PREFACE) {
        Match::Full => return Some(Protocol::Http2),
        Match::Partial => return None,
        Match::No => {}
    }
    let mut partial = false;
    for method in HTTP1_METHODS {
        match match_prefix(prefix, method) {
            Match::Full => return Some(Protocol::Http1),
            Match::Partial => partial = true,
            Match::No => {}
        }
    }
    if partial { None } else { Some(Protocol::Opaque) }
}

/// Classifies the first bytes of a connection when no more will be read (end of stream, timeout
/// or the bound reached): what [`classify`] says, else TLS when a TLS record header has begun
/// (`0x16 0x03`), else opaque.
pub fn classify_final(prefix: &[u8]) -> Protocol {
    classify(prefix).unwrap_or_else(|| if tls::starts_tls(prefix) { Protocol::tls_unknown() } else { Protocol::Opaque })
}

/// How bytes read so far compare with a token expected at the start of the stream.
enum Match {
    /// The bytes start with the whole token.
    Full,
    /// The bytes are a proper prefix of the token.
    Partial,
    /// The bytes differ from the token.
    No,
}

fn match_prefix(prefix: &[u8], token: &[u8]) -> Match {
    if prefix.len() >= token.len() {
        if prefix.starts_with(token) { Match::Full } else { Match::No }
    } else if token.starts_with(prefix) {
        Match::Partial
    } else {
        Match::No
    }
}
