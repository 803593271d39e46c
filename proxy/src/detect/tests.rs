use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use trellis_api::proxy_config::Protocol as DeclaredProtocol;

use super::*;

/// A ClientHello captured from `openssl s_client -servername api.example.com -alpn h2,http/1.1`
/// (OpenSSL 3.0): one record, TLS 1.3 with TLS 1.2 fallback, 339 bytes.
const OPENSSL_CLIENT_HELLO_HEX: &[&str] = &[
    "160301014e0100014a030317702f4cbcb1fa7d4f59a5b4652513097843d479770f17c6908b6428529155ab20",
    "4aac66ca831c861624a0385f601ac8fa4bee355e1e8471da696c36f175c12233003e130213031301c02cc030",
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d",
    "003c0035002f00ff010000c300000014001200000f6170692e6578616d706c652e636f6d000b000403000102",
    "000a00160014001d0017001e0019001801000101010201030104002300000010000e000c0268320868747470",
    "2f312e310016000000170000000d002a0028040305030603080708080809080a080b08040805080604010501",
    "0601030303010302040205020602002b0009080304030303020301002d00020101003300260024001d002090",
    "6aaaa43bbe6d69c8074975918ec6b9f14a4a2180933930d635f9988244bc4f",
];

fn openssl_client_hello() -> Vec<u8> {
    let hex: String = OPENSSL_CLIENT_HELLO_HEX.concat();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit")).collect()
}

fn tls(sni: Option<&str>, alpn: &[&str]) -> Protocol {
    Protocol::Tls { sni: sni.map(str::to_owned), alpn: alpn.iter().map(|p| (*p).to_owned()).collect() }
}

fn tls_unknown() -> Protocol {
    tls(None, &[])
}

fn with_u16_len(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len()).expect("length fits").to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend(with_u16_len(data));
    out
}

fn sni_extension(name: &str) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend(with_u16_len(name.as_bytes()));
    extension(0, &with_u16_len(&entry))
}

fn alpn_extension(protocols: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for protocol in protocols {
        list.push(u8::try_from(protocol.len()).expect("length fits"));
        list.extend_from_slice(protocol.as_bytes());
    }
    extension(16, &with_u16_len(&list))
}

/// A ClientHello handshake message (no record header) built by hand with the given extensions.
fn client_hello_message(extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]); // random
    body.push(0); // empty session id
    body.extend(with_u16_len(&[0x13, 0x01, 0x13, 0x02])); // two cipher suites
    body.extend([1, 0]); // null compression
    body.extend(with_u16_len(&extensions.concat()));
    let mut message = vec![0x01];
    message.extend(&u32::try_from(body.len()).expect("length fits").to_be_bytes()[1..]);
    message.extend(body);
    message
}

/// `message` in handshake records of at most `fragment` bytes each.
fn records(message: &[u8], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(fragment) {
        out.extend([0x16, 0x03, 0x01]);
        out.extend(with_u16_len(chunk));
    }
    out
}

fn client_hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
    let mut extensions = vec![extension(43, &[2, 0x03, 0x04])]; // supported_versions
    if let Some(name) = sni {
        extensions.push(sni_extension(name));
    }
    if !alpn.is_empty() {
        extensions.push(alpn_extension(alpn));
    }
    records(&client_hello_message(&extensions), 16_384)
}

// Pure classification.

#[test]
fn a_known_method_and_a_space_is_http1() {
    for method in HTTP1_METHODS {
        assert_eq!(classify(method), Some(Protocol::Http1), "{method:?}");
    }
    assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
}

#[test]
fn a_method_without_its_space_is_undecided() {
    assert_eq!(classify(b""), None);
    assert_eq!(classify(b"G"), None);
    assert_eq!(classify(b"GET"), None);
    assert_eq!(classify(b"PROPFIN"), None);
    assert_eq!(classify(b"P"), None);
}

#[test]
fn bytes_that_cannot_start_a_method_are_opaque_at_once() {
    assert_eq!(classify(b"\0"), Some(Protocol::Opaque));
    assert_eq!(classify(b"{"), Some(Protocol::Opaque));
    assert_eq!(classify(b"get / HTTP/1.1"), Some(Protocol::Opaque));
    assert_eq!(classify(b"GETX"), Some(Protocol::Opaque));
    assert_eq!(classify(b"GET/"), Some(Protocol::Opaque));
    assert_eq!(classify(b"EHLO example.com"), Some(Protocol::Opaque));
    assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
}

#[test]
fn the_http2_preface_is_http2_and_its_prefixes_are_undecided() {
    assert_eq!(classify(HTTP2_PREFACE), Some(Protocol::Http2));
    let mut with_frames = HTTP2_PREFACE.to_vec();
    with_frames.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(classify(&with_frames), Some(Protocol::Http2));
    for len in 1..HTTP2_PREFACE.len() {
        assert_eq!(classify(&HTTP2_PREFACE[..len]), None, "{len} bytes");
    }
}

#[test]
fn a_pri_request_that_is_not_the_http2_preface_is_opaque() {
    assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Opaque));
    assert_eq!(classify(b"PRIX"), Some(Protocol::Opaque));
}

#[test]
fn a_captured_openssl_client_hello_gives_its_sni_and_alpn() {
    assert_eq!(classify(&openssl_client_hello()), Some(tls(Some("api.example.com"), &["h2", "http/1.1"])));
}

#[test]
fn every_proper_prefix_of_a_client_hello_is_undecided() {
    let hello = openssl_client_hello();
    for len in 1..hello.len() {
        assert_eq!(classify(&hello[..len]), None, "{len} bytes");
    }
}

#[test]
fn a_client_hello_cut_short_is_tls_without_sni_once_no_more_bytes_come() {
    let hello = openssl_client_hello();
    assert_eq!(classify_final(&hello[..1]), Protocol::Opaque);
    for len in 2..hello.len() {
        assert_eq!(classify_final(&hello[..len]), tls_unknown(), "{len} bytes");
    }
}

#[test]
fn a_hand_built_client_hello_gives_its_sni_and_alpn() {
    let hello = client_hello(Some("reviews.default.svc.cluster.local"), &["istio", "h2"]);
    assert_eq!(classify(&hello), Some(tls(Some("reviews.default.svc.cluster.local"), &["istio", "h2"])));
}

#[test]
fn a_client_hello_without_sni_or_alpn_is_tls_with_neither() {
    assert_eq!(classify(&client_hello(None, &[])), Some(tls_unknown()));
}

#[test]
fn a_client_hello_without_extensions_is_tls_with_neither() {
    let mut message = client_hello_message(&[]);
    // Drop the empty extensions block (two length bytes) and fix the handshake length.
    message.truncate(message.len() - 2);
    let body_len = u32::try_from(message.len() - 4).expect("length fits").to_be_bytes();
    message[1..4].copy_from_slice(&body_len[1..]);
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));
}

#[test]
fn the_sni_is_lowercased() {
    let hello = client_hello(Some("Shop.Example.COM"), &[]);
    assert_eq!(classify(&hello), Some(tls(Some("shop.example.com"), &[])));
}

#[test]
fn a_client_hello_split_over_several_records_is_reassembled() {
    let message = client_hello_message(&[sni_extension("db.example.com"), alpn_extension(&["h2"])]);
    for fragment in [1, 3, 7, 40] {
        let split = records(&message, fragment);
        assert_eq!(classify(&split), Some(tls(Some("db.example.com"), &["h2"])), "fragments of {fragment}");
        for len in 1..split.len() {
            assert_eq!(classify(&split[..len]), None, "fragments of {fragment}, {len} bytes");
        }
    }
}

#[test]
fn a_malformed_client_hello_is_tls_without_sni() {
    // Odd cipher suite length.
    let mut message = client_hello_message(&[sni_extension("a.example")]);
    message[4 + 2 + 32 + 1 + 1] = 3;
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));

    // Two server_name extensions.
    let message = client_hello_message(&[sni_extension("a.example"), sni_extension("b.example")]);
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));

    // A host name with a space in it.
    let message = client_hello_message(&[sni_extension("a example")]);
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));

    // An empty ALPN protocol name.
    let message = client_hello_message(&[alpn_extension(&["h2", ""])]);
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));

    // An extension longer than the extensions block.
    let mut message = client_hello_message(&[sni_extension("a.example")]);
    let last = message.len() - 1;
    message.truncate(last);
    let body_len = u32::try_from(message.len() - 4).expect("length fits").to_be_bytes();
    message[1..4].copy_from_slice(&body_len[1..]);
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));
}

#[test]
fn a_handshake_record_that_is_not_a_client_hello_is_tls_without_sni() {
    let mut message = client_hello_message(&[sni_extension("a.example")]);
    message[0] = 2; // ServerHello
    assert_eq!(classify(&records(&message, 16_384)), Some(tls_unknown()));
    // An empty record.
    assert_eq!(classify(&[0x16, 0x03, 0x01, 0, 0]), Some(tls_unknown()));
}

#[test]
fn a_first_byte_of_0x16_without_a_tls_version_is_opaque() {
    assert_eq!(classify(&[0x16]), None);
    assert_eq!(classify(&[0x16, 0x01]), Some(Protocol::Opaque));
}

#[test]
fn a_client_hello_too_big_for_the_bound_is_decided_from_its_header() {
    // A record header and a handshake header announcing a 10 000 byte ClientHello.
    let header = [0x16, 0x03, 0x01, 0x27, 0x14, 0x01, 0x00, 0x27, 0x10];
    assert_eq!(classify(&header), Some(tls_unknown()));
}

#[test]
fn classify_final_treats_undecided_bytes_as_opaque() {
    assert_eq!(classify_final(b""), Protocol::Opaque);
    assert_eq!(classify_final(b"GE"), Protocol::Opaque);
    assert_eq!(classify_final(&HTTP2_PREFACE[..10]), Protocol::Opaque);
    assert_eq!(classify_final(b"GET "), Protocol::Http1);
}

#[test]
fn declared_protocols_and_server_first_ports_skip_detection() {
    assert!(!skips_detection(8080, DeclaredProtocol::Detect));
    assert!(skips_detection(3306, DeclaredProtocol::Detect));
    assert!(skips_detection(25, DeclaredProtocol::Detect));
    for declared in [
        DeclaredProtocol::Http,
        DeclaredProtocol::Http2,
        DeclaredProtocol::Grpc,
        DeclaredProtocol::Tls,
        DeclaredProtocol::Tcp,
    ] {
        assert!(skips_detection(8080, declared), "{declared:?}");
    }
}

// Detection over in-memory streams.

const LONG: Duration = Duration::from_secs(10);

async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read to end");
    out
}

/// Writes `pieces` to `client` with a pause between them, then closes it.
fn send_in_pieces(mut client: DuplexStream, pieces: Vec<Vec<u8>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for piece in pieces {
            client.write_all(&piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test]
async fn an_http1_request_is_detected_and_replayed_exactly() {
    let (mut client, server) = tokio::io::duplex(1024);
    let request = b"GET /productpage HTTP/1.1\r\nHost: bookinfo\r\n\r\n";
    client.write_all(request).await.expect("write");
    drop(client);
    let (detection, mut stream) = detect(server, LONG).await.expect("detect");
    assert_eq!(detection.protocol, Protocol::Http1);
    assert!(!detection.timed_out);
    assert_eq!(read_all(&mut stream).await, request);
}

#[tokio::test]
async fn an_http2_preface_arriving_in_pieces_is_detected() {
    let (client, server) = tokio::io::duplex(1024);
    let mut sent = HTTP2_PREFACE.to_vec();
    sent.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
    let pieces = vec![sent[..3].to_vec(), sent[3..20].to_vec(), sent[20..].to_vec()];
    let writer = send_in_pieces(client, pieces);
    let (detection, mut stream) = detect(server, LONG).await.expect("detect");
    assert_eq!(detection.protocol, Protocol::Http2);
    assert!(!detection.timed_out);
    writer.await.expect("writer task");
    assert_eq!(read_all(&mut stream).await, sent);
}

#[tokio::test]
async fn a_client_hello_arriving_in_pieces_gives_its_sni() {
    let (client, server) = tokio::io::duplex(4096);
    let hello = openssl_client_hello();
    let mut pieces = vec![hello[..1].to_vec(), hello[1..5].to_vec()];
    pieces.extend(hello[5..].chunks(50).map(<[u8]>::to_vec));
    let writer = send_in_pieces(client, pieces);
    let (detection, mut stream) = detect(server, LONG).await.expect("detect");
    assert_eq!(detection.protocol, tls(Some("api.example.com"), &["h2", "http/1.1"]));
    writer.await.expect("writer task");
    assert_eq!(read_all(&mut stream).await, hello);
}

#[tokio::test]
async fn a_silent_client_times_out_quickly_as_opaque() {
    let (_client, server) = tokio::io::duplex(1024);
    let timeout = Duration::from_millis(50);
    let started = std::time::Instant::now();
    let (detection, stream) = detect(server, timeout).await.expect("detect");
    assert_eq!(detection.protocol, Protocol::Opaque);
    assert!(detection.timed_out);
    assert!(detection.elapsed >= timeout, "{:?}", detection.elapsed);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(stream.prefix().is_empty());
}

#[tokio::test]
async fn ambiguous_bytes_at_the_timeout_are_opaque_and_kept() {
    let (mut client, server) = tokio::io::duplex(1024);
    client.write_all(b"GE").await.expect("write");
    let (detection, mut stream) = detect(server, Duration::from_millis(50)).await.expect("detect");
    assert_eq!(detection.protocol, Protocol::Opaque);
    assert!(detection.timed_out);
    client.write_all(b"T / HTTP/1.1\r\n").await.expect("write");
    drop(client);
    assert_eq!(read_all(&mut stream).await, b"GET / HTTP/1.1\r\n");
}

#[tokio::test]
async fn a_client_that_closes_without_sending_is_opaque_without_timing_out() {
    let (client, server) = tokio::io::duplex(1024);
    drop(client);
    let (detection, mut stream) = detect(server, LONG).await.expect("detect");
    assert_eq!(detection.protocol, Protocol::Opaque);
    assert!(!detection.timed_out);
    assert!(read_all(&mut stream).await.is_empty());
}

#[tokio::test]
async fn a_zero_timeout_waits_for_the_first_bytes() {
    let (client, server) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        let mut client = client;
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"POST /x HTTP/1.1\r\n").await.expect("write");
        client
    });
    let (detection, _stream) = detect(server, Duration::ZERO).await.expect("detect");
    assert_eq!(detection.protocol, Protocol::Http1);
    assert!(!detection.timed_out);
    drop(writer.await.expect("writer task"));
}

#[tokio::test]
async fn a_client_hello_that_outgrows_the_bound_is_tls_without_sni_and_loses_no_byte() {
    // About 3 000 bytes of ClientHello in 10 byte records: about 4 500 bytes on the wire.
    let message = client_hello_message(&[sni_extension("big.example"), extension(21, &[0; 3000])]);
    assert!(message.len() + 5 < MAX_DETECT_BYTES);
    let sent = records(&message, 10);
    assert!(sent.len() > MAX_DETECT_BYTES);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(&sent).await.expect("write");
    drop(client);
    let (detection, mut stream) = detect(server, LONG).await.expect("detect");
    assert_eq!(detection.protocol, tls_unknown());
    assert_eq!(stream.prefix().len(), MAX_DETECT_BYTES);
    assert_eq!(read_all(&mut stream).await, sent);
}

// The Prefixed wrapper.

#[tokio::test]
async fn prefixed_replays_its_bytes_through_small_reads_then_reads_on() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut stream = Prefixed::new(Bytes::from_static(b"hello "), server);
    client.write_all(b"world").await.expect("write");
    drop(client);
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).await.expect("read");
        if n == 0 {
            break;
        }
        out.push(byte[0]);
    }
    assert_eq!(out, b"hello world");
    assert!(stream.prefix().is_empty());
}

#[tokio::test]
async fn prefixed_passes_writes_and_shutdown_through() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut stream = Prefixed::new(Bytes::from_static(b"unread"), server);
    stream.write_all(b"reply").await.expect("write");
    stream.flush().await.expect("flush");
    stream.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut client).await, b"reply");
    let (prefix, _inner) = stream.into_parts();
    assert_eq!(&prefix[..], b"unread");
}
