//! The explicit-proxy listener: clients configured with `HTTP_PROXY` send absolute-form requests
//! (`GET http://reviews:9080/`) and `CONNECT host:port` tunnels. Both are treated exactly like captured
//! outbound traffic whose original destination is the named host and port.
//!
//! A target that is one of this proxy's own listening addresses (capture, explicit, admin,
//! readiness, Prometheus) is refused with 502, as is an unspecified address (`0.0.0.0`, `[::]`,
//! which the kernel would take for this host) and, under REGISTRY_ONLY, a `CONNECT` to a target the
//! mesh does not know. A tunnel to a mesh name without a service address can only be routed by
//! what flows through it, so it must carry HTTP or TLS whose SNI the mesh knows; anything else is
//! closed rather than passed through to an address the name does not have. On drain the listener
//! stops accepting and each connection finishes its in-flight requests and closes; so does a
//! connection idle for `--idle-timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::UpgradeableConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use trellis_api::proxy_config::{Protocol as Declared, UnknownDestinations};

use crate::detect::{self, Protocol};
use crate::http::{Activity, Body, Context, Shared, Side, full, local_response, until_closed};
use crate::settings::Settings;

/// How long the accept loop pauses after a failed `accept` (out of file descriptors, say), so it
/// does not spin on a listener that stays readable.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Accepts explicit-proxy connections until the proxy drains.
pub async fn serve_explicit(shared: Shared, listener: TcpListener) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.drain.signaled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, ?local, "explicit proxy accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = shared.drain.connection();
            shared.metrics.open_connections.inc();
            serve_connection(&shared, stream, peer).await;
            shared.metrics.open_connections.dec();
        });
    }
    tracing::debug!(?local, "explicit proxy stopped accepting");
}

/// Serves one explicit-proxy connection until it closes, or, once the proxy drains or no request
/// started on it for `--idle-timeout`, until its in-flight requests are answered.
async fn serve_connection(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    let service_shared = shared.clone();
    let activity = Activity::new(shared.settings.idle_timeout);
    let requests = activity.counter();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        requests.started();
        let shared = service_shared.clone();
        // Boxed: no per-connection slot the size of the request path's state.
        crate::http::in_box(|| async move { Ok::<_, Infallible>(explicit_request(shared, req, peer).await) })
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(err) = until_closed(connection, UpgradeableConnection::graceful_shutdown, &shared.drain, activity).await
    {
        tracing::debug!(error = %err, %peer, "explicit proxy connection ended with an error");
    }
}

/// Resolves `host:port` (a service name, an IP, or a DNS name) to a socket address.
async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

/// What the mesh knows of a target name.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The first service address of its virtual host, if it has one.
    address: Option<SocketAddr>,
    protocol: Declared,
}

/// The virtual host the mesh knows for `host:port`, if any.
fn known(shared: &Shared, host: &str, port: u16) -> Option<Known> {
    let compiled = shared.store.current()?;
    let vhost = compiled.outbound.by_authority(host, port)?;
    let address = compiled
        .config
        .outbound
        .virtual_hosts
        .iter()
        .find(|v| v.name == vhost.name)
        .and_then(|v| v.addresses.first())
        .and_then(|a| a.parse().ok())
        .map(|ip| SocketAddr::new(ip, port));
    Some(Known { address, protocol: vhost.protocol })
}

/// Whether `target` is one of the addresses this proxy listens on: connecting there would loop
/// back into the proxy or reach its admin endpoints (`/quitquitquit`) from outside the pod.
fn is_own_address(settings: &Settings, target: SocketAddr) -> bool {
    let listeners = [
        settings.explicit_proxy_addr,
        Some(settings.admin_addr),
        Some(settings.readiness_addr),
        Some(settings.prometheus_addr),
    ];
    settings.is_own_listener(target)
        || listeners.into_iter().flatten().any(|listener| {
            listener.port() == target.port()
                && (listener.ip() == target.ip()
                    || (listener.ip().is_unspecified() && (target.ip().is_loopback() || target.ip().is_unspecified())))
        })
}

async fn explicit_request(shared: Shared, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return local_response(StatusCode::BAD_REQUEST, "explicit proxy requests need an absolute URI or CONNECT");
    };
    let default_port = if req.uri().scheme_str() == Some("https") { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let host = authority.host().to_owned();
    let known = known(&shared, &host, port);
    let resolved = match known.and_then(|k| k.address) {
        Some(address) => Some(address),
        // A mesh name without a service address (a local-mode ServiceEntry) is routed by its Host:
        // looking it up in DNS on every request would only wait for a resolver that cannot know it.
        None if known.is_some() && req.method() != Method::CONNECT => None,
        None => resolve(&host, port).await,
    };
    if resolved.is_some_and(|addr| is_own_address(&shared.settings, addr)) {
        return local_response(StatusCode::BAD_GATEWAY, "destination is this proxy's own listener");
    }
    // A name the mesh knows needs no address for HTTP: requests are routed by their Host.
    let destination = resolved.unwrap_or(SocketAddr::from(([0, 0, 0, 0], port)));
    let cx = Context::plain(Side::Outbound, peer, destination);
    if req.method() != Method::CONNECT {
        let Ok(response) = crate::http::logged(&shared, req.map(crate::http::boxed), cx).await;
        return response;
    }
    let unaddressed = destination.ip().is_unspecified();
    match known {
        None if unaddressed => return local_response(StatusCode::BAD_GATEWAY, "cannot resolve CONNECT target"),
        None if registry_only(&shared) && !is_registered_address(&shared, destination) => {
            return local_response(StatusCode::BAD_GATEWAY, "destination not in the mesh registry");
        }
        Some(Known { protocol: Declared::Tcp, .. }) if unaddressed => {
            return local_response(StatusCode::BAD_GATEWAY, "CONNECT target has no address for TCP traffic");
        }
        _ => {}
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(err) => {
                tracing::debug!(error = %err, "CONNECT upgrade failed");
                return;
            }
        };
        let _guard = shared.drain.connection();
        if unaddressed {
            tunnel_by_content(&shared, upgraded, cx).await;
        } else {
            crate::listener::handle_connection(&shared, upgraded, cx).await;
        }
    });
    Response::new(full(Vec::new()))
}

/// Whether unknown destinations are refused (REGISTRY_ONLY).
fn registry_only(shared: &Shared) -> bool {
    shared.store.current().is_some_and(|c| c.unknown_destinations == UnknownDestinations::Refuse)
}

/// Whether `addr` is a service address the mesh knows.
fn is_registered_address(shared: &Shared, addr: SocketAddr) -> bool {
    shared.store.current().is_some_and(|c| c.outbound.by_address(addr).is_some())
}

/// Serves a tunnel to a mesh name that has no service address: only HTTP (routed by its Host) and
/// TLS whose SNI names a virtual host can be routed; anything else is closed, since passing it
/// through would send it to the unspecified address, that is, to this host.
async fn tunnel_by_content<S>(shared: &Shared, stream: S, cx: Context)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (detection, stream) = match detect::detect(stream, shared.settings.detect_timeout).await {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, peer = %cx.peer, "CONNECT tunnel failed before its first bytes");
            return;
        }
    };
    let routable = match &detection.protocol {
        Protocol::Http1 | Protocol::Http2 => true,
        Protocol::Tls { sni: Some(sni), .. } => {
            shared.store.current().is_some_and(|c| c.outbound.by_authority(sni, cx.destination.port()).is_some())
        }
        Protocol::Tls { sni: None, .. } | Protocol::Opaque => false,
    };
    if !routable {
        tracing::debug!(peer = %cx.peer, port = cx.destination.port(), "closing a CONNECT tunnel that cannot be routed by its content");
        return;
    }
    crate::listener::handle_connection(shared, stream, cx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listen_ip: &str, explicit: Option<&str>) -> Settings {
        use clap::Parser;
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            serve: crate::settings::ServeArgs,
        }
        let mut args = vec!["test", "--config", "/dev/null", "--listen-ip", listen_ip];
        if let Some(explicit) = explicit {
            args.extend(["--explicit-proxy-addr", explicit]);
        }
        Args::parse_from(args).serve.settings("sidecar").expect("valid settings")
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn the_proxys_own_listeners_are_recognised_on_loopback_and_unspecified_addresses() {
        let settings = settings("0.0.0.0", Some("127.0.0.1:15080"));
        for own in ["127.0.0.1:15001", "127.0.0.1:15006", "127.0.0.1:15080", "127.0.0.1:15000", "127.0.0.1:15021"] {
            assert!(is_own_address(&settings, addr(own)), "{own}");
        }
        assert!(is_own_address(&settings, addr("0.0.0.0:15090")), "the readiness and metrics ports bind 0.0.0.0");
        assert!(!is_own_address(&settings, addr("127.0.0.2:15080")), "the explicit proxy binds 127.0.0.1 only");
        assert!(!is_own_address(&settings, addr("10.0.0.7:9080")));
    }

    #[test]
    fn a_proxy_on_its_own_ip_owns_only_that_ip() {
        let settings = settings("127.77.0.9", Some("127.77.0.9:15080"));
        assert!(is_own_address(&settings, addr("127.77.0.9:15001")));
        assert!(is_own_address(&settings, addr("127.77.0.9:15080")));
        assert!(!is_own_address(&settings, addr("127.77.0.10:15001")), "another proxy's listener");
    }
}
