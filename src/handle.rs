//! What an app holds to follow and drive its process: the [`Status`] of the lifecycle (to run
//! background work in exactly one process at a time), and [`Handle::reload`] /
//! [`Handle::stop`] to start a handoff or a stop from code.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use crate::control::Request;
use crate::wire::ControlAnswer;

/// Where this process is in its life, as an app sees it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Serving, but not the service yet: the readiness gate has not passed, or (in a
    /// successor) the predecessor has not handed over.
    Starting,
    /// The service: this is the one process that should run singleton background work.
    Primary,
    /// The service, starting a successor.
    HandingOver,
    /// Stopping after a lame duck (`Options::shutdown_delay`): still the service and serving
    /// everything, but the health check says down so that load balancers take it out; then
    /// [`Status::Stopping`].
    LameDuck,
    /// Handed over to a successor; finishing what it has. No longer the service.
    Draining,
    /// Stopping (SIGTERM, `systemctl stop`, [`Handle::stop`]); draining.
    Stopping,
    /// The run is over.
    Exited,
}

impl Status {
    /// True while this process is the service (primary, possibly starting a successor, or a
    /// lame duck before its stop).
    pub fn is_primary(self) -> bool {
        matches!(self, Status::Primary | Status::HandingOver | Status::LameDuck)
    }

    /// True once this process is on its way out (a lame duck, draining after a handoff, or
    /// stopping). A readiness route can answer "down" while it is.
    pub fn is_leaving(self) -> bool {
        matches!(
            self,
            Status::LameDuck | Status::Draining | Status::Stopping | Status::Exited
        )
    }
}

/// A successful handoff, from [`Handle::reload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The successor's pid.
    pub pid: u32,
    /// The successor's generation.
    pub generation: u64,
}

/// Why [`Handle::reload`] did not hand over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The handoff failed (the reason names the successor's failure); this process serves on.
    #[error("reload failed: {0}")]
    Failed(String),
    /// This process no longer takes requests (it handed over, or the run is over).
    #[error("this process no longer takes requests")]
    Gone,
}

/// A cheap, cloneable handle on a [`crate::Service`], from [`crate::Service::handle`].
///
/// ```no_run
/// # async fn f(handle: heird::Handle) {
/// // A queue consumer that runs in exactly one process at a time.
/// tokio::spawn(async move {
///     handle.primary().await;
///     tokio::select! {
///         _ = async { /* consume the queue */ } => {}
///         _ = handle.leaving() => {}
///     }
/// });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) state: StateSlot,
}

/// The state handed over by the previous process, until the app takes it.
pub(crate) type StateSlot = Arc<Mutex<Option<Vec<u8>>>>;

impl Handle {
    /// The status right now.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Waits until this process is the primary (at once if it is).
    pub async fn primary(&self) {
        let mut rx = self.status.clone();
        let _ = rx.wait_for(|s| s.is_primary()).await;
    }

    /// Waits until this process starts leaving: it handed over (draining) or is stopping.
    /// Stop singleton background work here; the successor's [`Handle::primary`] starts it.
    pub async fn leaving(&self) {
        let mut rx = self.status.clone();
        let _ = rx.wait_for(|s| s.is_leaving()).await;
    }

    /// Waits for the next change of status and returns it.
    pub async fn changed(&mut self) -> Status {
        let _ = self.status.changed().await;
        *self.status.borrow_and_update()
    }

    /// Starts a handoff to a new process (as `systemctl reload` would) and waits for the
    /// outcome.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request { reply })
            .await
            .map_err(|_| ReloadError::Gone)?;
        match ControlAnswer::parse(&rx.await.map_err(|_| ReloadError::Gone)?) {
            ControlAnswer::Ok { pid, generation } => Ok(Reloaded { pid, generation }),
            ControlAnswer::Retry(_) => Err(ReloadError::Gone),
            ControlAnswer::Failed(r) | ControlAnswer::Error(r) => Err(ReloadError::Failed(r)),
        }
    }

    /// Takes the state the previous process gave (see [`crate::Service::save_state`]): after
    /// a restart it is there from the start; after a handoff it arrives with the handover, so
    /// take it once [`Handle::primary`] has resolved. `None` when there was none (a first start,
    /// or a previous process that saved nothing); a second call returns `None` too.
    pub fn take_state(&self) -> Option<Vec<u8>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Stops the service (as SIGTERM would): it drains and the run returns.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Produces the app's state at the moment it is handed over.
pub(crate) type StateProvider = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// The run loop's side of the handles.
pub(crate) struct Handles {
    pub requests_tx: mpsc::Sender<Request>,
    pub requests: mpsc::Receiver<Request>,
    pub stop: watch::Sender<bool>,
    pub status: watch::Sender<Status>,
    pub state: StateSlot,
}

impl Handles {
    pub fn new() -> Handles {
        let (requests_tx, requests) = mpsc::channel(16);
        Handles {
            requests_tx,
            requests,
            stop: watch::Sender::new(false),
            status: watch::Sender::new(Status::Starting),
            state: StateSlot::default(),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            requests: self.requests_tx.clone(),
            stop: self.stop.clone(),
            status: self.status.subscribe(),
            state: self.state.clone(),
        }
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles").finish_non_exhaustive()
    }
}
