//! Push: the server side of the config stream on port 15012 (protocol in `trellis_api::push` and
//! `docs/push.md`).
//!
//! Each proxy opens one long HTTP/2 request and says who it is ([`Hello`]). The server asks a
//! [`ConfigSource`] for that proxy's config, sends it whole, and from then on, whenever the source's
//! generation moves (debounced), computes the proxy's config again, diffs it against what the proxy was
//! last sent and sends only the difference ([`trellis_api::push::Delta`]): an endpoint change costs one
//! cluster per proxy. The proxy acknowledges each version; `GET /v1/proxies` lists every stream with
//! the version sent, the version acknowledged and whether the two agree (`trellis proxy-status`).
//!
//! Per proxy the server keeps a [`View`] of the config last sent, not a copy of it: its sections and
//! clusters are reference-counted and shared, through an [`Interner`], with every other proxy that was
//! sent equal ones, so a thousand proxies that see the same thousand clusters hold one copy of each.
//! A source that hands out shared sections itself ([`ConfigSource::view_for`]) also makes comparing a
//! proxy's unchanged parts a pointer comparison.
//!
//! The source is a trait so the push does not depend on how configs are made: the control plane plugs
//! in translate over its index; tests plug in fixed configs ([`FnSource`]). Listening is plain HTTP/2
//! (with HTTP/1.1 for the status list) today; [`PushServer::serve_connection`] takes any byte stream,
//! so the TLS of the mesh CA slots in by wrapping accepted connections.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use trellis_api::proxy_config::ProxyConfig;
use trellis_api::push::{Hello, ProxyStatusList};

mod body;
mod encode;
mod listen;
mod registry;
mod sent;
mod stream;
pub mod tls;
mod view;

pub use sent::{SentCluster, SentOutbound};
pub use view::{Interner, View};

/// Quiet time after a generation change before proxies' configs are computed, so a burst of changes
/// (a rollout's endpoint updates) becomes one push.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(20);
/// Longest a push waits for changes to quiet down.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(200);
/// Interval of HTTP/2 pings on an idle stream, so a vanished proxy is noticed.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a ping may go unanswered before the connection is closed.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new stream may take to send its [`Hello`].
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest message a proxy may send (a `Hello` with many labels is a few KB).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 256 * 1024;
/// HTTP/2 receive window per stream and per connection: proxies send only small messages, so a small
/// window keeps a thousand connections' buffers small.
pub const RECEIVE_WINDOW_BYTES: u32 = 64 * 1024;
/// Bytes HTTP/2 buffers per stream before the server stops producing (backpressure from slow proxies).
pub const SEND_BUFFER_BYTES: usize = 256 * 1024;
/// How long a stopping server waits for its connections to close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where proxies' configs come from.
pub trait ConfigSource: Send + Sync + 'static {
    /// The current config of the proxy that said `hello`, or why it cannot be made. Its `version` is
    /// replaced by the generation it was computed at; its clusters may come in any order.
    fn config_for(&self, hello: &Hello) -> Result<ProxyConfig, String>;

    /// The generation: a number that increases whenever any proxy's config may have changed.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// The same config as shared sections. By default, [`ConfigSource::config_for`]'s result interned
    /// (which compares each cluster with the shared one of its name). A source that caches clusters and
    /// sections across proxies and generations returns its own `Arc`s instead, and comparing a proxy's
    /// unchanged parts then costs a pointer comparison.
    fn view_for(&self, hello: &Hello, interner: &Interner) -> Result<View, String> {
        Ok(View::new(self.config_for(hello)?, interner))
    }
}

/// A [`ConfigSource`] made of a generation channel and a function.
pub struct FnSource<F> {
    generations: watch::Receiver<u64>,
    config: F,
}

impl<F> FnSource<F>
where
    F: Fn(&Hello) -> Result<ProxyConfig, String> + Send + Sync + 'static,
{
    /// A source that calls `config` for every proxy whenever `generations` moves.
    pub fn new(generations: watch::Receiver<u64>, config: F) -> Self {
        Self { generations, config }
    }
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").field("generation", &*self.generations.borrow()).finish_non_exhaustive()
    }
}

impl<F> ConfigSource for FnSource<F>
where
    F: Fn(&Hello) -> Result<ProxyConfig, String> + Send + Sync + 'static,
{
    fn config_for(&self, hello: &Hello) -> Result<ProxyConfig, String> {
        (self.config)(hello)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.generations.clone()
    }
}

/// Tunables of the push server; [`Options::default`] uses the named defaults above.
#[derive(Debug, Clone)]
pub struct Options {
    pub debounce: Duration,
    pub max_delay: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub hello_timeout: Duration,
    /// How many configs are computed at once (the source's work is CPU-bound); the host's CPU count
    /// by default.
    pub concurrent_computations: usize,
    /// The mesh CA served at `POST /v1/certificates` (`trellis_api::ca`); `None` answers 404 there.
    pub ca: Option<Arc<crate::ca::CaService>>,
    /// TLS on the push port; with it, plain-text connections are accepted only from loopback peers.
    pub tls: Option<Arc<tls::ServingTls>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            debounce: DEFAULT_DEBOUNCE,
            max_delay: DEFAULT_MAX_DELAY,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            concurrent_computations: std::thread::available_parallelism().map_or(2, |n| n.get()),
            ca: None,
            tls: None,
        }
    }
}

/// The push server: cheap to clone; every clone serves the same proxies.
#[derive(Clone)]
pub struct PushServer {
    shared: Arc<Shared>,
}

impl fmt::Debug for PushServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushServer").field("options", &self.shared.options).finish_non_exhaustive()
    }
}

/// What every stream of one server shares.
struct Shared {
    source: Arc<dyn ConfigSource>,
    options: Options,
    registry: Arc<registry::Registry>,
    interner: Interner,
    computations: Semaphore,
    shutdown: watch::Sender<bool>,
}

impl PushServer {
    /// A server that pushes the configs `source` makes.
    pub fn new(source: Arc<dyn ConfigSource>, options: Options) -> Self {
        let computations = Semaphore::new(options.concurrent_computations.max(1));
        let (shutdown, _) = watch::channel(false);
        let shared =
            Shared { source, options, registry: Arc::default(), interner: Interner::default(), computations, shutdown };
        Self { shared: Arc::new(shared) }
    }

    /// Every connected proxy and whether it runs the config it was last sent, ordered by proxy id.
    pub fn statuses(&self) -> ProxyStatusList {
        self.shared.registry.statuses()
    }

    /// Ends every stream and stops accepting: proxies keep their configs and reconnect with backoff.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// The interner shared by this server's streams (for memory accounting and tests).
    pub fn interner(&self) -> &Interner {
        &self.shared.interner
    }
}

impl Shared {
    /// Completes once the server is shutting down.
    async fn stopping(&self) {
        let mut shutdown = self.shutdown.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = shutdown.wait_for(|stop| *stop).await;
    }

    /// The config of `hello`'s proxy at `generation` and what `then` makes of it (the message to send),
    /// computed off the async workers, a bounded number at a time; an error when the config cannot be
    /// computed.
    ///
    /// The message is encoded on the computing thread too: the async workers then allocate little
    /// but what lives as long as a connection (HTTP/2's buffers, ~28 KB per proxy), so those come
    /// from untouched memory rather than from blocks that an encoding just wrote and freed, and stay
    /// mostly out of the resident set.
    async fn compute<T: Send + 'static>(
        self: &Arc<Self>,
        hello: &Arc<Hello>,
        generation: u64,
        then: impl FnOnce(View) -> T + Send + 'static,
    ) -> Result<T, String> {
        let _permit = self.computations.acquire().await.map_err(|e| e.to_string())?;
        let (shared, hello) = (self.clone(), hello.clone());
        tokio::task::spawn_blocking(move || {
            let mut view = shared.source.view_for(&hello, &shared.interner)?;
            view.version = generation.to_string();
            Ok(then(view))
        })
        .await
        .map_err(|e| format!("computing the config failed: {e}"))?
    }
}

#[cfg(test)]
mod tests;
