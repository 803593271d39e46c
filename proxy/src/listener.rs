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
use trellis_api::proxy_config::{Protocol as Declared, UnknownDestinations};

use crate::detect::{self, Protocol};
use crate::http::{self, Context, Shared, Side};
use crate::metrics::ClusterMetrics;
use crate::route::pick_weighted;
use crate::state::Compiled;
use crate::tcp;

mod explicit;

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
            None if side == Side::Inbound && shared.settings.inbound_target.is_none() => {
                tracing::debug!(%peer, "dropping inbound connection without an original destination");
                continue;
            }
            None => local.unwrap_or(peer),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = shared.drain.connection();
            shared.metrics.open_connections.inc();
            let cx = Context { side, peer, destination };
            handle_connection(&shared, stream, cx).await;
            shared.metrics.open_connections.dec();
        });
    }
    tracing::debug!(?local, "listener stopped accepting");
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
pub async fn handle_connection<S>(shared: &Shared, stream: S, cx: Context)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(compiled) = shared.store.current() else {
        tracing::debug!(peer = %cx.peer, "no config loaded; closing connection");
        return;
    };
    let port = cx.destination.port();
    let declared = declared_protocol(&compiled, cx);
    if detect::skips_detection(port, declared) {
        match declared {
            Declared::Http | Declared::Http2 | Declared::Grpc => {
                // Each request loads the current config; the connection must not pin this one.
                drop(compiled);
                http::serve(shared.clone(), stream, cx).await
            }
            _ => opaque(shared, &compiled, stream, cx, None).await,
        }
        return;
    }
    let (detection, stream) = match detect::detect(stream, shared.settings.detect_timeout).await {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, peer = %cx.peer, "protocol detection failed");
            return;
        }
    };
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
            http::serve(shared.clone(), stream, cx).await
        }
        Protocol::Tls { sni, .. } => opaque(shared, &compiled, stream, cx, sni.as_deref()).await,
        Protocol::Opaque => opaque(shared, &compiled, stream, cx, None).await,
    }
}

/// The protocol the config declares for a connection's destination port.
fn declared_protocol(compiled: &Compiled, cx: Context) -> Declared {
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
    let (target, metrics): (SocketAddr, &Arc<ClusterMetrics>) = match cx.side {
        Side::Inbound => {
            let target = shared.settings.inbound_target.unwrap_or(cx.destination);
            let source = shared.settings.inbound_target.is_none().then(|| http::passthrough_source(target));
            copy_from(&mut stream, target, source, shared, &compiled.inbound_metrics).await;
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
                    let Some(pick) = cluster.balancer.pick(None) else {
                        tracing::debug!(cluster = %cluster.config.name, "no endpoint for TCP connection");
                        return;
                    };
                    let addr = pick.addr;
                    // The pick stays alive for the connection so least-request balancing sees it.
                    copy(&mut stream, addr, shared, &cluster.metrics).await;
                    drop(pick);
                    return;
                }
                None if compiled.unknown_destinations == UnknownDestinations::Passthrough => {
                    (cx.destination, &compiled.passthrough)
                }
                None => {
                    tracing::debug!(destination = %cx.destination, "refusing connection to unknown destination");
                    return;
                }
            }
        }
    };
    copy(&mut stream, target, shared, metrics).await;
}

async fn copy<S>(stream: &mut S, target: SocketAddr, shared: &Shared, metrics: &ClusterMetrics)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    copy_from(stream, target, None, shared, metrics).await;
}

async fn copy_from<S>(
    stream: &mut S,
    target: SocketAddr,
    source: Option<SocketAddr>,
    shared: &Shared,
    metrics: &ClusterMetrics,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if shared.settings.is_own_listener(target) {
        tracing::warn!(%target, "refusing to proxy a connection to this proxy's own listener");
        return;
    }
    let mut upstream = match http::pool::connect(target, source).await {
        Ok(upstream) => upstream,
        Err(err) => {
            tracing::debug!(error = %err, %target, "upstream connect failed");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    metrics.tcp_opened.inc();
    // Bytes are counted as they move, however the connection ends.
    if let Err(err) = tcp::copy_bidirectional_observed(stream, &mut upstream, tcp::DEFAULT_IDLE_TIMEOUT, metrics).await
    {
        tracing::debug!(error = %err, %target, "tcp proxying ended with an error");
    }
    metrics.tcp_closed.inc();
}
