//! Reading a TLS ClientHello from the first bytes of a connection (RFC 8446 §4.1.2, RFC 5246
//! §7.4.1.2): record headers, a handshake message possibly split over several records, and the
//! server_name (RFC 6066 §3) and ALPN (RFC 7301) extensions. Pure: it only looks at bytes.

use std::borrow::Cow;

use super::Protocol;

/// TLS record content type of handshake messages; the first byte of a TLS client's stream.
pub(super) const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
/// Major version byte of every TLS (and SSL 3) record header.
const VERSION_MAJOR: u8 = 0x03;
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Largest plaintext record fragment allowed (2^14, RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const RANDOM_LEN: usize = 32;
const MAX_SESSION_ID_LEN: usize = 32;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
const SERVER_NAME_TYPE_HOST_NAME: u8 = 0;
/// Longest DNS name.
const MAX_HOST_NAME_LEN: usize = 253;

/// Whether `prefix` begins like a TLS record (`0x16 0x03`).
pub(super) fn starts_tls(prefix: &[u8]) -> bool {
    prefix.len() >= 2 && prefix[0] == CONTENT_TYPE_HANDSHAKE && prefix[1] == VERSION_MAJOR
}

/// Classifies bytes starting with [`CONTENT_TYPE_HANDSHAKE`]: `None` while the ClientHello is
/// incomplete and could still fit in `limit` bytes; TLS once it is complete, malformed or too big;
/// opaque when the second byte is not a TLS major version.
pub(super) fn classify(prefix: &[u8], limit: usize) -> Option<Protocol> {
    if prefix.len() < 2 {
        return None;
    }
    if prefix[1] != VERSION_MAJOR {
        return Some(Protocol::Opaque);
    }
    match client_hello_message(prefix) {
        Ok(message) => Some(match parse_client_hello(&message) {
            Ok(hello) => Protocol::Tls { sni: hello.sni, alpn: hello.alpn },
            Err(Malformed) => Protocol::tls_unknown(),
        }),
        Err(Scan::Malformed) => Some(Protocol::tls_unknown()),
        Err(Scan::Incomplete { at_least }) if at_least > limit => Some(Protocol::tls_unknown()),
        Err(Scan::Incomplete { .. }) => None,
    }
}

/// Why a ClientHello could not be read yet.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// More bytes are needed; the stream holds at least `at_least` bytes before the message ends.
    Incomplete { at_least: usize },
    /// The records or the handshake header are not a ClientHello.
    Malformed,
}

/// The bytes are not a well-formed ClientHello.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

/// What detection keeps from a ClientHello.
#[derive(Debug, PartialEq, Eq)]
struct ClientHello {
    sni: Option<String>,
    alpn: Vec<String>,
}

/// Reassembles the first handshake message from the handshake records at the start of `prefix`
/// and returns it whole (header included) once it is a complete ClientHello. Borrowed when one
/// record holds it, as it almost always does.
fn client_hello_message(prefix: &[u8]) -> Result<Cow<'_, [u8]>, Scan> {
    let mut rest = prefix;
    let mut consumed = 0;
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut message_len: Option<usize> = None;
    loop {
        if rest.len() < RECORD_HEADER_LEN {
            return Err(Scan::Incomplete { at_least: consumed + RECORD_HEADER_LEN + missing(&message, message_len) });
        }
        if rest[0] != CONTENT_TYPE_HANDSHAKE || rest[1] != VERSION_MAJOR {
            return Err(Scan::Malformed);
        }
        let record_len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if record_len == 0 || record_len > MAX_RECORD_LEN {
            return Err(Scan::Malformed);
        }
        let body = &rest[RECORD_HEADER_LEN..];
        let available = &body[..record_len.min(body.len())];
        if message.is_empty() {
            message = Cow::Borrowed(available);
        } else {
            message.to_mut().extend_from_slice(available);
        }
        if message_len.is_none() && message.len() >= HANDSHAKE_HEADER_LEN {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(Scan::Malformed);
            }
            let body_len = u24(&message[1..HANDSHAKE_HEADER_LEN]);
            message_len = Some(HANDSHAKE_HEADER_LEN + body_len);
        }
        if let Some(len) = message_len
            && message.len() >= len
        {
            return Ok(match message {
                Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[..len]),
                Cow::Owned(mut bytes) => {
                    bytes.truncate(len);
                    Cow::Owned(bytes)
                }
            });
        }
        if body.len() < record_len {
            // The message continues past the bytes of this record read so far.
            let record_start = consumed + RECORD_HEADER_LEN;
            let at_least = (record_start + body.len() + missing(&message, message_len)).max(record_start + record_len);
            return Err(Scan::Incomplete { at_least });
        }
        consumed += RECORD_HEADER_LEN + record_len;
        rest = &body[record_len..];
    }
}

/// How many message bytes are still missing (the rest of the handshake header when its length is
/// not known yet): with the bytes before them, a lower bound on how much must be read.
fn missing(message: &[u8], message_len: Option<usize>) -> usize {
    message_len.unwrap_or(HANDSHAKE_HEADER_LEN).saturating_sub(message.len())
}

fn u24(bytes: &[u8]) -> usize {
    bytes.iter().fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte))
}

/// Parses a complete ClientHello handshake message (header included).
fn parse_client_hello(message: &[u8]) -> Result<ClientHello, Malformed> {
    let mut hello = Reader::new(message.get(HANDSHAKE_HEADER_LEN..).ok_or(Malformed)?);
    let legacy_version = hello.bytes(2)?;
    if legacy_version[0] != VERSION_MAJOR {
        return Err(Malformed);
    }
    hello.bytes(RANDOM_LEN)?;
    if hello.vec_u8()?.len() > MAX_SESSION_ID_LEN {
        return Err(Malformed);
    }
    let cipher_suites = hello.vec_u16()?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err(Malformed);
    }
    if hello.vec_u8()?.is_empty() {
        return Err(Malformed);
    }
    let mut result = ClientHello { sni: None, alpn: Vec::new() };
    if hello.is_empty() {
        // A ClientHello without extensions (SSL 3 style) is still valid.
        return Ok(result);
    }
    let mut extensions = Reader::new(hello.vec_u16()?);
    if !hello.is_empty() {
        return Err(Malformed);
    }
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec_u16()?;
        match kind {
            EXTENSION_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(Malformed);
                }
                result.sni = server_name(data)?;
            }
            EXTENSION_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(Malformed);
                }
                result.alpn = alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(result)
}

/// The first host_name of a server_name extension, lowercased; `None` when it has none.
fn server_name(data: &[u8]) -> Result<Option<String>, Malformed> {
    let mut outer = Reader::new(data);
    let mut names = Reader::new(outer.vec_u16()?);
    if !outer.is_empty() || names.is_empty() {
        return Err(Malformed);
    }
    let mut found = None;
    while !names.is_empty() {
        let kind = names.u8()?;
        let name = names.vec_u16()?;
        if kind == SERVER_NAME_TYPE_HOST_NAME && found.is_none() {
            found = Some(host_name(name)?);
        }
    }
    Ok(found)
}

/// A host_name as a lowercase string: 1 to 253 bytes of printable ASCII without a trailing dot.
fn host_name(name: &[u8]) -> Result<String, Malformed> {
    let valid = !name.is_empty()
        && name.len() <= MAX_HOST_NAME_LEN
        && name.iter().all(u8::is_ascii_graphic)
        && name.last() != Some(&b'.');
    if !valid {
        return Err(Malformed);
    }
    let name = std::str::from_utf8(name).map_err(|_| Malformed)?;
    Ok(name.to_ascii_lowercase())
}

/// The protocol names of an ALPN extension, in order. Names that are not UTF-8 are kept with
/// replacement characters (they match no configured protocol).
fn alpn(data: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec_u16()?);
    if !outer.is_empty() || list.is_empty() {
        return Err(Malformed);
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec_u8()?;
        if name.is_empty() {
            return Err(Malformed);
        }
        protocols.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(protocols)
}

/// A cursor over big-endian TLS encodings; running short is [`Malformed`] because it only reads
/// complete messages.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec_u8(&mut self) -> Result<&'a [u8], Malformed> {
        let len = usize::from(self.u8()?);
        self.bytes(len)
    }

    /// A vector with a two-byte length.
    fn vec_u16(&mut self) -> Result<&'a [u8], Malformed> {
        let len = usize::from(self.u16()?);
        self.bytes(len)
    }
}
