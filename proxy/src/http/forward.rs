//! Handling one HTTP request: find the virtual host and route, then answer locally (redirect, direct
//! response, no route) or forward to an endpoint picked from the route's cluster.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use trellis_api::proxy_config::{HashKey, UnknownDestinations, UpstreamTls};

use super::SHARE_SCALE;
use super::failure::UpstreamFailure;
use super::h1pool::H1Pool;
use super::headers::{Message, ensure_request_id, find_by_scan, is_upgrade, set_orig_proto, strip_hop_by_hop};
use super::mirror::{self, MirrorTarget};
use super::pool::ConnOptions;
use super::{Body, Shared, Side, full, local_response, upgrade};
use crate::access_log;
use crate::balance::hash_bytes;
use crate::breaker::{Guarded, Overflow, Permit};
use crate::metrics::{ClusterMetrics, FaultKind, MirrorResult, ResponseFlag};
use crate::outlier::Outcome;
use crate::retry::{self, ClusterParts, Tried};
use crate::route::{Action, CompiledRoute, RequestParts, pick_weighted, redirect_location, select};
use crate::state::{ClusterState, Compiled, PASSTHROUGH_CLUSTER, VhostState};
use crate::tls::{PeerIdentity, TlsConfigs};

/// A mesh TLS connection's configs and the identity the endpoint must present (empty: any mesh one).
#[derive(Debug, Clone)]
pub struct MeshTarget<'a> {
    pub configs: Arc<TlsConfigs>,
    pub expected: &'a str,
}

/// Latency recorded for an endpoint whose request failed (connect error, reset), so peak-EWMA and
/// least-request stop preferring an endpoint that fails fast.
pub const FAILURE_PENALTY: std::time::Duration = std::time::Duration::from_secs(1);

/// Facts of the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Context {
    pub side: Side,
    pub peer: SocketAddr,
    /// The original destination (capture listeners), the CONNECT target, or the listener address.
    pub destination: SocketAddr,
    /// The client proxy's identity, when the connection came over mesh TLS.
    pub peer_identity: Option<Arc<PeerIdentity>>,
}

impl Context {
    /// A plaintext connection's context.
    pub fn plain(side: Side, peer: SocketAddr, destination: SocketAddr) -> Self {
        Self { side, peer, destination, peer_identity: None }
    }
}

/// Routes and answers one request that arrived on an outbound or gateway listener.
pub(super) async fn routed(
    shared: &Shared,
    compiled: &Compiled,
    mut req: Request<Body>,
    cx: Context,
) -> Response<Body> {
    let host_text = super::authority::HostText::of(&req);
    // HTTP/2 names the host in `:authority`; routing, redirects and the upstream see it as `Host`.
    // (A request whose host text came from its `Host` header has one: no second lookup.)
    if let super::authority::HostText::Uri(authority) = &host_text
        && !req.headers().contains_key(HOST)
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(HOST, value);
    }
    let (host, port) = super::authority::split(host_text.as_str(), cx.destination.port());
    let table = match cx.side {
        Side::Gateway => compiled.gateway.get(&cx.destination.port()),
        _ => Some(&compiled.outbound),
    };
    let vhost = table.and_then(|t| t.by_authority(host, port).or_else(|| t.by_address(cx.destination)));
    let Some(vhost) = vhost else {
        return match (cx.side, compiled.unknown_destinations) {
            (Side::Outbound, UnknownDestinations::Passthrough) => passthrough(shared, compiled, req, cx).await,
            (Side::Outbound, UnknownDestinations::Refuse) => {
                compiled.passthrough.request(502, 0.0);
                local_response(StatusCode::BAD_GATEWAY, "destination not in the mesh registry")
            }
            _ => not_found("no virtual host for this authority"),
        };
    };
    forward_routed(shared, compiled, vhost, req, cx, host).await
}

async fn forward_routed(
    shared: &Shared,
    compiled: &Compiled,
    vhost: &VhostState,
    req: Request<Body>,
    cx: Context,
    host: &str,
) -> Response<Body> {
    let parts = RequestParts {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        authority: host,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        headers: req.headers(),
        port: vhost.port,
        source_labels: compiled.node_labels(),
    };
    let Some(route) = select(&vhost.routes, &parts) else {
        return not_found("no route matched");
    };
    let mut delayed = false;
    if let Some(faults) = &route.faults {
        let injected = faults.draw();
        if let Some(delay) = injected.delay {
            shared.metrics.fault_injected(FaultKind::Delay);
            tokio::time::sleep(delay).await;
            delayed = true;
        }
        if let Some(abort) = injected.abort {
            shared.metrics.fault_injected(FaultKind::Abort);
            let mut response = abort.response();
            route.response_headers.apply(response.headers_mut());
            return route_logged(shared, route, delayed, response);
        }
    }
    let response = match &route.action {
        Action::Direct { status, body } => {
            let mut response = Response::new(full(body.clone()));
            *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            route.response_headers.apply(response.headers_mut());
            access_log::detail(&mut response, access_log::details::DIRECT_RESPONSE);
            response
        }
        Action::Redirect { uri, authority, scheme, port, status } => {
            let location = redirect_location(&parts, uri.as_deref(), authority.as_deref(), scheme.as_deref(), *port);
            let mut response = Response::new(full(Vec::new()));
            *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(http::header::LOCATION, value);
            }
            route.response_headers.apply(response.headers_mut());
            access_log::detail(&mut response, access_log::details::DIRECT_RESPONSE);
            response
        }
        Action::Forward { targets, total_weight, rewrite } => {
            let Some(target) = pick_weighted(targets, *total_weight, fastrand::u64(..)) else {
                return local_response(StatusCode::SERVICE_UNAVAILABLE, "route has no destination");
            };
            let cluster = compiled.cluster(target.cluster);
            let new_path = route.rewritten_path(&parts).map(|path| match parts.query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            });
            let hash = request_hash(cluster, &req, cx.peer);
            let mut req = req;
            if let Some(path_and_query) = new_path
                && let Ok(pq) = PathAndQuery::try_from(path_and_query)
            {
                let mut uri_parts = req.uri().clone().into_parts();
                uri_parts.path_and_query = Some(pq);
                if let Ok(uri) = Uri::from_parts(uri_parts) {
                    *req.uri_mut() = uri;
                }
            }
            if let Some(authority) = rewrite.as_ref().and_then(|r| r.authority.clone()) {
                req.headers_mut().insert(HOST, authority);
            }
            // Envoy applies the most specific level first, so the route's edits win over the destination's.
            target.request_headers.apply(req.headers_mut());
            route.request_headers.apply(req.headers_mut());
            if !route.mirrors.is_empty() {
                req = mirror_request(shared, compiled, &route.mirrors, req);
            }
            let upstream = ClusterUpstream { shared, cluster, hash };
            let parts = ClusterParts { limits: &cluster.retry, metrics: &cluster.metrics };
            let mut response = retry::forward(&route.resilience, parts, &upstream, req).await;
            target.response_headers.apply(response.headers_mut());
            route.response_headers.apply(response.headers_mut());
            response
        }
    };
    route_logged(shared, route, delayed, response)
}

/// Adds what the access log wants from the route to its response: `DI` when a fault delayed the
/// request, and the route's name when the log is on.
fn route_logged(shared: &Shared, route: &CompiledRoute, delayed: bool, mut response: Response<Body>) -> Response<Body> {
    if delayed {
        access_log::add_flag(&mut response, ResponseFlag::DI);
    }
    if shared.store.access_log.is_on() {
        response.extensions_mut().insert(access_log::RouteName(route.name.clone()));
    }
    response
}

/// The 404 of a request no virtual host or route matched (Envoy's `NR`).
fn not_found(message: &'static str) -> Response<Body> {
    let mut response = local_response(StatusCode::NOT_FOUND, message);
    access_log::flag(&mut response, ResponseFlag::NR, access_log::details::ROUTE_NOT_FOUND);
    response
}

/// Sends copies of `req` to the mirrors whose share it falls in, in tasks of their own, and returns
/// the request to forward (its body teed when there are copies).
fn mirror_request(shared: &Shared, compiled: &Compiled, mirrors: &[MirrorTarget], req: Request<Body>) -> Request<Body> {
    let fired: Vec<_> = mirrors.iter().filter(|m| m.fires(fastrand::u32(..SHARE_SCALE))).collect();
    if fired.is_empty() {
        return req;
    }
    let (parts, body) = req.into_parts();
    let (body, copies) = mirror::tee(body, fired.len());
    for (target, copy) in fired.into_iter().zip(copies) {
        let mut copy_parts = mirror::copy_parts(&parts);
        mirror::strip_for_copy(&mut copy_parts.headers);
        let request = Request::from_parts(copy_parts, copy.body);
        let cluster = compiled.cluster(target.cluster).clone();
        let shared = shared.clone();
        let mut lost = copy.lost;
        shared.metrics.mirrored(MirrorResult::Sent);
        tokio::spawn(async move {
            let exchange = async {
                let response = to_cluster(&shared, &cluster, request, None, &mut Tried::none()).await;
                // Drained so a keep-alive connection can carry the next copy; the answer is dropped.
                let _ = response.into_body().collect().await;
            };
            tokio::select! {
                finished = tokio::time::timeout(mirror::MIRROR_TIMEOUT, exchange) => {
                    if finished.is_err() {
                        shared.metrics.mirrored(MirrorResult::Abandoned);
                    }
                }
                () = async {
                    // A sender gone without marking the copy lost finished the body: never fires.
                    if lost.wait_for(|lost| *lost).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => shared.metrics.mirrored(MirrorResult::Abandoned),
            }
        });
    }
    Request::from_parts(parts, body)
}

/// The consistent-hash input of a request, when the cluster balances by one.
fn request_hash<B>(cluster: &ClusterState, req: &Request<B>, peer: SocketAddr) -> Option<u64> {
    match cluster.hash_key()? {
        HashKey::Header(name) => req.headers().get(name.as_str()).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie { name, .. } => req
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(name.as_str()).and_then(|r| r.strip_prefix('=')))
            .map(|v| hash_bytes(v.as_bytes())),
        HashKey::SourceIp => Some(match peer.ip() {
            std::net::IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        }),
        HashKey::QueryParameter(name) => req
            .uri()
            .query()
            .and_then(|q| {
                q.split('&').find_map(|pair| pair.strip_prefix(name.as_str()).and_then(|r| r.strip_prefix('=')))
            })
            .map(|v| hash_bytes(v.as_bytes())),
    }
}

/// A route's cluster as the retry loop sees it.
struct ClusterUpstream<'a> {
    shared: &'a Shared,
    cluster: &'a ClusterState,
    hash: Option<u64>,
}

impl retry::Upstream for ClusterUpstream<'_> {
    fn attempt<'a>(
        &'a self,
        req: Request<Body>,
        tried: &'a mut Tried,
    ) -> impl Future<Output = Response<Body>> + Send + 'a {
        to_cluster(self.shared, self.cluster, req, self.hash, tried)
    }
}

/// Sends a request to an endpoint of `cluster` (one the request's earlier attempts did not try, when
/// there is one).
async fn to_cluster(
    shared: &Shared,
    cluster: &ClusterState,
    req: Request<Body>,
    hash: Option<u64>,
    tried: &mut Tried,
) -> Response<Body> {
    use trellis_api::proxy_config::Protocol;
    let declared_h2 = matches!(cluster.config.protocol, Protocol::Http2 | Protocol::Grpc);
    // Circuit breaking comes first, so a request waiting for a connection is not in flight to an
    // endpoint. An HTTP/1.1 request counts as a whole connection even when it rides HTTP/2 to a proxy.
    let permit = match &cluster.breaker {
        None => None,
        Some(breaker) => match breaker.admit(declared_h2 || req.version() == Version::HTTP_2).await {
            Ok(permit) => Some(permit),
            Err(Overflow) => {
                tracing::debug!(cluster = %cluster.config.name, "circuit breaker rejected a request (UO)");
                cluster.metrics.overflowed();
                cluster.metrics.request(503, 0.0);
                let mut response = super::overflow_response();
                access_log::upstream(&mut response, None, &cluster.config.name);
                return response;
            }
        },
    };
    let Some(pick) = tried.pick(&cluster.balancer, hash) else {
        cluster.metrics.request(503, 0.0);
        let mut response = local_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
        access_log::flag(&mut response, ResponseFlag::UH, access_log::details::NO_HEALTHY_UPSTREAM);
        access_log::upstream(&mut response, None, &cluster.config.name);
        return response;
    };
    let meshed = pick.endpoint().meshed;
    // Declared HTTP/2 and gRPC go out as HTTP/2; an undeclared protocol follows the downstream one.
    let h2 = meshed || declared_h2 || (cluster.config.protocol == Protocol::Detect && req.version() == Version::HTTP_2);
    let mtls = match mesh_tls(shared, &cluster.config.tls, meshed, pick.identity()) {
        Ok(mtls) => mtls,
        Err(message) => {
            cluster.metrics.request(503, 0.0);
            return local_response(StatusCode::SERVICE_UNAVAILABLE, message);
        }
    };
    let started = Instant::now();
    let conn = ClusterConn { options: &cluster.connections, h1: cluster.h1.as_ref(), permit };
    let upstream = Upstream::Mesh { h2, meshed };
    let (mut response, finished) =
        send(shared, req, started, pick.addr, upstream, mtls, &cluster.metrics, Some(conn)).await;
    // Which endpoint answered: for the access log, and for the flag metrics of a failed exchange.
    if shared.store.access_log.is_on() || UpstreamFailure::on(&response).is_some() {
        access_log::upstream(&mut response, Some(pick.addr), &cluster.config.name);
    }
    // A failed attempt must not look fast to latency-aware balancing.
    let failed = find_by_scan(response.headers(), &super::PROXY_ERROR).is_some();
    let rtt = finished.duration_since(started);
    pick.record_latency_at(if failed { FAILURE_PENALTY.max(rtt) } else { rtt }, finished);
    if let Some(detector) = &cluster.outlier {
        let outcome = match UpstreamFailure::on(&response) {
            Some(_) => Outcome::LocalFailure,
            None => Outcome::Status(response.status().as_u16()),
        };
        detector.record(&cluster.balancer, &pick, outcome);
    }
    response
}

/// What a cluster adds to sending one request: how its connections are made and kept, its own HTTP/1.1
/// pool, and the circuit-breaker permit the response body holds until it ends.
pub(super) struct ClusterConn<'a> {
    options: &'a ConnOptions,
    h1: Option<&'a Arc<H1Pool>>,
    permit: Option<Permit>,
}

/// Whether a connection to an endpoint uses mesh TLS: always under ISTIO_MUTUAL, to meshed endpoints
/// under auto mTLS when this proxy has a certificate, never otherwise.
pub fn mesh_tls<'a>(
    shared: &Shared,
    tls: &UpstreamTls,
    meshed: bool,
    expected: &'a str,
) -> Result<Option<MeshTarget<'a>>, &'static str> {
    let wanted = match tls {
        UpstreamTls::IstioMutual => true,
        UpstreamTls::Auto => meshed,
        UpstreamTls::Disable | UpstreamTls::Simple { .. } => false,
    };
    if !wanted {
        return Ok(None);
    }
    match shared.tls.current() {
        Some(configs) => Ok(Some(MeshTarget { configs, expected })),
        None if matches!(tls, UpstreamTls::IstioMutual) => Err("ISTIO_MUTUAL but this proxy has no certificate yet"),
        None => Ok(None),
    }
}

/// Forwards to the original destination of a connection whose authority the mesh does not know.
async fn passthrough(shared: &Shared, compiled: &Compiled, req: Request<Body>, cx: Context) -> Response<Body> {
    if cx.destination.ip().is_unspecified() {
        return local_response(StatusCode::BAD_GATEWAY, "cannot resolve destination");
    }
    if shared.settings.is_own_listener(cx.destination) {
        return local_response(StatusCode::BAD_GATEWAY, "destination is this proxy's own listener");
    }
    let h2 = req.version() == Version::HTTP_2;
    let upstream = Upstream::Mesh { h2, meshed: false };
    let (mut response, _) =
        send(shared, req, Instant::now(), cx.destination, upstream, None, &compiled.passthrough, None).await;
    if shared.store.access_log.is_on() || UpstreamFailure::on(&response).is_some() {
        access_log::upstream(&mut response, Some(cx.destination), PASSTHROUGH_CLUSTER);
    }
    response
}

/// The passthrough source address of the family of `target`.
pub fn passthrough_source(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::from((super::PASSTHROUGH_SOURCE_V4, 0)),
        SocketAddr::V6(_) => SocketAddr::from((super::PASSTHROUGH_SOURCE_V6, 0)),
    }
}

/// Which pool a request goes out on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Upstream {
    /// Another proxy (`meshed`), a service outside the mesh, or a local-mode application.
    Mesh { h2: bool, meshed: bool },
    /// The application behind the inbound capture, from the passthrough source address.
    App { h2: bool },
}

/// Sends `req` to `addr` over a pooled connection (mesh TLS when `mtls` says so) and returns the
/// upstream's response, and when it came (its head; or when the exchange failed; `started` itself
/// for a request refused before it went out). `started` is when the caller began the exchange: the
/// duration metric runs from it (one clock read serves both).
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    shared: &Shared,
    mut req: Request<Body>,
    started: Instant,
    addr: SocketAddr,
    upstream: Upstream,
    mtls: Option<MeshTarget<'_>>,
    metrics: &ClusterMetrics,
    cluster: Option<ClusterConn<'_>>,
) -> (Response<Body>, Instant) {
    let (options, cluster_h1, mut permit) = match cluster {
        Some(ClusterConn { options, h1, permit }) => (Some(options), h1, permit),
        None => (None, None, None),
    };
    let (h2, app, meshed) = match upstream {
        Upstream::Mesh { h2, meshed } => (h2, false, meshed),
        Upstream::App { h2 } => (h2, true, false),
    };
    let upgrading = is_upgrade(req.version(), req.headers());
    let arrived_h1 = req.version() != Version::HTTP_2;
    // The request is edited where it lies, never taken apart and rebuilt: every move of a request
    // (or response) is a copy of a few hundred bytes, on every request.
    // A request that will be answered by an upgrade keeps its downstream half for the tunnel.
    let downstream_upgrade = if upgrading { req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() } else { None };
    strip_hop_by_hop(req.headers_mut(), Message::Request, upgrading);
    ensure_request_id(req.headers_mut());
    let use_h2 = (h2 || mtls.is_some()) && !upgrading;
    // HTTP/2 carries the host as `:authority` (below); HTTP/1.1 needs a `Host`.
    if !use_h2
        && !req.headers().contains_key(HOST)
        && let Some(value) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, value);
    }
    set_orig_proto(req.headers_mut(), meshed && use_h2 && arrived_h1);
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let source = app.then(|| passthrough_source(addr));
    let result = if let (Some(mtls), true) = (&mtls, upgrading) {
        // An upgrade cannot ride HTTP/2 between proxies: one mesh TLS connection of its own.
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
        Box::pin(super::pool::send_http1_once(addr, mtls, req)).await.map(|response| response.map(super::boxed))
    } else if use_h2 {
        // HTTP/2 names the host in `:authority` (the service name the client used), not in `Host`.
        let authority = match req.headers_mut().remove(HOST) {
            Some(host) => Authority::try_from(host.as_bytes()).ok(),
            None => req.uri().authority().cloned(),
        };
        let authority = match authority {
            Some(authority) => authority,
            None => match Authority::try_from(addr.to_string()) {
                Ok(authority) => authority,
                Err(_) => return (local_response(StatusCode::BAD_REQUEST, "invalid request target"), started),
            },
        };
        match Uri::builder().scheme(Scheme::HTTP).authority(authority).path_and_query(path).build() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return (local_response(StatusCode::BAD_REQUEST, "invalid request target"), started),
        }
        *req.version_mut() = Version::HTTP_2;
        match options {
            Some(options) => {
                shared.clients.h2.send_with(addr, source, mtls.as_ref(), req, options, permit.as_mut()).await
            }
            None => shared.clients.h2.send(addr, source, mtls.as_ref(), req).await,
        }
    } else {
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::from(path);
        // `maxRequestsPerConnection: 1`: an HTTP/1.1 connection is not reused, so the request gets one
        // of its own, and the circuit breaker learns when it is established.
        if let Some(options) = options.filter(|o| o.max_requests_per_connection == Some(1) && !upgrading) {
            req.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            Box::pin(super::pool::send_http1_fresh(addr, source, options.connect_timeout, req, permit.as_mut()))
                .await
                .map(|response| response.map(super::boxed))
        } else {
            let pool = match cluster_h1 {
                Some(pool) => pool,
                None => &shared.clients.h1,
            };
            pool.send(addr, source, req).await
        }
    };
    // Paths that do not report their connection (pooled HTTP/1.1, upgrades) have one by now.
    if let Some(permit) = permit.as_mut() {
        permit.connected();
    }
    let finished = Instant::now();
    let elapsed = finished.duration_since(started).as_secs_f64();
    let response = match result {
        Ok(mut response) => {
            metrics.request(response.status().as_u16(), elapsed);
            let upgraded = upgrading && response.status() == StatusCode::SWITCHING_PROTOCOLS;
            if upgraded && let Some(downstream) = downstream_upgrade {
                let tunnel = upgrade::Tunnel::new(&shared.drain, metrics);
                upgrade::splice_tunnel(downstream, hyper::upgrade::on(&mut response), tunnel);
            }
            strip_hop_by_hop(response.headers_mut(), Message::Response, upgraded);
            if arrived_h1 && !upgraded {
                *response.version_mut() = Version::HTTP_11;
            }
            if let Some(permit) = permit {
                super::wrap_body(&mut response, |body| Guarded::new(body, permit).boxed());
            }
            response
        }
        Err(err) => {
            let failure = UpstreamFailure::of(&err);
            tracing::debug!(error = %err, upstream = %addr, ?failure, "upstream request failed");
            metrics.request(503, elapsed);
            let mut response = local_response(StatusCode::SERVICE_UNAVAILABLE, "upstream connect error or disconnect");
            response.extensions_mut().insert(failure);
            response
        }
    };
    (response, finished)
}
