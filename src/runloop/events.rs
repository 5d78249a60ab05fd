//! The run loop's events: the signals heird handles, and the next event from the world
//! (signals, [`crate::Handle::stop`], control requests, the predecessor's channel, the
//! successor: ready, acknowledging, exiting; the timers of the acknowledgement, the drain and
//! idle exit).

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::Driver;
use crate::lifecycle::{self, Event};
use crate::successor::HandoffError;
use crate::wire::ChannelMsg;

/// The signals heird handles.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// The next signal, as an event: SIGTERM/SIGINT stop, SIGUSR2/SIGHUP hand over.
    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop,
            _ = self.int.recv() => Event::Stop,
            _ = self.usr2.recv() => Event::Reload(None),
            _ = self.hup.recv() => Event::Reload(None),
        }
    }

    pub(crate) fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr2: signal(SignalKind::user_defined2())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Driver {
    /// The next event from the world; `None` for what needs no step (a message from the
    /// successor that is not its acknowledgement).
    pub(super) async fn next_event(&mut self, sig: &mut Option<Signals>) -> Option<Event> {
        let signals = sig.is_some();
        let event = tokio::select! {
            ev = async { sig.as_mut().expect("guarded").next().await }, if signals => ev,
            // (The watch guard must not live across the select: the run future is Send.)
            _ = async { let _ = self.stop.wait_for(|s| *s).await; }, if !self.stop_asked => {
                self.stop_asked = true;
                Event::Stop
            }
            Some(req) = self.ctl_rx.recv() => {
                let id = self.next_waiter;
                self.next_waiter += 1;
                self.waiters.insert(id, req.reply);
                Event::Reload(Some(id))
            }
            Some(ev) = self.events.recv() => ev,
            res = async { self.running.as_mut().expect("guarded").await }, if self.running.is_some() => {
                self.running = None;
                match res.unwrap_or_else(|e| Err(HandoffError::Spawn(std::io::Error::other(e)))) {
                    Ok(s) => {
                        let pid = s.pid();
                        self.handed = Some(s);
                        Event::SuccessorReady { pid }
                    }
                    Err(e) => {
                        error!(error = %e, "handoff failed; still serving");
                        Event::SuccessorFailed { reason: e.to_string() }
                    }
                }
            }
            msg = async { self.handed.as_ref().expect("guarded").channel.recv().await }, if self.awaiting_ack && self.handed.is_some() => {
                match msg {
                    Ok(Some(m)) if ChannelMsg::parse(&m) == Some(ChannelMsg::PrimaryAck) => {
                        self.awaiting_ack = false;
                        Event::SuccessorAcked
                    }
                    Ok(Some(m)) => {
                        warn!(message = %String::from_utf8_lossy(&m[..m.len().min(64)]), "unexpected message from the successor");
                        return None;
                    }
                    // Closed without an acknowledgement: it is exiting or gone; its exit
                    // (or the acknowledgement timer) decides.
                    _ => {
                        self.awaiting_ack = false;
                        return None;
                    }
                }
            }
            _ = async { self.handed.as_ref().expect("guarded").child.exited().await }, if self.handed.is_some() && self.state.phase != lifecycle::Phase::HandingOver => {
                let mut s = self.handed.take().expect("guarded");
                let (clean, status) = s.child.reap().await;
                if clean {
                    info!(successor = s.pid(), "the successor exited cleanly; finishing the drain");
                }
                Event::SuccessorExited { clean, status }
            }
            _ = async { self.ack_timer.as_mut().expect("guarded").await }, if self.ack_timer.is_some() => {
                self.ack_timer = None;
                warn!("no acknowledgement from the successor in time");
                Event::AckTimedOut
            }
            left = async { self.drain_wait.as_mut().expect("guarded").await }, if self.drain_wait.is_some() => {
                self.drain_wait = None;
                Event::DrainDone { left }
            }
            _ = async { self.lame_duck.as_mut().expect("guarded").await }, if self.lame_duck.is_some() => {
                self.lame_duck = None;
                info!("lame duck over; stopping");
                Event::LameDuckOver
            }
            _ = async { self.idle.as_mut().expect("guarded").await }, if self.idle.is_some() => {
                self.idle = None;
                let idle_ms = self.opts.idle_exit.unwrap_or_default().as_millis() as u64;
                if self.state.one_connection() {
                    info!("the connection closed; exiting");
                } else {
                    info!(idle_ms, "no connection for the idle time; exiting");
                }
                Event::Idle
            }
        };
        Some(event)
    }
}
