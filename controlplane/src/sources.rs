//! Sources: what feeds the one [`Index`] of the control plane, and the handle they share with push.
//!
//! A source turns what it sees into [`crate::Change`]s and applies them through a [`SharedIndex`], batch by
//! batch; each batch that changes the index moves the index's generation, which push subscribes to
//! (`push::ConfigSource::subscribe`) to recompute proxies' configs. [`kubernetes`] watches the API
//! server; [`folder`] reads a folder of YAML (local mode) into the same handle.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use tokio::sync::watch;

use crate::index::{Change, Index};

pub mod folder;
pub mod kubernetes;

/// The index behind a lock, with a generation that moves after every batch of changes that changed it.
///
/// Cheap to clone; every clone is the same index. Readers (translate, through push) take the read lock
/// for as long as one translation takes; sources take the write lock once per batch.
#[derive(Debug, Clone)]
pub struct SharedIndex {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    index: RwLock<Index>,
    generation: watch::Sender<u64>,
}

impl Default for SharedIndex {
    fn default() -> Self {
        Self::new(Index::new())
    }
}

impl SharedIndex {
    /// A handle on `index`, at generation 0.
    pub fn new(index: Index) -> Self {
        let (generation, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { index: RwLock::new(index), generation }) }
    }

    /// The index, for reading. A writer that panicked leaves the index as it was after its last
    /// complete change, so a poisoned lock is still read.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `update` with the index locked for writing; when it reports a change, the generation moves
    /// once. Returns whether the index changed.
    pub fn update(&self, update: impl FnOnce(&mut Index) -> bool) -> bool {
        let changed = {
            let mut index = self.inner.index.write().unwrap_or_else(PoisonError::into_inner);
            update(&mut index)
        };
        if changed {
            self.inner.generation.send_modify(|generation| *generation += 1);
        }
        changed
    }

    /// Applies a batch of changes; the generation moves once if any of them changed the index.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> bool {
        self.update(|index| changes.into_iter().fold(false, |changed, change| index.apply(change) | changed))
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// A receiver that sees every move of the generation (push's `ConfigSource::subscribe`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Key, Kind, Namespace, Resource};

    fn namespace(name: &str) -> Change {
        Change::upsert(Resource::Namespace(Box::new(Namespace { name: name.to_owned(), labels: Default::default() })))
    }

    #[test]
    fn a_batch_that_changes_the_index_moves_the_generation_once_and_one_that_does_not_leaves_it() {
        let shared = SharedIndex::default();
        let mut generations = shared.subscribe();
        assert!(shared.apply([namespace("a"), namespace("b")]));
        assert_eq!(shared.generation(), 1, "one batch, one generation");
        assert!(generations.has_changed().expect("the sender lives"));
        generations.mark_unchanged();
        assert!(!shared.apply([namespace("a")]), "the same object again is no change");
        assert!(!shared.apply([Change::Delete(Key::new(Kind::Namespace, "", "c"))]), "nor is deleting nothing");
        assert_eq!(shared.generation(), 1);
        assert!(!generations.has_changed().expect("the sender lives"));
        assert_eq!(shared.read().len(), 2);
    }
}
