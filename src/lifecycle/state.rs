//! The lifecycle's vocabulary: how a run ends ([`Exit`]), where a process is ([`Phase`]), what
//! happens ([`Event`]), what to do ([`Action`]), and the [`State`] that [`super::step`] changes.

use crate::wire::ControlAnswer;

/// Identifies a waiting `heird reload` client; the driver keeps the reply channel.
pub type WaiterId = u64;

/// How a run ended; both mean exit status 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// SIGTERM/SIGINT: drained and stopped.
    Stopped,
    /// Handed over to the successor with this pid, then drained.
    HandedOver {
        /// The successor's pid.
        successor: i32,
    },
    /// No connection was open for `Options::idle_exit`: stopped (the socket unit starts the
    /// next process on the next connection).
    Idle,
}

/// Where this process is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// A successor: serving, waiting for its predecessor to hand over.
    Waiting,
    /// The primary: serving.
    Serving,
    /// The primary, starting a successor.
    HandingOver,
    /// The primary after a stop, for `Options::shutdown_delay`: everything is served as usual
    /// but the health check answers 503, so that a load balancer takes the host out before the
    /// drain closes anything. Then [`Phase::Stopping`].
    LameDuck,
    /// Handed over to a successor; draining.
    HandedOver(AfterHandover),
    /// Draining for a stop.
    Stopping,
    /// Done; the process exits.
    Exited(Exit),
}

/// What a process that handed over waits for before it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterHandover {
    pub successor: i32,
    /// The successor acknowledged `primary` (or exited cleanly, or the wait timed out).
    pub acked: bool,
    /// The drain finished (or reached its deadline).
    pub drained: bool,
}

/// Where draining connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainTo {
    /// Moved to the successor that took over.
    Successor,
    /// Into systemd's fd store for the next process (a stop of the primary).
    Store,
    /// Nowhere: closed gently (a successor stopped before it took over).
    Close,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGUSR2 or SIGHUP (`None`), or a control request (`Some`, to be answered).
    Reload(Option<WaiterId>),
    /// The predecessor handed over (`true`), or went away before it did (`false`).
    BecamePrimary { handed_over: bool },
    /// The predecessor closed the channel: no more moved connections will arrive.
    PredecessorDone,
    /// The successor being started said it is ready.
    SuccessorReady { pid: i32 },
    /// The successor being started failed; it is already killed and reaped.
    SuccessorFailed { reason: String },
    /// The successor acknowledged `primary`.
    SuccessorAcked,
    /// The successor did not acknowledge within the handoff timeout.
    AckTimedOut,
    /// The successor that took over exited (`clean`: status 0), and is reaped.
    SuccessorExited { clean: bool, status: String },
    /// The drain ended with `left` connections still open (closed with the process).
    DrainDone { left: usize },
    /// No connection was open for `idle_exit` (the timer runs only while
    /// [`State::idle_timer_armed`]).
    Idle,
    /// The lame duck's time (`shutdown_delay`) is over.
    LameDuckOver,
}

/// Something to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `READY=1` with a status line.
    NotifyReady(String),
    /// `RELOADING=1` + `MONOTONIC_USEC`.
    NotifyReloading,
    /// `STOPPING=1` (only ever for the primary).
    NotifyStopping,
    StartWatchdog,
    StopWatchdog,
    /// Stop taking control requests (they reach the successor instead).
    StopControl,
    /// Start the successor; its outcome comes back as `SuccessorReady` or `SuccessorFailed`.
    StartSuccessor,
    /// Stop the successor that has not taken over, and wait until it is gone.
    CancelSuccessor,
    /// `MAINPID=` + `READY=1`, the barrier, then `primary` to the successor.
    HandOver,
    /// Stop accepting now and wait until every accept loop has ended (a connection accepted
    /// before is counted in the drain); later connections wait in the socket's backlog.
    StopAccepting,
    /// Stop accepting and drain, connections going to `DrainTo`.
    StartDrain(DrainTo),
    /// Wait for the drain (bounded by the drain timeout); ends with `DrainDone`.
    WaitDrain,
    /// Start the timer that ends with `AckTimedOut`.
    ArmAckTimer,
    /// Answer a waiting `heird reload`.
    Reply(WaiterId, ControlAnswer),
    /// The successor died after the handover: become the main process again and serve.
    TakeBack {
        successor: i32,
        status: String,
    },
    /// `STOPPING=1`, the health check down, and the timer that ends with `LameDuckOver`.
    StartLameDuck,
    /// Say that a reload was ignored ([`ONE_CONNECTION`]).
    LogReloadIgnored,
    /// Leave the run loop.
    Exit(Exit),
}

/// The state of one process.
#[derive(Debug, Clone)]
pub struct State {
    pub phase: Phase,
    pub(super) generation: u64,
    /// A reload asked for while waiting to become primary, run once primary.
    pub(super) deferred: bool,
    /// Control clients waiting for the outcome of the next or current handoff.
    pub(super) waiters: Vec<WaiterId>,
    /// Our predecessor (if any) has finished passing connections to us.
    pub(super) predecessor_done: bool,
    /// How a drain in `Stopping` ends: a stop, or an idle exit.
    pub(super) stop_exit: Exit,
    /// Serving the one connection of an `Accept=yes` socket unit: nothing to hand over.
    pub(super) one_connection: bool,
    /// A stop of the primary starts with a lame duck ([`Phase::LameDuck`]).
    pub(super) lame_duck: bool,
}

impl State {
    /// A process at the start of `run`: a successor (`waiting`) or the primary. Returns the
    /// first actions too.
    pub fn start(generation: u64, waiting: bool, status: String) -> (State, Vec<Action>) {
        let state = State {
            phase: if waiting { Phase::Waiting } else { Phase::Serving },
            generation,
            deferred: false,
            waiters: Vec::new(),
            predecessor_done: !waiting,
            stop_exit: Exit::Stopped,
            one_connection: false,
            lame_duck: false,
        };
        let actions = if waiting {
            Vec::new()
        } else {
            vec![Action::NotifyReady(status), Action::StartWatchdog]
        };
        (state, actions)
    }

    /// Whether the idle timer of `Options::idle_exit` may run: only in the primary while it
    /// serves (never during a handoff or a drain, nor in a successor that is not primary yet),
    /// and once the predecessor, if any, has finished passing connections: until then more may
    /// arrive, and it may still be finishing requests in the service's cgroup, which a stop of
    /// the service would kill.
    pub fn idle_timer_armed(&self) -> bool {
        self.phase == Phase::Serving && self.predecessor_done
    }

    /// This process serves the one connection a socket unit with `Accept=yes` passed: a reload
    /// has nothing to hand over (the next connection starts a process of the new binary anyway).
    pub fn serve_one_connection(&mut self) {
        self.one_connection = true;
    }

    /// A stop of the primary first goes lame duck (`Options::shutdown_delay` is set). Not for
    /// an `Accept=yes` process, which no load balancer checks.
    pub fn lame_duck_before_stop(&mut self) {
        self.lame_duck = true;
    }

    pub fn one_connection(&self) -> bool {
        self.one_connection
    }

    pub(super) fn reply_all(&mut self, answer: ControlAnswer) -> impl Iterator<Item = Action> {
        std::mem::take(&mut self.waiters)
            .into_iter()
            .map(move |w| Action::Reply(w, answer.clone()))
    }
}

/// Why a reload of an `Accept=yes` process does nothing.
pub const ONE_CONNECTION: &str =
    "this process serves one connection (Accept=yes): there is nothing to hand over";

/// The reason given to clients when a stop ends their wait.
pub const STOPPING: &str = "the service is stopping";
