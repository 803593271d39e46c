//! The Kubernetes source: watches of the API server feeding the index, and status written back.
//!
//! One `kube` watcher per kind (core/v1 Services, Pods and Namespaces, discovery.k8s.io/v1 EndpointSlices,
//! the eight Istio kinds, the `Mesh` and `RateLimitPolicy`) is merged into one stream. Events that are ready together are
//! applied as one batch through the [`SharedIndex`], so the index generation moves once per batch; how an
//! event becomes changes ([`ingest`]) is pure and tested on its own. Istio kinds are read untyped and go
//! through the same decoding and validation as files, so an invalid object is kept with its errors
//! (translate skips it) and never breaks the watch of the others; a Kubernetes object that cannot be
//! read is left out of the index and logged. In this mode the reason an Istio object is ignored is
//! written on the object as an `Accepted=False` condition ([`status`]), by a writer that runs beside
//! the watches so a slow API server never holds up the index.
//!
//! Watch errors are logged and retried with a doubling delay; a re-list after the watch was down
//! replaces the kind's objects in the index (objects deleted meanwhile disappear).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::{Api, DynamicObject};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::SharedIndex;
use crate::index::Kind;

pub mod ingest;
pub mod status;

use ingest::{Ingest, Item, SourceEvent, Touched};
use status::StatusWriter;

/// Name the source gives itself in the errors of objects it cannot read.
pub const SOURCE_NAME: &str = "kubernetes";
/// Field manager of the statuses Trellis applies.
pub const DEFAULT_FIELD_MANAGER: &str = "trellis";
/// First delay before a failed watch or list is retried.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(800);
/// Longest delay between retries of a failing watch (the delay doubles up to it).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a failed status write waits before it is tried again.
pub const DEFAULT_STATUS_RETRY: Duration = Duration::from_secs(10);
/// Most watch events applied in one batch (one index generation).
pub const MAX_BATCH: usize = 1024;

/// What the source watches and how it behaves; [`Options::default`] watches every kind with the named
/// defaults above.
#[derive(Debug, Clone)]
pub struct Options {
    /// The kinds to watch.
    pub kinds: Vec<Kind>,
    /// Whether the reason an Istio object is ignored is written on its status.
    pub write_status: bool,
    pub field_manager: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub status_retry: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            kinds: Kind::ALL.to_vec(),
            write_status: true,
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            status_retry: DEFAULT_STATUS_RETRY,
        }
    }
}

/// Watches the API server into a [`SharedIndex`].
pub struct KubernetesSource {
    client: Client,
    index: SharedIndex,
    options: Options,
    synced: watch::Sender<bool>,
}

impl Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource").field("options", &self.options).finish_non_exhaustive()
    }
}

/// What the merged watches yield: an event, or a watch error of a kind (already logged by no one).
type Watched = Result<SourceEvent, (Kind, watcher::Error)>;

impl KubernetesSource {
    /// A source that will watch through `client` into `index` once [`KubernetesSource::run`].
    pub fn new(client: Client, index: SharedIndex, options: Options) -> Self {
        let (synced, _) = watch::channel(false);
        Self { client, index, options, synced }
    }

    /// Becomes `true` once every watched kind has been listed completely at least once.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Watches until the task is dropped (the watches retry on their own and never end).
    pub async fn run(self) {
        let kinds: BTreeSet<Kind> = self.options.kinds.iter().copied().collect();
        let mut events = SelectAll::new();
        for kind in &kinds {
            events.push(self.watch(*kind));
        }
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let writer = StatusWriter::new(self.client.clone(), self.options.field_manager.clone());
        let status_tx = self.options.write_status.then_some(status_tx);
        let ingesting = ingest_loop(events, self.index.clone(), status_tx, self.synced.clone(), kinds);
        let writing = status_loop(writer, status_rx, self.options.status_retry);
        futures_util::future::join(ingesting, writing).await;
    }

    fn watch(&self, kind: Kind) -> BoxStream<'static, Watched> {
        let client = self.client.clone();
        match kind {
            Kind::Service => {
                self.watch_typed(Api::<core::Service>::all(client), kind, |o| ingest::service_item(SOURCE_NAME, o))
            }
            Kind::EndpointSlice => self.watch_typed(Api::<discovery::EndpointSlice>::all(client), kind, |o| {
                ingest::endpoint_slice_item(SOURCE_NAME, o)
            }),
            Kind::Pod => self.watch_typed(Api::<core::Pod>::all(client), kind, |o| ingest::pod_item(SOURCE_NAME, o)),
            Kind::Namespace => {
                self.watch_typed(Api::<core::Namespace>::all(client), kind, |o| ingest::namespace_item(SOURCE_NAME, o))
            }
            _ => match ingest::api_resource(kind) {
                Some(resource) => {
                    let api = Api::<DynamicObject>::all_with(client, &resource);
                    self.watch_typed(api, kind, move |o| ingest::config_item(SOURCE_NAME, kind, &resource, o))
                }
                None => futures_util::stream::empty().boxed(),
            },
        }
    }

    fn watch_typed<K>(
        &self,
        api: Api<K>,
        kind: Kind,
        item: impl Fn(&K) -> Item + Send + 'static,
    ) -> BoxStream<'static, Watched>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let backoff = Doubling::new(self.options.backoff_initial, self.options.backoff_max);
        watcher(api, watcher::Config::default())
            .backoff(backoff)
            .map(move |event| {
                Ok(match event.map_err(|err| (kind, err))? {
                    watcher::Event::Apply(o) => SourceEvent::Apply(item(&o)),
                    watcher::Event::Delete(o) => SourceEvent::Delete(ingest::key_of(kind, o.meta())),
                    watcher::Event::Init => SourceEvent::Init(kind),
                    watcher::Event::InitApply(o) => SourceEvent::InitApply(item(&o)),
                    watcher::Event::InitDone => SourceEvent::InitDone(kind),
                })
            })
            .boxed()
    }
}

/// Applies the merged watches to the index, a batch of ready events at a time, and hands the Istio
/// objects each batch touched to the status writer.
async fn ingest_loop(
    mut events: SelectAll<BoxStream<'static, Watched>>,
    index: SharedIndex,
    status: Option<mpsc::UnboundedSender<Touched>>,
    synced: watch::Sender<bool>,
    kinds: BTreeSet<Kind>,
) {
    let mut ingest = Ingest::new();
    let mut listed = BTreeSet::new();
    let mut absent = BTreeSet::new();
    while let Some(first) = events.next().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match events.next().now_or_never() {
                Some(Some(event)) => batch.push(event),
                _ => break,
            }
        }
        index.update(|index| {
            let mut changed = false;
            for event in batch {
                match event {
                    Ok(event) => {
                        if let SourceEvent::InitDone(kind) = &event {
                            listed.insert(*kind);
                            if absent.remove(kind) {
                                tracing::info!(%kind, "the {kind} CRD is installed now");
                            }
                        }
                        changed |= ingest.handle(index, event);
                    }
                    Err((kind, err)) if crd_missing(&err) => {
                        // A kind whose CRD is not installed has no objects: it must not hold back the
                        // sync of the others. The watch keeps retrying and lists it once it appears.
                        if absent.insert(kind) {
                            tracing::warn!(%kind, "the {kind} CRD is not installed; serving without it until it is");
                        }
                        listed.insert(kind);
                    }
                    Err((kind, err)) => tracing::warn!(%kind, "watch failed, retrying: {err}"),
                }
            }
            changed
        });
        if listed == kinds {
            synced.send_if_modified(|synced| !std::mem::replace(synced, true));
        }
        let touched = ingest.take_touched();
        if let Some(status) = status.as_ref().filter(|_| !touched.is_empty()) {
            // The writer only stops when this sender is dropped.
            let _ = status.send(touched);
        }
    }
}

/// Whether a watch failed because the API server does not serve the kind at all (its CRD is missing).
fn crd_missing(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.is_not_found(),
        _ => false,
    }
}

/// Writes statuses as batches come in; while some write fails, tries again every `retry`.
async fn status_loop(mut writer: StatusWriter, mut batches: mpsc::UnboundedReceiver<Touched>, retry: Duration) {
    loop {
        let next = if writer.has_pending() {
            match tokio::time::timeout(retry, batches.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    writer.write_pending().await;
                    continue;
                }
            }
        } else {
            batches.recv().await
        };
        let Some(batch) = next else { return };
        writer.queue(batch);
        while let Ok(batch) = batches.try_recv() {
            writer.queue(batch);
        }
        writer.write_pending().await;
    }
}

/// A retry delay that doubles on each error up to a maximum, and starts over once errors have stopped
/// for twice the maximum. Successes do not reset it: the watcher's own markers count as successes, so
/// a list that fails every time (a CRD that is not installed) would otherwise be retried at the
/// shortest delay forever.
#[derive(Debug, Clone)]
struct Doubling {
    initial: Duration,
    max: Duration,
    next: Duration,
    last_error: Option<Instant>,
}

impl Doubling {
    fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), next: initial, last_error: None }
    }
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self.last_error.is_some_and(|at| now.duration_since(at) > self.max * 2) {
            self.next = self.initial;
        }
        self.last_error = Some(now);
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(delay)
    }
}

impl Backoff for Doubling {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests;
