//! Draining: one switch that every accept loop and connection watches, a count of open
//! connections, and the deadline.
//!
//! When a drain starts, accept loops stop at once. A connection answers its next request with
//! `Connection: close`, and one that stays idle (no request in the handler, no byte read) for
//! `idle_close_grace` is shut down. This is the gentle way: a keep-alive client that is reusing
//! its connection gets an answer, never a closed socket (axum's own graceful shutdown closes idle
//! connections at once, and hyper's drops connections whose first request is not read yet).
//! At the deadline, whatever is left is dropped with the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// Cloneable handle on the process-wide drain state.
#[derive(Clone, Debug)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    draining: AtomicBool,
    started: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Drain {
            inner: Arc::new(Inner {
                draining: AtomicBool::new(false),
                started: watch::Sender::new(false),
                open: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Starts the drain (idempotent).
    pub fn start(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.started.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) {
        let mut rx = self.inner.started.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Registers an open connection; dropping the guard unregisters it.
    pub fn track(&self) -> ConnGuard {
        self.inner.open.fetch_add(1, Ordering::SeqCst);
        ConnGuard { drain: self.clone() }
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Waits until no connection is open or `deadline` passes; returns how many were left.
    pub async fn wait(&self, deadline: Duration) -> usize {
        let all_closed = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.open_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, all_closed).await;
        self.open_connections()
    }
}

/// Keeps a connection counted as open.
#[derive(Debug)]
pub struct ConnGuard {
    drain: Drain,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.drain.inner.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drain.inner.idle.notify_waiters();
        }
    }
}

/// Logs how a drain of `open` connections ended (`left` still open at `deadline`).
pub fn log_outcome(open: usize, left: usize, deadline: Duration) {
    if left > 0 {
        warn!(
            left,
            deadline_s = deadline.as_secs_f64(),
            "drain deadline reached; closing the rest"
        );
    } else {
        info!(drained = open, "drained");
    }
}
