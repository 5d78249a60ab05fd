//! The supervisor's state machine: a pure [`Machine::step`] from an [`Event`] to the
//! [`Action`]s to perform, beside the worker's own machine in `lifecycle`. No IO happens here;
//! `supervise` turns signals, notify datagrams, reaped children and timers into events.
//!
//! ```text
//!  Starting ──READY──▶ Running ──main exits ≠ 0──▶ Restarting ──backoff──▶ (spawn) ─┐
//!     │                  │  ▲                        ▲                              │
//!     │                  │  └──────────READY─────────┼──────────────────────────────┘
//!   main exits          stop, or main exits 0        └── the new worker exits ≠ 0 before READY
//!   (exit with its       ▼
//!    status)          Stopping ──main gone, no children left (or the grace is up)──▶ exit
//! ```
//!
//! The rules, each with a test below:
//! - The main worker is the one we started, then whichever pid a worker names in `MAINPID=`
//!   (the old worker names its successor at a handoff, or itself when it takes the service back).
//! - `READY`, `RELOADING`, `STOPPING`, `STATUS` and `WATCHDOG` pass through to our own manager
//!   when the main worker sent them (or a worker that names itself the main one: a take-back);
//!   from any other worker they stay here. `MAINPID=`, `BARRIER=` and fd-store messages never
//!   pass (our pid is the service's pid).
//! - A reload signal goes to the main worker once it is ready; before that it is dropped (the
//!   worker may not have its handler yet, and the signal would kill it).
//! - A reload signal during a handoff (after `RELOADING=1`, before the `READY=1` that ends it)
//!   is held and passed on once the handoff is done, to the worker that serves then: each
//!   signal gives one more handoff, and none reaches a worker that is handing over already.
//! - A stop signal goes to the main worker; we exit once it has exited and every other child
//!   (an old worker still draining) is gone, with the main worker's status.
//! - A worker that exits before it was ever ready ends the supervisor with its status: a
//!   configuration error must not become a restart loop.
//! - A main worker that exits non-zero after it was ready is restarted after a backoff that
//!   doubles per crash (from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]) and starts over once a worker
//!   stayed up for [`STABLE_AFTER`]. The listening sockets stay open meanwhile. Our other
//!   children get SIGTERM first: a successor the crashed worker had started would otherwise
//!   serve beside the new worker (a worker that was draining ignores it).
//! - A main worker that exits 0 on its own (someone stopped it directly) ends the service.

use std::time::Duration;

/// The first restart's delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest delay between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A worker up this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a stop waits for children other than the main worker once the main worker exited.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Where the supervisor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first worker is starting; nothing was ever ready.
    Starting,
    /// A worker said ready.
    Running,
    /// Waiting out the backoff, or for a restarted worker's READY.
    Restarting,
    /// A stop: waiting for the workers to exit.
    Stopping,
    /// Done.
    Exited,
}

/// A signal the supervisor passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Hup,
    Usr2,
    Term,
    Int,
}

/// One `KEY=VALUE` line of a notify datagram, as far as the supervisor cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    MainPid(i32),
    Ready,
    /// Any other line that our manager should see (`RELOADING=1`, `STATUS=…`, …), verbatim.
    Relay(String),
    /// A line that stays here (`BARRIER=1`, fd-store messages, unknown keys).
    Drop,
}

impl Line {
    /// Classifies one line of a datagram.
    pub fn parse(line: &str) -> Line {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        match key {
            "MAINPID" => value.trim().parse().map_or(Line::Drop, Line::MainPid),
            "READY" if value == "1" => Line::Ready,
            "RELOADING"
            | "MONOTONIC_USEC"
            | "STOPPING"
            | "STATUS"
            | "WATCHDOG"
            | "EXTEND_TIMEOUT_USEC"
            | "ERRNO" => Line::Relay(line.to_string()),
            _ => Line::Drop,
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker was started with this pid.
    Started(i32),
    /// A worker could not be started at all (fork or exec failed).
    SpawnFailed(String),
    /// A notify datagram from one of our workers (`from`: the sender's pid, when known).
    Notified { from: Option<i32>, lines: Vec<Line> },
    /// A signal to us.
    Signal(Sig),
    /// A child of ours exited (reaped) with this shell-style status (code, or 128 + signal).
    Exited { pid: i32, status: i32 },
    /// We have no child left.
    NoChildren,
    /// The restart backoff is over.
    BackoffDone,
    /// The stop's grace for leftover children is over.
    GraceDone,
}

/// Something to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker with the sockets; reports `Started` or `SpawnFailed`.
    Spawn,
    /// Send this signal to this pid.
    Forward(i32, Sig),
    /// Send these lines to our own manager in one datagram.
    Relay(Vec<String>),
    /// SIGTERM to every child of ours (the main worker has died).
    StopOthers,
    /// Start the timer that ends with `BackoffDone`.
    Backoff(Duration),
    /// Start the timer that ends with `GraceDone`.
    Grace(Duration),
    /// Exit with this status.
    Exit(u8),
}

/// The supervisor's state.
#[derive(Debug, Clone)]
pub struct Machine {
    pub phase: Phase,
    /// The worker that serves now (or is starting).
    pub main: Option<i32>,
    /// When the current worker said ready (for the backoff reset).
    ready_at: Option<Duration>,
    /// Crashes since the last stable worker.
    crashes: u32,
    /// The status to exit with once a stop is done.
    exit_status: u8,
    /// A worker said `RELOADING=1` and has not said `READY=1` since.
    reloading: bool,
    /// A reload signal that came during a handoff, for the worker that serves after it.
    held_reload: Option<Sig>,
}

fn status_byte(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(1)
}

impl Machine {
    /// A supervisor that starts its first worker.
    pub fn start() -> (Machine, Vec<Action>) {
        let m = Machine {
            phase: Phase::Starting,
            main: None,
            ready_at: None,
            crashes: 0,
            exit_status: 0,
            reloading: false,
            held_reload: None,
        };
        (m, vec![Action::Spawn])
    }

    /// The restart delay after `crashes` crashes in a row (1 → [`BACKOFF_MIN`]).
    pub fn backoff(crashes: u32) -> Duration {
        let factor = 1u32 << crashes.saturating_sub(1).min(16);
        BACKOFF_MIN.saturating_mul(factor).min(BACKOFF_MAX)
    }

    /// One step; `now` is the time since the supervisor started.
    pub fn step(&mut self, event: Event, now: Duration) -> Vec<Action> {
        if self.phase == Phase::Exited {
            return vec![];
        }
        match event {
            Event::Started(pid) => {
                self.main = Some(pid);
                vec![]
            }
            Event::SpawnFailed(reason) => self.worker_gone(None, 127, now, reason),
            Event::Notified { from, lines } => self.notified(from, lines, now),
            Event::Signal(sig) => self.signal(sig),
            Event::Exited { pid, status } if self.main == Some(pid) => {
                self.main = None;
                self.worker_gone(Some(pid), status, now, String::new())
            }
            Event::Exited { .. } => vec![],
            Event::NoChildren if self.phase == Phase::Stopping && self.main.is_none() => self.exit(),
            Event::NoChildren => vec![],
            Event::BackoffDone if self.phase == Phase::Restarting && self.main.is_none() => {
                vec![Action::Spawn]
            }
            Event::BackoffDone => vec![],
            Event::GraceDone if self.phase == Phase::Stopping && self.main.is_none() => self.exit(),
            Event::GraceDone => vec![],
        }
    }

    fn exit(&mut self) -> Vec<Action> {
        self.phase = Phase::Exited;
        vec![Action::Exit(self.exit_status)]
    }

    fn notified(&mut self, from: Option<i32>, lines: Vec<Line>, now: Duration) -> Vec<Action> {
        let speaks_for_the_service = match (from, self.main) {
            // The main worker, or one that names itself the main one (a take-back).
            (Some(from), Some(main)) => from == main || lines.contains(&Line::MainPid(from)),
            _ => true,
        };
        if !speaks_for_the_service {
            // A worker that does not serve: it may name the next main worker, nothing else.
            if let Some(pid) = lines.iter().find_map(|l| match l {
                Line::MainPid(p) if *p > 0 => Some(*p),
                _ => None,
            }) {
                self.main = Some(pid);
            }
            return vec![];
        }
        let mut relay = Vec::new();
        let mut then = Vec::new();
        for line in lines {
            match line {
                Line::MainPid(pid) if pid > 0 => self.main = Some(pid),
                Line::MainPid(_) | Line::Drop => {}
                Line::Ready => {
                    if matches!(self.phase, Phase::Starting | Phase::Restarting) {
                        self.phase = Phase::Running;
                        self.ready_at = Some(now);
                    }
                    relay.push("READY=1".to_string());
                    self.reloading = false;
                    if let (Some(sig), Some(main)) = (self.held_reload.take(), self.main) {
                        then.push(Action::Forward(main, sig));
                    }
                }
                Line::Relay(l) => {
                    self.reloading |= l == "RELOADING=1";
                    relay.push(l);
                }
            }
        }
        let mut actions = Vec::new();
        if !relay.is_empty() {
            actions.push(Action::Relay(relay));
        }
        actions.extend(then);
        actions
    }

    fn signal(&mut self, sig: Sig) -> Vec<Action> {
        match (sig, self.phase, self.main) {
            (Sig::Hup | Sig::Usr2, Phase::Running, Some(_)) if self.reloading => {
                self.held_reload = Some(sig);
                vec![]
            }
            (Sig::Hup | Sig::Usr2, Phase::Running, Some(main)) => vec![Action::Forward(main, sig)],
            (Sig::Hup | Sig::Usr2, _, _) => vec![],
            (Sig::Term | Sig::Int, Phase::Stopping, Some(main)) => vec![Action::Forward(main, sig)],
            (Sig::Term | Sig::Int, _, main) => {
                self.phase = Phase::Stopping;
                match main {
                    Some(main) => vec![Action::Forward(main, sig)],
                    // In the backoff: nobody to stop; exit once the leftovers are gone.
                    None => vec![Action::Grace(STOP_GRACE)],
                }
            }
        }
    }

    /// The main worker exited (`pid`), or a new one could not be started (`None`).
    fn worker_gone(&mut self, pid: Option<i32>, status: i32, now: Duration, reason: String) -> Vec<Action> {
        match self.phase {
            Phase::Starting => {
                self.phase = Phase::Stopping;
                self.exit_status = status_byte(status);
                vec![Action::Grace(STOP_GRACE)]
            }
            Phase::Stopping => {
                self.exit_status = status_byte(status);
                vec![Action::Grace(STOP_GRACE)]
            }
            Phase::Running | Phase::Restarting if status == 0 && pid.is_some() => {
                self.phase = Phase::Stopping;
                self.exit_status = 0;
                vec![Action::Grace(STOP_GRACE)]
            }
            Phase::Running | Phase::Restarting => {
                let stable = self
                    .ready_at
                    .is_some_and(|at| now.saturating_sub(at) >= STABLE_AFTER);
                self.crashes = if stable { 1 } else { self.crashes + 1 };
                self.ready_at = None;
                self.phase = Phase::Restarting;
                let delay = Machine::backoff(self.crashes);
                let who = pid.map_or_else(|| format!("a new worker: {reason}"), |p| format!("worker {p}"));
                let status_line = format!(
                    "STATUS={who} failed (status {status}); restarting in {} ms",
                    delay.as_millis()
                );
                self.reloading = false;
                self.held_reload = None;
                vec![
                    Action::Relay(vec![status_line]),
                    Action::StopOthers,
                    Action::Backoff(delay),
                ]
            }
            Phase::Exited => vec![],
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
