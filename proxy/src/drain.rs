//! Graceful shutdown: on SIGTERM or `/quitquitquit` readiness turns false, listeners stop accepting,
//! open connections finish their in-flight requests, and the process exits when the last one closes
//! or the drain deadline passes, whichever comes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// The drain controller: one per process.
#[derive(Debug, Clone)]
pub struct Drain {
    signal: Arc<watch::Sender<bool>>,
    open: Arc<(AtomicUsize, Notify)>,
}

/// A handle that tells whether draining has started.
#[derive(Debug, Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    open: Arc<(AtomicUsize, Notify)>,
}

/// Counts one open connection for as long as it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    open: Arc<(AtomicUsize, Notify)>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.open.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.1.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A controller that has not started draining.
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        Self { signal: Arc::new(signal), open: Arc::new((AtomicUsize::new(0), Notify::new())) }
    }

    /// A handle for listeners and connections.
    pub fn watch(&self) -> Watch {
        Watch { signal: self.signal.subscribe(), open: self.open.clone() }
    }

    /// Starts draining (idempotent).
    pub fn start(&self) {
        self.signal.send_replace(true);
    }

    /// Connections still open.
    pub fn open_connections(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    /// Waits until every connection has closed or `deadline` passed; true when all closed.
    pub async fn wait_closed(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.open.1.notified();
                if self.open.0.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

impl Watch {
    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Completes once draining starts.
    pub async fn signaled(&self) {
        let mut signal = self.signal.clone();
        // An error means the controller is gone, which also ends serving.
        let _ = signal.wait_for(|draining| *draining).await;
    }

    /// Registers an open connection.
    pub fn connection(&self) -> ConnectionGuard {
        self.open.0.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard { open: self.open.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_waits_for_open_connections_to_close() {
        let drain = Drain::new();
        let watch = drain.watch();
        let guard = watch.connection();
        assert!(!watch.is_draining());
        drain.start();
        watch.signaled().await;
        assert!(watch.is_draining());
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
        });
        assert!(drain.wait_closed(Duration::from_secs(5)).await);
        closer.await.expect("closer task");
    }

    #[tokio::test]
    async fn the_deadline_ends_a_drain_that_connections_outlive() {
        let drain = Drain::new();
        let _guard = drain.watch().connection();
        drain.start();
        assert!(!drain.wait_closed(Duration::from_millis(50)).await);
        assert_eq!(drain.open_connections(), 1);
    }
}
