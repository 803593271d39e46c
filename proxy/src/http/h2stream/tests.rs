//! `H2Body` on a real `h2` connection (client and server over an in-memory pipe).

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::BodyExt;

use super::H2Body;

/// Serves one connection over an in-memory pipe and returns the server's view of the client's first
/// request (head and body stream), with the client's handle to send more of that body.
async fn served(
    request: Request<()>,
    end: bool,
) -> (http::request::Parts, h2::RecvStream, Option<h2::SendStream<Bytes>>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut connection = h2::server::handshake(server_io).await.expect("server handshake");
        let (req, _respond) = connection.accept().await.expect("a request").expect("no error");
        tokio::spawn(async move { while connection.accept().await.is_some() {} });
        req
    });
    let (sender, connection) = h2::client::handshake(client_io).await.expect("client handshake");
    tokio::spawn(connection);
    let mut sender = sender.ready().await.expect("ready");
    let (_response, upload) = sender.send_request(request, end).expect("send");
    let (parts, body) = server.await.expect("server").into_parts();
    (parts, body, (!end).then_some(upload))
}

#[tokio::test]
async fn a_served_request_body_announces_what_its_content_length_says_is_left_to_read() {
    let request = Request::post("http://app/").header("content-length", "100").body(()).expect("request");
    let (parts, stream, upload) = served(request, false).await;
    let mut upload = upload.expect("the body is open");
    let mut body = H2Body::served(stream, &parts.headers);
    assert_eq!(body.size_hint().exact(), Some(100));
    upload.send_data(Bytes::from(vec![b'a'; 40]), false).expect("data");
    let chunk = body.frame().await.expect("a frame").expect("no error").into_data().expect("data");
    assert_eq!(chunk.len(), 40);
    assert_eq!(body.size_hint().exact(), Some(60));
}

#[tokio::test]
async fn a_served_request_that_ended_with_its_head_has_an_empty_body_and_one_without_a_length_no_exact_size() {
    let (parts, stream, _) = served(Request::get("http://app/").body(()).expect("request"), true).await;
    let body = H2Body::served(stream, &parts.headers);
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    let (parts, stream, _upload) = served(Request::post("http://app/").body(()).expect("request"), false).await;
    assert_eq!(H2Body::served(stream, &parts.headers).size_hint().exact(), None);
}
