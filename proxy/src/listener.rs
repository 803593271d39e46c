//! Accepting connections and sending each down the right path.
//!
//! - Outbound capture (15001): recover the original destination (`SO_ORIGINAL_DST`), detect the
//!   protocol unless the port says it (server-speaks-first ports never wait), then serve HTTP with
//!   routing, route TLS by SNI, or proxy opaque TCP to the destination's cluster (or pass it through).
//! - Inbound capture (15006): detect, then serve HTTP or copy TCP to the application.
//! - Gateway ports: HTTP with routing by the `Host` header.
//! - Explicit proxy: absolute-form requests and `CONNECT`, for workloads that cannot use iptables.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use trellis_api::proxy_config::{InboundMtls, Protocol as Declared, UnknownDestinations};

use crate::access_log::{self, TcpLog};
use crate::authz::{HttpFacts, RequestFacts};
use crate::detect::{self, Detection, Protocol};
use crate::http::{self, Context, MeshTarget, Shared, Side};
use crate::metrics::{ClusterMetrics, ResponseFlag};
use crate::route::pick_weighted;
use crate::state::{BLACKHOLE_CLUSTER, Compiled, PASSTHROUGH_CLUSTER};
use crate::tcp;
use crate::tls::{self, MeshProtocol};

mod explicit;
#[cfg(test)]
mod tests;

pub use explicit::serve_explicit;

/// Accepts connections on `listener` for `side` until the proxy drains.
pub async fn serve(shared: Shared, listener: TcpListener, side: Side) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.drain.signaled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, ?local, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let destination = match original_destination(&stream) {
            Some(destination) => destination,
            // An inbound connection that was not redirected has nowhere to go (Istio's inbound
            // blackhole); forwarding it to the listener's own address would loop.
            None if side == Side::Inbound => match shared.settings.inbound_target {
                // Local mode: the application behind the listener is the destination, so its port
                // selects the inbound policy as an original destination would.
                Some(target) => target,
                None => {
                    tracing::debug!(%peer, "dropping inbound connection without an original destination");
                    continue;
                }
            },
            None => local.unwrap_or(peer),
        };
        tokio::spawn(connection(shared.clone(), stream, Context::plain(side, peer, destination)));
    }
    tracing::debug!(?local, "listener stopped accepting");
}

/// The task of one accepted connection: counted open (for drain and metrics) while it runs.
///
/// Kept small: a connection's task is allocated whole when the connection is accepted and lives as long
/// as it does, so each way of serving it ([`handle_connection`]) boxes its own, larger, state.
pub async fn connection(shared: Shared, stream: TcpStream, cx: Context) {
    let _guard = shared.drain.connection();
    shared.metrics.open_connections.inc();
    handle_connection(&shared, stream, cx).await;
    shared.metrics.open_connections.dec();
}

/// The destination a redirected connection was meant for, if iptables redirected it.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let original = if local.is_ipv4() { socket.original_dst_v4() } else { socket.original_dst_v6() };
    let original = original.ok()?.as_socket()?;
    // Without a redirect the kernel reports the listener's own address.
    (original != local).then_some(original)
}

/// Runs one accepted connection to completion.
///
/// Each way of serving (mesh TLS, a declared protocol, a detected one) is boxed: the connection then
/// holds only the state of the way it is served, allocated once it is known.
pub async fn handle_connection<S>(shared: &Shared, stream: S, cx: Context)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(compiled) = shared.store.current() else {
        tracing::debug!(peer = %cx.peer, "no config loaded; closing connection");
        return;
    };
    let port = cx.destination.port();
    if cx.side == Side::Inbound && cx.peer_identity.is_none() {
        let mode = compiled.inbound_mtls(port);
        // Without a certificate PERMISSIVE can only be plaintext: no need to look for mesh TLS.
        if mode == InboundMtls::Strict || (mode == InboundMtls::Permissive && shared.tls.is_ready()) {
            return Box::pin(inbound_mesh(shared, compiled, stream, cx, mode)).await;
        }
    }
    let declared = declared_protocol(&compiled, &cx);
    if detect::skips_detection(port, declared) {
        return Box::pin(serve_declared(shared, compiled, stream, cx, declared)).await;
    }
    // Boxed as well: detection's timer would otherwise stay in the connection's state after it ends.
    let (detection, stream) = match Box::pin(detect::detect(stream, shared.settings.detect_timeout)).await {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, peer = %cx.peer, "protocol detection failed");
            return;
        }
    };
    Box::pin(serve_detected(shared, compiled, stream, cx, detection)).await;
}

/// Serves a connection whose port declares its protocol.
async fn serve_declared<S>(shared: &Shared, compiled: Arc<Compiled>, stream: S, cx: Context, declared: Declared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match declared {
        Declared::Http | Declared::Http2 | Declared::Grpc => {
            // Each request loads the current config; the connection must not pin this one.
            drop(compiled);
            // An `http` port carries HTTP/1 or HTTP/2 with prior knowledge; `http2` and `grpc` HTTP/2.
            let version = if declared == Declared::Http { http::Version::Sniff } else { http::Version::Http2 };
            http::serve(shared.clone(), stream, cx, version).await
        }
        _ => opaque(shared, &compiled, stream, cx, None).await,
    }
}

/// Serves a connection by the protocol detection found.
async fn serve_detected<S>(shared: &Shared, compiled: Arc<Compiled>, stream: S, cx: Context, detection: Detection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let label = match &detection.protocol {
        Protocol::Http1 => "http1",
        Protocol::Http2 => "http2",
        Protocol::Tls { .. } => "tls",
        Protocol::Opaque => "tcp",
    };
    shared.metrics.detected(label, detection.timed_out);
    match detection.protocol {
        Protocol::Http1 | Protocol::Http2 => {
            drop(compiled);
            let version =
                if detection.protocol == Protocol::Http2 { http::Version::Http2 } else { http::Version::Http1 };
            http::serve(shared.clone(), stream, cx, version).await
        }
        Protocol::Tls { sni, .. } => opaque(shared, &compiled, stream, cx, sni.as_deref()).await,
        Protocol::Opaque => opaque(shared, &compiled, stream, cx, None).await,
    }
}

/// An inbound connection to a port whose mode is STRICT or PERMISSIVE: mesh TLS (told by its ALPN)
/// is terminated and served with the client's identity; plaintext, or an application's own TLS, is
/// refused under STRICT and served as it is under PERMISSIVE.
async fn inbound_mesh<S>(shared: &Shared, compiled: Arc<Compiled>, stream: S, cx: Context, mode: InboundMtls)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (detection, stream) = match detect::detect(stream, shared.settings.detect_timeout).await {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, peer = %cx.peer, "protocol detection failed");
            return;
        }
    };
    let mesh_tls = matches!(&detection.protocol, Protocol::Tls { alpn, .. } if tls::is_mesh_alpn(alpn));
    if !mesh_tls {
        if mode == InboundMtls::Strict {
            shared.metrics.mtls_refused("plaintext");
            tracing::debug!(peer = %cx.peer, port = cx.destination.port(), "plaintext refused: STRICT mutual TLS");
            return;
        }
        let declared = declared_protocol(&compiled, &cx);
        if declared != Declared::Detect {
            return serve_declared(shared, compiled, stream, cx, declared).await;
        }
        return serve_detected(shared, compiled, stream, cx, detection).await;
    }
    let Some(configs) = shared.tls.current() else {
        shared.metrics.mtls_refused("no_certificate");
        tracing::warn!(peer = %cx.peer, "mesh TLS connection refused: this proxy has no certificate yet");
        return;
    };
    let (tls, protocol, peer) = match configs.accept(stream).await {
        Ok(accepted) => accepted,
        Err(err) => {
            shared.metrics.mtls_refused("handshake");
            tracing::debug!(error = %err, peer = %cx.peer, "mesh TLS handshake failed");
            return;
        }
    };
    shared.metrics.detected("mtls", false);
    let cx = Context { peer_identity: Some(Arc::new(peer)), ..cx };
    match protocol {
        MeshProtocol::Http2 | MeshProtocol::Http1 => {
            drop(compiled);
            let version = if protocol == MeshProtocol::Http2 { http::Version::Http2 } else { http::Version::Http1 };
            http::serve(shared.clone(), tls, cx, version).await
        }
        MeshProtocol::Tcp => opaque(shared, &compiled, tls, cx, None).await,
    }
}

/// What authorization looks at for a connection (and, for HTTP, a request) on the inbound side.
pub fn authz_facts<'a>(cx: &'a Context, http: Option<HttpFacts<'a>>) -> RequestFacts<'a> {
    RequestFacts {
        source_ip: cx.peer.ip(),
        remote_ip: cx.peer.ip(),
        destination_ip: cx.destination.ip(),
        destination_port: cx.destination.port(),
        peer: cx.peer_identity.as_deref().map(|peer| peer.principal()),
        sni: None,
        http,
    }
}

/// The protocol the config declares for a connection's destination port.
fn declared_protocol(compiled: &Compiled, cx: &Context) -> Declared {
    match cx.side {
        Side::Inbound => compiled.inbound.get(&cx.destination.port()).copied().unwrap_or_default(),
        Side::Outbound => compiled.outbound.by_address(cx.destination).map(|v| v.protocol).unwrap_or_default(),
        Side::Gateway => Declared::Http,
    }
}

/// Proxies an opaque (or TLS, routed by SNI) connection.
async fn opaque<S>(shared: &Shared, compiled: &Compiled, mut stream: S, cx: Context, sni: Option<&str>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Written when this function returns, however the connection ended.
    let mut log = TcpLog::start(&shared.store.access_log, &cx, sni);
    let (target, metrics): (SocketAddr, &Arc<ClusterMetrics>) = match cx.side {
        Side::Inbound => {
            let port = cx.destination.port();
            if log.is_on() {
                log.upstream(None, &access_log::inbound_cluster(port));
            }
            if compiled.inbound_rate_limits(port).is_some_and(|l| l.connection_limited(&cx)) {
                log.flag(ResponseFlag::RL);
                return;
            }
            if let Some(policies) = compiled.inbound_authz(port) {
                let decision = policies.evaluate(&authz_facts(&cx, None));
                if !decision.allowed {
                    tracing::debug!(peer = %cx.peer, %decision, "TCP connection denied");
                    shared.metrics.authz_denied("tcp");
                    log.terminated(access_log::details::RBAC_DENIED);
                    return;
                }
            }
            let target = shared.settings.inbound_target.unwrap_or(cx.destination);
            let source = shared.settings.inbound_target.is_none().then(|| http::passthrough_source(target));
            log.set_host(target);
            copy_from(&mut stream, target, source, shared, &compiled.inbound_metrics, None, &mut log).await;
            return;
        }
        Side::Gateway => return,
        Side::Outbound => {
            let vhost = sni
                .and_then(|name| compiled.outbound.by_authority(name, cx.destination.port()))
                .or_else(|| compiled.outbound.by_address(cx.destination));
            let picked = vhost.and_then(|v| pick_weighted(&v.tcp, v.tcp_total_weight, fastrand::u64(..)));
            match picked {
                Some(target) => {
                    let cluster = compiled.cluster(target.cluster);
                    log.upstream(None, &cluster.config.name);
                    // `tcp.maxConnections`: the connection is closed at once beyond it (flag UO).
                    let _permit = match cluster.breaker.as_ref().map(|b| b.admit_connection()) {
                        Some(Err(_)) => {
                            tracing::debug!(cluster = %cluster.config.name, "circuit breaker refused a TCP connection (UO)");
                            cluster.metrics.overflowed();
                            log.flag(ResponseFlag::UO);
                            return;
                        }
                        permit => permit,
                    };
                    let Some(pick) = cluster.balancer.pick(None) else {
                        tracing::debug!(cluster = %cluster.config.name, "no endpoint for TCP connection");
                        log.flag(ResponseFlag::UH);
                        return;
                    };
                    let addr = pick.addr;
                    let endpoint = pick.endpoint();
                    let mtls = match http::mesh_tls(shared, &cluster.config.tls, endpoint.meshed, &endpoint.identity) {
                        Ok(mtls) => mtls,
                        Err(message) => {
                            tracing::debug!(cluster = %cluster.config.name, message, "refusing TCP connection");
                            return;
                        }
                    };
                    // The pick stays alive for the connection so least-request balancing sees it.
                    let timeout = cluster.connections.connect_timeout;
                    log.set_host(addr);
                    match mtls {
                        Some(mtls) => {
                            copy_mesh(&mut stream, addr, &mtls, shared, &cluster.metrics, timeout, &mut log).await;
                        }
                        None => {
                            let metrics = &cluster.metrics;
                            copy_from(&mut stream, addr, None, shared, metrics, Some(timeout), &mut log).await;
                        }
                    }
                    drop(pick);
                    return;
                }
                None if compiled.unknown_destinations == UnknownDestinations::Passthrough => {
                    log.upstream(Some(cx.destination), PASSTHROUGH_CLUSTER);
                    (cx.destination, &compiled.passthrough)
                }
                None => {
                    tracing::debug!(destination = %cx.destination, "refusing connection to unknown destination");
                    log.upstream(None, BLACKHOLE_CLUSTER);
                    log.flag(ResponseFlag::UH);
                    return;
                }
            }
        }
    };
    copy_from(&mut stream, target, None, shared, metrics, None, &mut log).await;
}

/// Proxies an opaque stream to a meshed endpoint inside mesh TLS.
async fn copy_mesh<S>(
    stream: &mut S,
    target: SocketAddr,
    mtls: &MeshTarget<'_>,
    shared: &Shared,
    metrics: &ClusterMetrics,
    connect_timeout: std::time::Duration,
    log: &mut TcpLog,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if shared.settings.is_own_listener(target) {
        tracing::warn!(%target, "refusing to proxy a connection to this proxy's own listener");
        return;
    }
    let connected = http::pool::connect_within(connect_timeout, target, None).await;
    let mut upstream = match connected {
        Ok(tcp) => match mtls.configs.connect(tcp, target, MeshProtocol::Tcp, Some(mtls.expected)).await {
            Ok(tls) => tls,
            Err(err) => {
                tracing::debug!(error = %err, %target, "mesh TLS to upstream failed");
                log.flag(ResponseFlag::UF);
                return;
            }
        },
        Err(err) => {
            tracing::debug!(error = %err, %target, "upstream connect failed");
            log.flag(ResponseFlag::UF);
            return;
        }
    };
    metrics.tcp_opened.inc();
    let observer = log.observing(metrics);
    if let Err(err) =
        tcp::copy_bidirectional_observed(stream, &mut upstream, tcp::DEFAULT_IDLE_TIMEOUT, &observer).await
    {
        tracing::debug!(error = %err, %target, "mesh tcp proxying ended with an error");
    }
    metrics.tcp_closed.inc();
}

async fn copy_from<S>(
    stream: &mut S,
    target: SocketAddr,
    source: Option<SocketAddr>,
    shared: &Shared,
    metrics: &ClusterMetrics,
    connect_timeout: Option<std::time::Duration>,
    log: &mut TcpLog,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if shared.settings.is_own_listener(target) {
        tracing::warn!(%target, "refusing to proxy a connection to this proxy's own listener");
        return;
    }
    let connected = match connect_timeout {
        Some(timeout) => http::pool::connect_within(timeout, target, source).await.map_err(|e| e.to_string()),
        None => http::pool::connect(target, source).await.map_err(|e| e.to_string()),
    };
    let mut upstream = match connected {
        Ok(upstream) => upstream,
        Err(err) => {
            tracing::debug!(error = %err, %target, "upstream connect failed");
            log.flag(ResponseFlag::UF);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    metrics.tcp_opened.inc();
    // Bytes are counted as they move, however the connection ends.
    let observer = log.observing(metrics);
    if let Err(err) =
        tcp::copy_bidirectional_observed(stream, &mut upstream, tcp::DEFAULT_IDLE_TIMEOUT, &observer).await
    {
        tracing::debug!(error = %err, %target, "tcp proxying ended with an error");
    }
    metrics.tcp_closed.inc();
}
