//! The explicit-proxy listener: clients configured with `HTTP_PROXY` send absolute-form requests
//! (`GET http://reviews:9080/`) and `CONNECT host:port` tunnels. Both are treated exactly like captured
//! outbound traffic whose original destination is the named host and port.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::http::{Body, Context, Shared, Side, full, handle, local_response};

/// Accepts explicit-proxy connections until the proxy drains.
pub async fn serve_explicit(shared: Shared, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.drain.signaled() => break,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = shared.drain.connection();
            let service_shared = shared.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = service_shared.clone();
                async move { Ok::<_, Infallible>(explicit_request(shared, req, peer).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "explicit proxy connection ended with an error");
            }
        });
    }
}

/// Resolves `host:port` (a service name, an IP, or a DNS name) to a socket address.
async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

/// The destination the mesh knows for `host:port`, else DNS.
async fn destination(shared: &Shared, host: &str, port: u16) -> Option<SocketAddr> {
    let known = shared.store.current().and_then(|c| {
        let vhost = c.outbound.by_authority(host, port)?;
        // Any address of the virtual host lets the capture path find it again.
        c.config.outbound.virtual_hosts.iter().find(|v| v.name == vhost.name)?.addresses.first()?.parse().ok()
    });
    match known {
        Some(ip) => Some(SocketAddr::new(ip, port)),
        None => resolve(host, port).await,
    }
}

async fn explicit_request(shared: Shared, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return local_response(StatusCode::BAD_REQUEST, "explicit proxy requests need an absolute URI or CONNECT");
    };
    let default_port = if req.uri().scheme_str() == Some("https") { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let host = authority.host().to_owned();
    let destination = match destination(&shared, &host, port).await {
        Some(addr) => addr,
        None => SocketAddr::from(([0, 0, 0, 0], port)),
    };
    let cx = Context { side: Side::Outbound, peer, destination };
    if req.method() != Method::CONNECT {
        return handle(&shared, req, cx).await;
    }
    // A tunnel to a name the mesh knows is routed by what flows through it (SNI, Host), so it needs
    // no address; anything else must resolve.
    let known = shared.store.current().is_some_and(|c| c.outbound.by_authority(&host, port).is_some());
    if destination.ip().is_unspecified() && !known {
        return local_response(StatusCode::BAD_GATEWAY, "cannot resolve CONNECT target");
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let _guard = shared.drain.connection();
                crate::listener::handle_connection(&shared, TokioIo::new(upgraded), cx).await;
            }
            Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
        }
    });
    Response::new(full(Vec::new()))
}
