//! The lifecycle of one process as a state machine: a pure [`step`] from a [`State`] and an
//! [`Event`] to the [`Action`]s to perform. No IO happens here; [`crate::service`] turns
//! signals, control requests, channel messages, process exits and timers into events, and
//! performs the actions. Every rule about what may happen when is in this file.
//!
//! ```text
//!  Waiting ──primary──▶ Serving ──reload──▶ HandingOver ──ready──▶ HandedOver ──drained+ack──▶ exit
//!  (a successor)          ▲  │                 │    │                   │
//!                         │  │                 │  failed               successor died
//!                         │  stop, idle       stop  └──▶ Serving        └──▶ Serving (take back)
//!                         │  ▼                 ▼
//!                         └─ Stopping ◀────────┘ (successor stopped first) ──drained──▶ exit
//! ```
//!
//! Exit when idle (`Options::idle_exit`): the run loop's idle timer runs only while
//! [`State::idle_timer_armed`] (the primary, serving, nothing more to come from a predecessor)
//! and no connection is open; when it fires ([`Event::Idle`]) the process first stops
//! accepting, so that a connection arriving from then on waits in the socket's backlog for the
//! next process, then says `STOPPING=1`, closes what raced in, and exits.
//!
//! Under a socket unit with `Accept=yes` the process serves one connection
//! ([`State::serve_one_connection`]): a reload has nothing to hand over and is refused, and the
//! idle rule, with no idle time, ends the process when the connection closes.

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
    /// Say that a reload was ignored ([`ONE_CONNECTION`]).
    LogReloadIgnored,
    /// Leave the run loop.
    Exit(Exit),
}

/// The state of one process.
#[derive(Debug, Clone)]
pub struct State {
    pub phase: Phase,
    generation: u64,
    /// A reload asked for while waiting to become primary, run once primary.
    deferred: bool,
    /// Control clients waiting for the outcome of the next or current handoff.
    waiters: Vec<WaiterId>,
    /// Our predecessor (if any) has finished passing connections to us.
    predecessor_done: bool,
    /// How a drain in `Stopping` ends: a stop, or an idle exit.
    stop_exit: Exit,
    /// Serving the one connection of an `Accept=yes` socket unit: nothing to hand over.
    one_connection: bool,
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

    pub fn one_connection(&self) -> bool {
        self.one_connection
    }

    fn reply_all(&mut self, answer: ControlAnswer) -> impl Iterator<Item = Action> {
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

/// The transition function.
pub fn step(state: &mut State, event: Event) -> Vec<Action> {
    use Action as A;
    use Event as E;
    let mut out = Vec::new();
    let phase = state.phase.clone();
    match (phase, event) {
        (Phase::Exited(_), _) => {}

        // Reload requests.
        (Phase::Waiting, E::Reload(w)) => {
            state.deferred = true;
            state.waiters.extend(w);
        }
        (Phase::Serving, E::Reload(w)) if state.one_connection => {
            out.push(A::LogReloadIgnored);
            out.extend(w.map(|w| A::Reply(w, ControlAnswer::Failed(ONE_CONNECTION.into()))));
        }
        (Phase::Serving, E::Reload(w)) => {
            state.waiters.extend(w);
            state.phase = Phase::HandingOver;
            out.extend([A::NotifyReloading, A::StartSuccessor]);
        }
        (Phase::HandingOver, E::Reload(w)) => state.waiters.extend(w),
        (Phase::HandedOver(h), E::Reload(Some(w))) => out.push(A::Reply(
            w,
            ControlAnswer::Retry(format!("handed over to pid {}", h.successor)),
        )),
        (Phase::Stopping, E::Reload(Some(w))) => {
            out.push(A::Reply(w, ControlAnswer::Failed(STOPPING.into())))
        }
        (_, E::Reload(_)) => {}

        // Becoming primary.
        (Phase::Waiting, E::BecamePrimary { .. }) => {
            state.phase = Phase::Serving;
            out.push(A::StartWatchdog);
            if std::mem::take(&mut state.deferred) {
                state.phase = Phase::HandingOver;
                out.extend([A::NotifyReloading, A::StartSuccessor]);
            }
        }
        (_, E::BecamePrimary { .. }) => {}
        (Phase::HandedOver(h), E::PredecessorDone) => {
            state.predecessor_done = true;
            if !h.drained {
                out.push(A::WaitDrain);
            }
        }
        (_, E::PredecessorDone) => state.predecessor_done = true,

        // Stops.
        (Phase::Waiting, E::Stop) => {
            state.phase = Phase::Stopping;
            out.extend(state.reply_all(ControlAnswer::Failed(STOPPING.into())));
            out.extend([A::StopControl, A::StartDrain(DrainTo::Close), A::WaitDrain]);
        }
        (Phase::Serving | Phase::HandingOver, E::Stop) => {
            if state.phase == Phase::HandingOver {
                out.push(A::CancelSuccessor);
            }
            state.phase = Phase::Stopping;
            out.extend(state.reply_all(ControlAnswer::Failed(STOPPING.into())));
            out.extend([
                A::NotifyStopping,
                A::StopControl,
                A::StopWatchdog,
                A::StartDrain(DrainTo::Store),
                A::WaitDrain,
            ]);
        }
        // After the handover the service is the successor's: a stop of this process changes
        // nothing (it is already draining; see docs/FAULTS.md).
        (_, E::Stop) => {}

        // Idle exit. Accepting stops before anything else: from the decision on, a new
        // connection waits in the socket unit's backlog and starts the next process. One that
        // raced in before is served and closed (not stored: nothing would start a process for
        // it). A timer that fired as the phase changed is ignored.
        (Phase::Serving, E::Idle) if state.idle_timer_armed() => {
            state.phase = Phase::Stopping;
            state.stop_exit = Exit::Idle;
            out.extend([
                A::StopAccepting,
                A::NotifyStopping,
                A::StopControl,
                A::StopWatchdog,
                A::StartDrain(DrainTo::Close),
                A::WaitDrain,
            ]);
        }
        (_, E::Idle) => {}

        // The successor's outcome.
        (Phase::HandingOver, E::SuccessorFailed { reason }) => {
            state.phase = Phase::Serving;
            out.push(A::NotifyReady(format!("handoff failed: {reason}")));
            out.extend(state.reply_all(ControlAnswer::Failed(reason)));
        }
        (Phase::HandingOver, E::SuccessorReady { pid }) => {
            state.phase = Phase::HandedOver(AfterHandover {
                successor: pid,
                acked: false,
                drained: false,
            });
            out.extend([
                A::HandOver,
                A::StopControl,
                A::StopWatchdog,
                A::StartDrain(DrainTo::Successor),
                A::ArmAckTimer,
            ]);
            let answer = ControlAnswer::Ok {
                pid: pid as u32,
                generation: state.generation + 1,
            };
            out.extend(state.reply_all(answer));
            // Connections our own predecessor is still moving to us must be passed on first.
            if state.predecessor_done {
                out.push(A::WaitDrain);
            }
        }
        (_, E::SuccessorReady { .. } | E::SuccessorFailed { .. }) => {}

        // After the handover.
        (Phase::HandedOver(mut h), E::SuccessorAcked | E::AckTimedOut) => {
            h.acked = true;
            finish_handover(state, h, &mut out);
        }
        (Phase::HandedOver(mut h), E::SuccessorExited { clean: true, .. }) => {
            h.acked = true;
            finish_handover(state, h, &mut out);
        }
        (Phase::HandedOver(h), E::SuccessorExited { clean: false, status }) => {
            state.phase = Phase::Serving;
            out.push(A::TakeBack {
                successor: h.successor,
                status,
            });
        }
        (Phase::HandedOver(mut h), E::DrainDone { .. }) => {
            h.drained = true;
            finish_handover(state, h, &mut out);
        }
        (Phase::Stopping, E::DrainDone { .. }) => {
            state.phase = Phase::Exited(state.stop_exit);
            out.push(A::Exit(state.stop_exit));
        }
        (_, E::SuccessorAcked | E::AckTimedOut | E::SuccessorExited { .. } | E::DrainDone { .. }) => {}
    }
    out
}

fn finish_handover(state: &mut State, h: AfterHandover, out: &mut Vec<Action>) {
    if h.acked && h.drained {
        let exit = Exit::HandedOver {
            successor: h.successor,
        };
        state.phase = Phase::Exited(exit);
        out.push(Action::Exit(exit));
    } else {
        state.phase = Phase::HandedOver(h);
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
