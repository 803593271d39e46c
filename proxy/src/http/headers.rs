//! Header handling every proxied request and response gets: hop-by-hop headers (RFC 9110 section
//! 7.6.1), `x-request-id`, and the marker that carries a request's original protocol between proxies.

use http::header::Entry;
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Version};

/// Marks a request that the client sent as HTTP/1.x and a proxy carried over HTTP/2.
pub const ORIG_PROTO_HEADER: &str = "trellis-orig-proto";
/// [`ORIG_PROTO_HEADER`] as a header name (no parsing on the request path).
pub const ORIG_PROTO: HeaderName = HeaderName::from_static(ORIG_PROTO_HEADER);
/// Request id, generated when the client sent none.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`] as a header name.
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Hop-by-hop headers without a constant in `http`.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Headers that only concern one connection, never forwarded, besides `Connection`, `Upgrade`, `TE`
/// and `Transfer-Encoding` (handled on their own). (`Trailer` is end to end: hyper's HTTP/1 encoder
/// writes only the trailers it announces.)
const HOP_BY_HOP: [HeaderName; 4] = [KEEP_ALIVE, PROXY_CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION];

/// Whether `name` is hop-by-hop by itself (not counting those a `Connection` header names).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION || name == UPGRADE || name == TE || name == TRANSFER_ENCODING || HOP_BY_HOP.contains(name)
}

/// Which kind of message a header map belongs to: `TE` is a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Request,
    Response,
}

/// Removes hop-by-hop headers, including every header the `Connection` header names. A request's
/// `TE: trailers` survives (gRPC needs it); a response's `TE` always goes (HTTP/2 allows it only on
/// requests, RFC 9113 section 8.2.2). When `keep_upgrade` is set the `Connection: upgrade` and
/// `Upgrade` headers of a protocol upgrade are kept.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, message: Message, keep_upgrade: bool) {
    // Most requests and responses carry none: one pass over the names, no lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().to_ascii_lowercase().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && *name == UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(TRANSFER_ENCODING);
    if !keep_upgrade {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    } else {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let trailers_only =
        message == Message::Request && headers.get(TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if trailers_only {
        // HTTP/2 allows `te` only as exactly `trailers` (RFC 9113 8.2.2).
        headers.insert(TE, HeaderValue::from_static("trailers"));
    } else {
        headers.remove(TE);
    }
}

/// The current time as a `Date` header value (RFC 9110 section 6.6.1), formatted once per second per
/// thread, as hyper's HTTP/1 server does for the responses it writes without one.
pub fn date_now() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let now = std::time::SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    CACHED.with_borrow_mut(|cached| match cached {
        Some((at, value)) if *at == second => value.clone(),
        _ => {
            // An IMF-fixdate is printable ASCII, which every header value may hold.
            let value = HeaderValue::try_from(httpdate::fmt_http_date(now)).unwrap_or(HeaderValue::from_static(""));
            *cached = Some((second, value.clone()));
            value
        }
    })
}

/// Whether a request asks for a protocol upgrade (WebSocket and friends).
pub fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Adds an `x-request-id` (a random UUID v4) when the request has none.
///
/// The id, new or the client's, is marked never-indexed (`HeaderValue::set_sensitive`): every
/// request has its own, so HPACK gains nothing from remembering one, while indexing them would fill
/// the HTTP/2 connection's header table with ids that never come back, evicting the headers that do
/// (each request's encoder then searched a long chain of old ids, and the peer's decoder copied
/// every id into its table). HTTP/1 ignores the mark.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    match headers.entry(REQUEST_ID) {
        Entry::Occupied(mut id) => id.get_mut().set_sensitive(true),
        Entry::Vacant(slot) => {
            let bits = fastrand::u128(..);
            let bits = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
            let mut id = uuid_text(bits);
            id.set_sensitive(true);
            slot.insert(id);
        }
    }
}

/// Marks a request for another Trellis proxy with the protocol it arrived in (`mark`), or removes the
/// marker: it is ours alone, never taken from a client (`insert` replaces every value a client sent).
pub fn set_orig_proto(headers: &mut HeaderMap, mark: bool) {
    if mark {
        headers.insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    } else {
        remove_if_present(headers, &ORIG_PROTO);
    }
}

/// The first value of `name`, found by looking along the names instead of hashing. For the headers
/// the proxy looks for on every request or response that are rarely there (its own markers,
/// `grpc-timeout`), this is cheaper: hashing a custom name walks all its bytes before the first
/// probe, where comparing it with a typical message's dozen names mostly stops at the first byte.
pub fn find_by_scan<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    headers.iter().find_map(|(present, value)| (present == name).then_some(value))
}

/// Removes every value of `name` when there is one (found by [`find_by_scan`]), and says whether
/// there was.
pub fn remove_if_present(headers: &mut HeaderMap, name: &HeaderName) -> bool {
    find_by_scan(headers, name).is_some() && headers.remove(name).is_some()
}

/// `bits` as a UUID's 8-4-4-4-12 lower-case hex text, written without formatting machinery or a loop
/// over digits ([`hex_digits`]), a dash before digits 8, 12, 16 and 20.
fn uuid_text(bits: u128) -> HeaderValue {
    let high = hex_digits((bits >> 64) as u64);
    let low = hex_digits(bits as u64);
    let mut text = [b'-'; 36];
    text[..8].copy_from_slice(&high[..8]);
    text[9..13].copy_from_slice(&high[8..12]);
    text[14..18].copy_from_slice(&high[12..]);
    text[19..23].copy_from_slice(&low[..4]);
    text[24..].copy_from_slice(&low[4..]);
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
}

/// The 16 lower-case hex digits of `x`, most significant first, all at once: the nibbles are spread
/// one per byte, then each byte becomes `'0' + n`, or `'a' + n - 10` from ten up (the carry of
/// `n + 6` out of the nibble says which).
fn hex_digits(x: u64) -> [u8; 16] {
    const LOW_NIBBLES: u128 = 0x0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F;
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let x = u128::from(x);
    let x = (x | (x << 32)) & 0x0000_0000_FFFF_FFFF_0000_0000_FFFF_FFFF;
    let x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF_0000_FFFF_0000_FFFF;
    let x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF_00FF_00FF_00FF_00FF;
    let nibbles = (x | (x << 4)) & LOW_NIBBLES;
    let letters = ((nibbles + 6 * ONES) >> 4) & ONES;
    (nibbles + b'0' as u128 * ONES + letters * (b'a' - b'0' - 10) as u128).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("close, x-private"));
        headers.insert("x-private", HeaderValue::from_static("secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("gzip"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers, Message::Request, false);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-app"]);
    }

    #[test]
    fn te_trailers_in_any_case_goes_on_as_lower_case_trailers_which_http2_requires() {
        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("Trailers"));
        strip_hop_by_hop(&mut headers, Message::Request, false);
        assert_eq!(headers.get(TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers, Message::Request, false);
        assert_eq!(headers.get(TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    }

    #[test]
    fn a_responses_te_goes_even_when_it_says_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers, Message::Response, false);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-app"]);
    }

    #[test]
    fn a_scan_finds_what_a_hashed_lookup_finds() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.append(REQUEST_ID, HeaderValue::from_static("first"));
        headers.append(REQUEST_ID, HeaderValue::from_static("second"));
        for name in [REQUEST_ID, http::header::ACCEPT, ORIG_PROTO] {
            assert_eq!(find_by_scan(&headers, &name), headers.get(&name), "{name}");
        }
    }

    #[test]
    fn the_date_is_an_imf_fixdate_of_now() {
        let value = date_now();
        let parsed = httpdate::parse_http_date(value.to_str().unwrap_or_default()).expect("an HTTP date");
        let off = std::time::SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(off < std::time::Duration::from_secs(2), "{value:?} is {off:?} old");
        assert!(value.as_bytes().ends_with(b" GMT"), "{value:?}");
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(Version::HTTP_11, &headers));
        strip_hop_by_hop(&mut headers, Message::Request, true);
        assert_eq!(headers.get(UPGRADE).map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        assert_eq!(headers.get(CONNECTION).map(|v| v.as_bytes()), Some(&b"upgrade"[..]));
    }

    #[test]
    fn the_orig_proto_marker_is_set_only_when_asked_and_a_clients_never_survives() {
        let mut headers = HeaderMap::new();
        set_orig_proto(&mut headers, true);
        assert_eq!(headers.get_all(ORIG_PROTO).iter().collect::<Vec<_>>(), ["HTTP/1.1"]);
        headers.append(ORIG_PROTO, HeaderValue::from_static("forged"));
        set_orig_proto(&mut headers, true);
        assert_eq!(headers.get_all(ORIG_PROTO).iter().collect::<Vec<_>>(), ["HTTP/1.1"]);
        set_orig_proto(&mut headers, false);
        assert!(!headers.contains_key(ORIG_PROTO));
        set_orig_proto(&mut headers, false);
        assert!(headers.is_empty());
    }

    #[test]
    fn remove_if_present_removes_every_value_of_a_present_name_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("x-app", HeaderValue::from_static("kept"));
        assert!(!remove_if_present(&mut headers, &ORIG_PROTO));
        headers.append(ORIG_PROTO, HeaderValue::from_static("one"));
        headers.append(ORIG_PROTO, HeaderValue::from_static("two"));
        assert!(remove_if_present(&mut headers, &ORIG_PROTO));
        assert!(!headers.contains_key(ORIG_PROTO));
        assert_eq!(headers.get("x-app").map(HeaderValue::as_bytes), Some(&b"kept"[..]));
    }

    #[test]
    fn hex_digits_are_those_of_the_formatter_for_any_value() {
        for x in [0, 1, 9, 10, 15, 16, 0xDEAD_BEEF, u64::MAX, 0x0123_4567_89AB_CDEF] {
            assert_eq!(hex_digits(x), format!("{x:016x}").as_bytes(), "{x:#x}");
        }
        for _ in 0..1000 {
            let x = fastrand::u64(..);
            assert_eq!(hex_digits(x), format!("{x:016x}").as_bytes(), "{x:#x}");
        }
    }

    #[test]
    fn a_request_id_is_the_uuid_text_of_its_bits() {
        let bits = 0x0123_4567_89ab_4def_8123_4567_89ab_cdef_u128;
        assert_eq!(uuid_text(bits), "01234567-89ab-4def-8123-456789abcdef");
        let hex = format!("{bits:032x}");
        let expected = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
        assert_eq!(uuid_text(bits), expected.as_str());
    }

    #[test]
    fn headers_without_hop_by_hop_ones_are_left_as_they_are() {
        let mut headers = HeaderMap::new();
        headers.insert("x-app", HeaderValue::from_static("kept"));
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers, Message::Request, false);
        assert_eq!(headers, before);
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut headers, Message::Request, false);
        assert_eq!(headers, before, "a lone proxy-connection goes");
    }

    #[test]
    fn a_missing_request_id_is_generated_as_a_uuid_and_an_existing_one_kept() {
        let mut headers = HeaderMap::new();
        ensure_request_id(&mut headers);
        let id = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4: {id}");
        ensure_request_id(&mut headers);
        assert_eq!(headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()), Some(id.as_str()));
    }

    #[test]
    fn request_ids_new_or_forwarded_are_never_indexed_by_hpack() {
        let mut generated = HeaderMap::new();
        ensure_request_id(&mut generated);
        assert!(generated.get(REQUEST_ID).is_some_and(HeaderValue::is_sensitive));
        let mut forwarded = HeaderMap::new();
        forwarded.insert(REQUEST_ID, HeaderValue::from_static("from-the-client"));
        ensure_request_id(&mut forwarded);
        let id = forwarded.get(REQUEST_ID);
        assert!(id.is_some_and(HeaderValue::is_sensitive));
        assert_eq!(id.map(HeaderValue::as_bytes), Some(&b"from-the-client"[..]), "the client's id is kept");
    }
}
