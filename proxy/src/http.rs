//! The HTTP path: one server per accepted connection (hyper's for HTTP/1, `h2`'s for HTTP/2, see
//! [`serve`]), routing through the compiled config, and pooled clients to upstreams (hyper's HTTP/1,
//! `h2`'s HTTP/2).
//!
//! Between two Trellis proxies requests travel over pooled HTTP/2 connections: the outbound side marks
//! a request that arrived as HTTP/1.1 with [`ORIG_PROTO_HEADER`], and the inbound side hands it to the
//! application as HTTP/1.1 again. Bodies stream both ways and trailers pass through, so gRPC works.

mod authority;
mod batch;
mod failure;
mod fault;
mod forward;
pub mod h1pool;
mod h2stream;
pub(crate) mod headers;
mod inbound;
mod mirror;
pub mod pool;
mod server;
mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub use failure::UpstreamFailure;
pub use fault::{Faults, SHARE_SCALE, share_of};
pub use forward::{Context, MeshTarget, mesh_tls, passthrough_source};
pub(crate) use headers::ensure_request_id;
pub use headers::{ORIG_PROTO_HEADER, REQUEST_ID_HEADER};
pub use mirror::{MirrorTarget, shadow_authority};
pub(crate) use server::{Activity, until_closed};
pub use server::{H2_MAX_CONCURRENT_STREAMS, Version, serve};

use crate::access_log;
use crate::drain;
use crate::metrics::{Metrics, ResponseFlag};
use crate::settings::Settings;
use crate::state::Store;
use crate::tls::MeshTls;

/// Body type of every request and response the proxy produces.
pub type Body = BoxBody<Bytes, BodyError>;

/// Error of a [`Body`]: hyper's (a downstream or HTTP/1.1 upstream connection), h2's (an HTTP/2
/// upstream stream), or none.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// `body` as a [`Body`] (one allocation; not for a body that already is one).
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError>,
{
    body.map_err(Into::into).boxed()
}

/// The future `make` returns, pinned in a box it is built in ([`trellis_fastmem::boxed_in_place`]):
/// `Box::pin(future)` built a request's whole future (about 9 KiB, of which a new one uses only its
/// arguments) on the stack and copied all of it into the allocation, for every request.
#[inline(always)]
pub(crate) fn in_box<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(trellis_fastmem::boxed_in_place(make))
}

/// Source address of inbound connections to the application (IPv4); the interception rules exempt
/// it, as Istio's do for 127.0.0.6.
pub const PASSTHROUGH_SOURCE_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);
/// Source address of inbound connections to the application (IPv6); `init` adds it to `lo`.
pub const PASSTHROUGH_SOURCE_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
/// How long connecting to an upstream may take before the request fails with 503.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Header sent with every response the proxy itself generates (no route, no upstream...).
pub const PROXY_ERROR_HEADER: &str = "x-trellis-error";
/// [`PROXY_ERROR_HEADER`] as a header name (looked for on every response: no parsing).
pub const PROXY_ERROR: http::HeaderName = http::HeaderName::from_static(PROXY_ERROR_HEADER);
/// Header on the 503 the proxy answers when a cluster's circuit breaker rejects a request (Envoy's
/// `x-envoy-overloaded`).
pub const OVERLOADED_HEADER: &str = "x-trellis-overloaded";
/// Idle timeout of a cluster's own HTTP/1.1 pool when its rule sets a connect timeout but no idle one
/// (the proxy's default, `--pool-idle-timeout`).
pub const CLUSTER_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What every connection handler shares: config, metrics, clients, settings, mesh TLS, drain.
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub clients: Clients,
    pub tls: Arc<MeshTls>,
    pub drain: drain::Watch,
}

/// Pooled upstream connections of one worker: HTTP/1.1 keep-alive connections ([`h1pool::H1Pool`]),
/// and multiplexed HTTP/2 connections ([`pool::H2Pool`]). Connections to the application behind the
/// inbound listener come from the passthrough source address, so the interception rules let them
/// through instead of capturing them again (the pools keep them apart by source address).
#[derive(Debug, Clone)]
pub struct Clients {
    pub h1: Arc<h1pool::H1Pool>,
    pub h2: Arc<pool::H2Pool>,
}

impl Clients {
    /// Pools whose idle connections close after `idle` (HTTP/2 ones once [`pool::H2Pool::sweep`] runs).
    pub fn new(idle: Duration) -> Self {
        Self {
            h1: Arc::new(h1pool::H1Pool::new(UPSTREAM_CONNECT_TIMEOUT, idle)),
            h2: Arc::new(pool::H2Pool::new(UPSTREAM_CONNECT_TIMEOUT)),
        }
    }
}

/// The HTTP/1.1 pool of a cluster whose connection-pool settings give it its own connect or idle
/// timeout. Shared by every worker, like the cluster.
pub fn cluster_h1_pool(options: &pool::ConnOptions) -> Arc<h1pool::H1Pool> {
    let idle = options.idle_timeout.unwrap_or(CLUSTER_POOL_IDLE_TIMEOUT);
    Arc::new(h1pool::H1Pool::new(options.connect_timeout, idle))
}

/// The 503 of a request a cluster's circuit breaker rejected.
pub fn overflow_response() -> Response<Body> {
    let mut response = local_response(StatusCode::SERVICE_UNAVAILABLE, "upstream overflow: circuit breaker open");
    response.headers_mut().insert(OVERLOADED_HEADER, http::HeaderValue::from_static("true"));
    access_log::flag(&mut response, ResponseFlag::UO, access_log::details::OVERFLOW);
    response
}

/// A small body made by the proxy.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

/// A response the proxy generates itself, marked with [`PROXY_ERROR_HEADER`] when it is an error.
pub fn local_response(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    if status.is_client_error() || status.is_server_error() {
        response.headers_mut().insert(PROXY_ERROR, http::HeaderValue::from_static(message));
    }
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}

/// Routes and answers one request, under the access log: the outermost layer, which reads the flags
/// the request path left on the response (and, when the log is on, writes the request's line when
/// the response ends). It never fails; the `Result` is what hyper's service wants, so a connection
/// handler can box this future itself (`in_box`), with no layer around it.
///
/// The forwarding future is several KiB: boxed as it is made, it exists only while a request is in
/// flight, in one allocation. Each layer of `async fn` the request passes through copies it (a few
/// hundred bytes) into the next one's state, so the layers are few.
pub async fn logged<S: std::ops::Deref<Target = Shared>>(
    shared: S,
    mut req: Request<Body>,
    cx: Context,
) -> Result<Response<Body>, Infallible> {
    let shared = &*shared;
    let side = cx.side;
    let pending = access_log::Pending::start(&shared.store.access_log, &mut req, &cx);
    let mut response = match shared.store.current() {
        None => local_response(StatusCode::SERVICE_UNAVAILABLE, "no config loaded"),
        Some(compiled) => match side {
            Side::Inbound => inbound::inbound(shared, &compiled, req, cx).await,
            Side::Outbound | Side::Gateway => forward::routed(shared, &compiled, req, cx).await,
        },
    };
    access_log::finish(&shared.metrics, side, pending, &mut response);
    Ok(response)
}

/// Replaces `response`'s body with `wrap` of it, in place: a response moved to be rebuilt is a copy
/// of its head, on every request.
pub(crate) fn wrap_body(response: &mut Response<Body>, wrap: impl FnOnce(Body) -> Body) {
    // The placeholder is an empty body: a zero-sized box, no allocation.
    let body = std::mem::take(response.body_mut());
    *response.body_mut() = wrap(body);
}

/// Which listener a connection arrived on, and so how its requests are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The workload's own outgoing traffic, or explicit-proxy traffic.
    Outbound,
    /// Traffic for the workload; forwarded to the application.
    Inbound,
    /// A gateway port.
    Gateway,
}
