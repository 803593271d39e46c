//! The data-path threads: `--concurrency` workers, each a single-threaded tokio runtime that accepts
//! on its own copy of every listening socket and runs the connections it accepted to completion,
//! with its own upstream connection pools.
//!
//! This is Envoy's worker model. A connection never moves between threads, so serving a request
//! wakes no other thread: a multi-threaded work-stealing runtime spent most of the proxy's CPU on
//! cross-thread wake-ups at a few thousand requests per second. Workers share the config store,
//! metrics and drain state (atomics and `ArcSwap`), never a lock on the request path.
//!
//! Listeners are bound once (so a port collision with another process fails loudly, which
//! `SO_REUSEPORT` would hide) and each worker registers a duplicate of the socket with its own
//! event loop; the kernel wakes the workers and one of them wins each `accept`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Error;
use crate::drain;
use crate::http::{Clients, Shared, Side};
use crate::listener;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::state::Store;
use crate::tls::MeshTls;

/// Connections a listening socket queues before the workers accept them.
pub const LISTEN_BACKLOG: i32 = 1024;
/// How many times per pool idle timeout a worker looks for idle HTTP/2 upstream connections.
pub const SWEEPS_PER_IDLE_TIMEOUT: u32 = 4;
/// Name of the worker threads (shown by `top -H`).
pub const WORKER_THREAD_NAME: &str = "trellis-worker";

/// What a listening socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// A capture or gateway listener.
    Data(Side),
    /// The explicit-proxy listener (`HTTP_PROXY`).
    Explicit,
}

/// Binds a listening socket the way every data listener is bound: `SO_REUSEADDR` (a restarted
/// proxy rebinds at once), non-blocking, and for IPv6 `IPV6_V6ONLY` so `[::]` and `0.0.0.0` can
/// both be bound on one port.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let context = || format!("binding {addr}");
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
        .map_err(Error::io(context()))?;
    socket.set_reuse_address(true).map_err(Error::io(context()))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(Error::io(context()))?;
    }
    socket.set_nonblocking(true).map_err(Error::io(context()))?;
    socket.bind(&addr.into()).map_err(Error::io(context()))?;
    socket.listen(LISTEN_BACKLOG).map_err(Error::io(context()))?;
    Ok(socket.into())
}

/// Binds `port` on `ip`; when `ip` is `0.0.0.0` also on `[::]` (IPv6 capture needs its own
/// socket), where failing to bind only means the host has no IPv6.
pub fn bind_all(ip: std::net::IpAddr, port: u16) -> Result<Vec<std::net::TcpListener>, Error> {
    let mut listeners = vec![bind(SocketAddr::new(ip, port))?];
    if ip == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
        match bind(SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port)) {
            Ok(v6) => listeners.push(v6),
            Err(err) => tracing::debug!(error = %err, port, "no IPv6 listener"),
        }
    }
    Ok(listeners)
}

/// What every worker shares with the others.
#[derive(Debug, Clone)]
pub struct Common {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub tls: Arc<MeshTls>,
    pub drain: drain::Watch,
    /// The workload's certificate as `crate::identity` keeps it current (empty until one arrives).
    pub identity: crate::tls::IdentityWatch,
}

/// Handles to the running workers: listeners added here are served by all of them.
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<(std::net::TcpListener, ListenerKind)>>,
}

impl Workers {
    /// Starts `settings.concurrency` worker threads.
    pub fn start(common: &Common) -> Result<Self, Error> {
        let mut senders = Vec::with_capacity(common.settings.concurrency);
        for index in 0..common.settings.concurrency {
            let (sender, receiver) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::io("starting a worker runtime"))?;
            let common = common.clone();
            std::thread::Builder::new()
                .name(format!("{WORKER_THREAD_NAME}-{index}"))
                .spawn(move || runtime.block_on(run(common, receiver)))
                .map_err(Error::io("starting a worker thread"))?;
            senders.push(sender);
        }
        Ok(Self { senders })
    }

    /// Has every worker accept on `listener`.
    pub fn serve(&self, listener: &std::net::TcpListener, kind: ListenerKind) -> Result<(), Error> {
        for sender in &self.senders {
            let copy = listener.try_clone().map_err(Error::io("duplicating a listening socket"))?;
            // A worker only goes away with the process.
            let _ = sender.send((copy, kind));
        }
        Ok(())
    }
}

/// One worker: serves each listener it is given until the proxy drains, and keeps running its
/// connections until the process exits (dropping [`Workers`] only means no more listeners come).
async fn run(common: Common, mut listeners: mpsc::UnboundedReceiver<(std::net::TcpListener, ListenerKind)>) {
    let shared = Shared {
        store: common.store,
        metrics: common.metrics,
        clients: Clients::new(common.settings.pool_idle_timeout),
        settings: common.settings,
        tls: common.tls,
        drain: common.drain,
    };
    tokio::spawn(sweep_idle(shared.clients.h2.clone(), shared.settings.pool_idle_timeout));
    while let Some((std_listener, kind)) = listeners.recv().await {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, "a worker could not register a listener");
                continue;
            }
        };
        match kind {
            ListenerKind::Data(side) => tokio::spawn(listener::serve(shared.clone(), listener, side)),
            ListenerKind::Explicit => tokio::spawn(listener::serve_explicit(shared.clone(), listener)),
        };
    }
    std::future::pending::<()>().await;
}

/// Closes the worker's HTTP/2 upstream connections that stayed unused for `idle` (or for their
/// cluster's own idle timeout, which may make sweeps more frequent).
async fn sweep_idle(pool: Arc<crate::http::pool::H2Pool>, idle: std::time::Duration) {
    loop {
        let shortest = pool.shortest_cluster_idle().map_or(idle, |cluster| cluster.min(idle));
        let period = (shortest / SWEEPS_PER_IDLE_TIMEOUT).max(std::time::Duration::from_millis(100));
        tokio::select! {
            () = tokio::time::sleep(period) => pool.sweep(idle),
            () = pool.idle_shortened() => {}
        }
    }
}
