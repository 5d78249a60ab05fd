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
//! A lame duck (`Options::shutdown_delay`): a stop of the primary first enters
//! [`Phase::LameDuck`] for that long (everything served, the health check down), then stops as
//! above. A reload never does: nothing leaves.
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

mod state;

pub use state::*;

use crate::wire::ControlAnswer;

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
        (Phase::Stopping | Phase::LameDuck, E::Reload(Some(w))) => {
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
        // A stop of the primary: a handoff under way is cancelled (no successor would be the
        // service). With a shutdown delay, lame duck first: everything is served, the health
        // check says down, and a reload from now on is refused.
        (Phase::Serving | Phase::HandingOver, E::Stop) => {
            if state.phase == Phase::HandingOver {
                out.push(A::CancelSuccessor);
            }
            if state.lame_duck && !state.one_connection {
                state.phase = Phase::LameDuck;
                out.extend(state.reply_all(ControlAnswer::Failed(STOPPING.into())));
                out.push(A::StartLameDuck);
            } else {
                stop_primary(state, &mut out);
            }
        }
        // The delay is over, or a second stop cuts it short (a second Ctrl-C): the stop goes
        // on as without a delay.
        (Phase::LameDuck, E::LameDuckOver | E::Stop) => stop_primary(state, &mut out),
        (_, E::LameDuckOver) => {}
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

/// The primary stops: connections go into the fd store (or are closed), then it exits.
fn stop_primary(state: &mut State, out: &mut Vec<Action>) {
    state.phase = Phase::Stopping;
    out.extend(state.reply_all(ControlAnswer::Failed(STOPPING.into())));
    out.extend([
        Action::NotifyStopping,
        Action::StopControl,
        Action::StopWatchdog,
        Action::StartDrain(DrainTo::Store),
        Action::WaitDrain,
    ]);
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
mod tests;
