//! Draining: one switch that every accept loop, connection and handler watches, a count of open
//! connections, and the deadline.
//!
//! When a drain starts, accept loops stop at once. What each connection does depends on its
//! protocol (see [`crate::server`]): an idle HTTP/1.1 connection moves to the successor (or into
//! the fd store), or answers its next request with `Connection: close` and is shut down once it
//! stayed idle for `idle_close_grace`; an HTTP/2 connection gets the two-step GOAWAY and its open
//! streams finish; an upgraded connection (WebSocket) or a long response (SSE, a streaming body)
//! is the handler's to end, and handlers learn about the drain through [`Draining`]. At the
//! deadline, whatever is left is dropped with the process.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::polled::PolledOften;

/// Why a process drains.
///
/// `#[non_exhaustive]`: later versions may add reasons (or data to a reason, such as a way to
/// hand a live WebSocket to the successor); match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DrainReason {
    /// A successor has taken over (SIGUSR2, SIGHUP, `heird reload`): a client that reconnects
    /// reaches the successor at once.
    Handoff,
    /// The service stops (SIGTERM, SIGINT; under systemd maybe a restart): a client that
    /// reconnects may find nobody listening for a while.
    Stop,
}

/// Cloneable handle on the process-wide drain state.
#[derive(Clone, Debug)]
pub struct Drain {
    inner: Arc<Inner>,
}

/// What [`Draining`] handles watch.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    /// Why the drain started; `None` before.
    reason: Option<DrainReason>,
    /// A stop's lame duck has begun (`Options::shutdown_delay`); stays set.
    lame_duck: bool,
}

#[derive(Debug)]
struct Inner {
    started: watch::Sender<Flags>,
    /// Set (before the watchers are woken) when the drain starts: one load to check.
    draining: AtomicBool,
    open: AtomicUsize,
    idle: Notify,
    /// When the drain started, for the metrics' drain duration (observed once, by `wait`).
    started_at: std::sync::OnceLock<std::time::Instant>,
    observed: AtomicBool,
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
                started: watch::Sender::new(Flags::default()),
                draining: AtomicBool::new(false),
                open: AtomicUsize::new(0),
                idle: Notify::new(),
                started_at: std::sync::OnceLock::new(),
                observed: AtomicBool::new(false),
            }),
        }
    }

    /// A stop's lame duck begins: health checks say down from now on ([`Draining::is_stopping`]).
    pub fn start_lame_duck(&self) {
        self.inner
            .started
            .send_if_modified(|f| !std::mem::replace(&mut f.lame_duck, true));
    }

    /// Starts the drain for a stop (idempotent). Same as `start_for(DrainReason::Stop)`.
    pub fn start(&self) {
        self.start_for(DrainReason::Stop);
    }

    /// Starts the drain (idempotent: the first reason stays).
    pub fn start_for(&self, reason: DrainReason) {
        self.inner.started.send_if_modified(|f| {
            if f.reason.is_none() {
                f.reason = Some(reason);
                let _ = self.inner.started_at.set(std::time::Instant::now());
                self.inner.draining.store(true, Ordering::Release);
                true
            } else {
                false
            }
        });
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) -> DrainReason {
        let mut rx = self.inner.started.subscribe();
        // The sender lives in `self`: it cannot be gone while we wait.
        let reason = rx
            .wait_for(|f| f.reason.is_some())
            .await
            .ok()
            .and_then(|f| f.reason);
        reason.unwrap_or(DrainReason::Stop)
    }

    /// [`started`](Self::started) for a select polled at every wake-up of a busy task (a
    /// connection beside hyper): after its first poll, a poll is one atomic load until the drain
    /// has started ([`PolledOften`]); each poll of the plain future takes the notification's
    /// lock.
    pub fn started_polled_often(&self) -> impl Future<Output = DrainReason> + Send + use<> {
        let (d, flag) = (self.clone(), self.clone());
        // The flag is set before the notification wakes anyone.
        PolledOften::new(Box::pin(async move { d.started().await }), move |_: &_| {
            flag.is_draining()
        })
    }

    /// The handlers' view of this drain.
    pub fn signal(&self) -> Draining {
        Draining {
            rx: Some(self.inner.started.subscribe()),
        }
    }

    /// Registers an open connection; dropping the guard unregisters it.
    pub fn track(&self) -> ConnGuard {
        self.inner.open.fetch_add(1, Ordering::SeqCst);
        ConnGuard {
            drain: self.clone(),
            _conn: None,
        }
    }

    /// Like [`Drain::track`], for a client's connection: it is also counted in the metrics'
    /// open connections (`heird_open_connections`).
    pub fn track_connection(&self) -> ConnGuard {
        let mut guard = self.track();
        guard._conn = Some(crate::metrics::region::OpenConn::new());
        guard
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Resolves once no connection has been open for `idle` (the timer of
    /// `Options::idle_exit`): it waits while connections are open and starts again whenever
    /// the last one closes, so that it runs only while there are none.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            loop {
                let notified = self.inner.idle.notified();
                if self.open_connections() == 0 {
                    break;
                }
                notified.await;
            }
            // Registered before the timer starts: a connection that opens and closes while it
            // runs wakes this and starts the timer again.
            let closed_again = self.inner.idle.notified();
            tokio::select! {
                _ = tokio::time::sleep(idle) => {
                    if self.open_connections() == 0 {
                        return;
                    }
                }
                _ = closed_again => {}
            }
        }
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
        if let Some(t0) = self.inner.started_at.get()
            && !self.inner.observed.swap(true, Ordering::SeqCst)
        {
            crate::metrics::region::region().observe_drain(t0.elapsed());
        }
        self.open_connections()
    }
}

/// Keeps a connection counted as open.
#[derive(Debug)]
pub struct ConnGuard {
    drain: Drain,
    /// Counted in the metrics too (a client's connection).
    _conn: Option<crate::metrics::region::OpenConn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.drain.inner.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drain.inner.idle.notify_waiters();
        }
    }
}

/// Tells a handler that its process is draining, and why: an axum extractor (and a request
/// extension) on every request heird serves.
///
/// Ordinary requests need nothing: they finish, and the connection moves or closes. A handler
/// that runs long (a WebSocket, Server-Sent Events, a streaming body) should end on its own
/// terms when the drain starts; whatever is still open at `drain_timeout` is closed.
///
/// ```no_run
/// use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
/// use heird::Draining;
///
/// async fn ws(upgrade: WebSocketUpgrade, draining: Draining) -> axum::response::Response {
///     upgrade.on_upgrade(move |mut socket: WebSocket| async move {
///         loop {
///             tokio::select! {
///                 msg = socket.recv() => match msg {
///                     Some(Ok(Message::Text(t))) => { let _ = socket.send(Message::Text(t)).await; }
///                     Some(Ok(_)) => {}
///                     _ => return,
///                 },
///                 _ = draining.started() => {
///                     // 1012 "service restart": the client reconnects, to the successor.
///                     let frame = CloseFrame { code: 1012, reason: "service restart".into() };
///                     let _ = socket.send(Message::Close(Some(frame))).await;
///                     return;
///                 }
///             }
///         }
///     })
/// }
/// ```
///
/// Outside heird (a router served by `axum::serve`, or a test calling the router directly) the
/// extractor still succeeds, with a handle that never fires.
///
/// To move a live WebSocket to the successor instead of closing it (with the handler's
/// per-connection state), write the handler with [`crate::ws`]: it watches the drain itself.
#[derive(Clone, Debug)]
pub struct Draining {
    rx: Option<watch::Receiver<Flags>>,
}

impl Draining {
    /// A handle that never fires (what the extractor gives outside heird).
    pub fn never() -> Draining {
        Draining { rx: None }
    }

    /// True once the drain has started.
    pub fn is_draining(&self) -> bool {
        self.reason().is_some()
    }

    /// True once this process is stopping, so that its health check should say down: from the start
    /// of a lame duck (`Options::shutdown_delay`), and during the drain of a stop or an idle
    /// exit. False while it serves normally and during the drain after a handoff, when the
    /// successor is the service and everything is fine. A health route for a load balancer:
    ///
    /// ```
    /// use axum::http::StatusCode;
    ///
    /// async fn healthz(draining: heird::Draining) -> (StatusCode, &'static str) {
    ///     if draining.is_stopping() {
    ///         (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    ///     } else {
    ///         (StatusCode::OK, "ok")
    ///     }
    /// }
    /// ```
    pub fn is_stopping(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| {
            let f = *rx.borrow();
            f.lame_duck || f.reason == Some(DrainReason::Stop)
        })
    }

    /// Why the process drains; `None` while it serves normally.
    pub fn reason(&self) -> Option<DrainReason> {
        self.rx.as_ref().and_then(|rx| rx.borrow().reason)
    }

    /// Resolves once the drain has started (at once if it already has). Cancel-safe: use it in
    /// `tokio::select!`.
    pub async fn started(&self) -> DrainReason {
        let Some(rx) = &self.rx else {
            return std::future::pending().await;
        };
        let mut rx = rx.clone();
        // An error: the process's drain state is gone, which happens only at its very end.
        let reason = rx
            .wait_for(|f| f.reason.is_some())
            .await
            .ok()
            .and_then(|f| f.reason);
        reason.unwrap_or(DrainReason::Stop)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_stays_and_handles_see_it() {
        let d = Drain::new();
        let sig = d.signal();
        assert!(!sig.is_draining());
        assert_eq!(sig.reason(), None);
        d.start_for(DrainReason::Handoff);
        d.start_for(DrainReason::Stop);
        assert_eq!(sig.reason(), Some(DrainReason::Handoff));
        assert_eq!(sig.started().await, DrainReason::Handoff);
        assert_eq!(d.started().await, DrainReason::Handoff);
    }

    #[tokio::test]
    async fn idle_for_runs_only_while_no_connection_is_open() {
        let d = Drain::new();
        let idle = Duration::from_millis(1000);
        let guard = d.track();
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.idle_for(idle).await }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!waiter.is_finished(), "a connection is open");
        drop(guard);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A connection that opens and closes within the idle time starts it again: it fires
        // about 1000 ms after this, not 500 ms.
        drop(d.track());
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!waiter.is_finished(), "the timer started again at the last close");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle in the end")
            .unwrap();
    }

    #[tokio::test]
    async fn never_never_fires() {
        let n = Draining::never();
        assert!(!n.is_draining());
        let r = tokio::time::timeout(Duration::from_millis(20), n.started()).await;
        assert!(r.is_err());
    }
}
