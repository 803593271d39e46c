//! An accepted HTTP/2 connection, served with `h2` directly: each request the client opens a stream
//! for runs in a task of its own, which routes it ([`logged`]), sends the response's head and pipes
//! its body back under HTTP/2 flow control ([`h2stream::pump`], as request bodies go to an upstream).
//!
//! hyper's HTTP/2 server did the same with more around it, for every request: a body wrapper with
//! its own length check and keep-alive recorder, removals of seven connection-specific header names
//! from each response (ours are taken out where the response is forwarded, in one pass over its
//! names, [`strip_hop_by_hop`]), and a state machine between them. Like hyper, it gives a response
//! without a `Date` the proxy's.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Bytes;
use h2::server::{Connection, Handshake, SendResponse};
use h2::{Reason, RecvStream};
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};

use super::RequestCounter;
use crate::http::h2stream::{self, H2Body};
use crate::http::headers::{Message, date_now, strip_hop_by_hop};
use crate::http::{Context, Shared, boxed, in_box, local_response, logged, pool};

/// Most concurrent streams a client may open on one HTTP/2 connection.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest request header list (names, values and 32 bytes per field, as HTTP/2 counts it) a client
/// may send: hyper's server default, which the proxy had before it served HTTP/2 with `h2` itself.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// The answer to a `CONNECT` on an HTTP/2 connection of a capture or gateway listener.
pub const CONNECT_REFUSED: &str = "CONNECT is served only by the explicit-proxy listener";

/// What each request on the connection is routed with.
#[derive(Debug)]
pub(super) struct Streams {
    pub shared: Arc<Shared>,
    pub context: Context,
    pub requests: RequestCounter,
}

impl Streams {
    /// Starts the task that answers `req` on `respond`'s stream.
    fn start(&self, req: Request<RecvStream>, respond: SendResponse<Bytes>) {
        self.requests.started();
        let shared = self.shared.clone();
        let context = self.context.clone();
        // The stream's whole work is one future of several KiB: built in its box, it is never copied,
        // and the task holds a pointer (spawning the future itself copied it twice).
        tokio::spawn(in_box(|| answer(shared, req, context, respond)));
    }
}

/// Routes `req` and sends the response on `respond`'s stream, its body piped after the head. A client
/// that resets the stream before the response is ready cancels the request (its future is dropped).
async fn answer(shared: Arc<Shared>, req: Request<RecvStream>, context: Context, mut respond: SendResponse<Bytes>) {
    if req.method() == Method::CONNECT {
        // A tunnel is the explicit-proxy listener's to open (`--explicit-proxy-addr`); here its bytes
        // would go upstream as an ordinary request's body.
        send_whole(respond, local_response(StatusCode::NOT_IMPLEMENTED, CONNECT_REFUSED)).await;
        return;
    }
    let (parts, body) = req.into_parts();
    let body = boxed(H2Body::served(body, &parts.headers));
    // Pinned where it is made: `select!` then holds a reference, not a copy of its several KiB.
    let routed = std::pin::pin!(logged(shared, Request::from_parts(parts, body), context));
    let response = tokio::select! {
        biased;
        answered = routed => match answered {
            Ok(response) => response,
            Err(never) => match never {},
        },
        reset = poll_fn(|cx| respond.poll_reset(cx)) => {
            tracing::debug!(?reset, "stream reset (or connection lost) before its response");
            return;
        }
    };
    send_whole(respond, response).await;
}

/// Sends `response` on `respond`'s stream: its head, then its body.
async fn send_whole(mut respond: SendResponse<Bytes>, response: Response<crate::http::Body>) {
    let (mut head, body) = response.into_parts();
    // HTTP/2 has no connection-specific headers (RFC 9113 section 8.2.2); `h2` refuses a response with one.
    strip_hop_by_hop(&mut head.headers, Message::Response, false);
    // Every response says when it was made (RFC 9110 section 6.6.1): the proxy's own answers and an
    // upstream's that has no clock get the proxy's, as hyper's HTTP/1 server gives them.
    if !head.headers.contains_key(DATE) {
        head.headers.insert(DATE, date_now());
    }
    let end = body.is_end_stream();
    // A body whose length is known says so (the proxy's own answers), so that a client proxy
    // forwarding it to HTTP/1.1 sends a sized body, not a chunked one.
    if !end
        && let Some(length) = body.size_hint().exact()
        && !head.headers.contains_key(CONTENT_LENGTH)
    {
        head.headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    let mut stream = match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(error = %err, "response head not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !end {
        h2stream::pump(body, &mut stream, Reason::INTERNAL_ERROR).await;
    }
}

/// One HTTP/2 connection being served: a future that ends when the connection closes, starting a
/// task for each stream the client opens.
pub(super) struct H2Connection<S> {
    state: State<S>,
    streams: Streams,
    /// Asked to close: `GOAWAY` once the handshake is done.
    closing: bool,
}

// The serving state is the one a connection lives in, polled for every frame: kept inline (the whole
// connection's future is boxed once by its caller), not behind a second pointer.
#[allow(clippy::large_enum_variant)]
enum State<S> {
    /// Boxed: a handshake is done once, and need not be pinned in the connection's own state.
    Handshaking(Pin<Box<Handshake<S, Bytes>>>),
    Serving(Connection<S, Bytes>),
}

impl<S> std::fmt::Debug for H2Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Handshaking(_) => "handshaking",
            State::Serving(_) => "serving",
        };
        f.debug_struct("H2Connection").field("state", &state).field("closing", &self.closing).finish()
    }
}

impl<S> H2Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Starts the server side's handshake on `io` (the client's preface and both sides' settings).
    pub fn new(io: S, streams: Streams) -> Self {
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .initial_window_size(pool::H2_STREAM_WINDOW)
            .initial_connection_window_size(pool::H2_CONNECTION_WINDOW)
            .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
            .handshake(io);
        Self { state: State::Handshaking(Box::pin(handshake)), streams, closing: false }
    }

    /// Closes the connection gracefully: `GOAWAY`, after which the streams already open are answered
    /// and the connection ends.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        this.closing = true;
        if let State::Serving(connection) = &mut this.state {
            connection.graceful_shutdown();
        }
    }
}

impl<S> Future for H2Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<(), h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Handshaking(handshake) => {
                    let mut connection = ready!(handshake.as_mut().poll(cx))?;
                    if this.closing {
                        connection.graceful_shutdown();
                    }
                    this.state = State::Serving(connection);
                }
                State::Serving(connection) => match ready!(connection.poll_accept(cx)) {
                    Some(Ok((req, respond))) => this.streams.start(req, respond),
                    Some(Err(err)) => return Poll::Ready(Err(err)),
                    None => return Poll::Ready(Ok(())),
                },
            }
        }
    }
}
