//! The run loop's bigger actions: starting and cancelling a successor, starting a drain, and
//! taking the service back from a successor that died.

use std::os::fd::AsFd;
use std::time::Duration;

use tracing::{error, info, warn};

use super::Driver;
use crate::drain::Drain;
use crate::fault::{self, Step};
use crate::lifecycle::DrainTo;
use crate::notify::{self, NotifyState};
use crate::options::RunError;
use crate::server::Server;
use crate::successor;

impl Driver {
    pub(super) fn start_successor(&mut self) {
        let Some(listeners) = self.listeners.clone() else {
            return;
        };
        let control = self.control.fd();
        // TLS session-ticket keys for the successor (a memfd), so that tickets survive.
        let keys = self.server.tls_ticket_keys();
        let (exe, args, generation) = (self.exe.clone(), self.args.clone(), self.generation);
        let (timeout, grace) = (self.opts.handoff_timeout, self.opts.drain_timeout);
        self.cancel.send_replace(false);
        let mut cancel = self.cancel.subscribe();
        self.running = Some(tokio::spawn(async move {
            let spawn = successor::Spawn {
                exe: &exe,
                args: &args,
                listeners: &listeners,
                control: control.as_deref().map(|f| f.as_fd()),
                tls_ticket_keys: keys.as_ref().map(|f| f.as_fd()),
                generation,
                timeout,
            };
            successor::start(
                spawn,
                async move {
                    let _ = cancel.wait_for(|c| *c).await;
                },
                grace,
            )
            .await
        }));
    }

    /// A stop during a handoff: the successor never takes over. It may already serve
    /// connections, so it is stopped gently (SIGTERM, then its own drain), and reaped before
    /// this process goes on, so a stop leaves nothing serving.
    pub(super) async fn cancel_successor(&mut self) {
        self.cancel.send_replace(true);
        if let Some(task) = self.running.take() {
            let bound = self.opts.drain_timeout + Duration::from_secs(5);
            match tokio::time::timeout(bound, task).await {
                Ok(Ok(Ok(mut s))) => {
                    let status = s.child.stop(self.opts.drain_timeout).await;
                    warn!(pid = s.pid(), %status, "stopping: successor was ready but not handed over; stopped it");
                }
                Ok(Ok(Err(e))) => info!(reason = %e, "handoff cancelled by stop"),
                Ok(Err(e)) => warn!(error = %e, "handoff task failed"),
                Err(_) => warn!("handoff did not cancel in time"),
            }
        }
    }

    /// A stop with `Options::shutdown_delay`: the health check goes down (through
    /// [`crate::Draining::is_stopping`] and [`crate::Status::LameDuck`]) while everything is
    /// served, until the timer ends it.
    pub(super) fn start_lame_duck(&mut self) {
        let delay = self.opts.shutdown_delay;
        self.drain.start_lame_duck();
        notify::stopping(&format!(
            "lame duck: /healthz answers 503 for {delay:?}, then the drain"
        ));
        info!(
            generation = self.generation,
            delay_ms = delay.as_millis() as u64,
            "stopping after a lame duck: the health check answers 503, everything else is served"
        );
        self.lame_duck = Some(Box::pin(tokio::time::sleep(delay)));
    }

    pub(super) fn start_drain(&mut self, to: DrainTo) {
        match to {
            DrainTo::Successor => {
                if let Some(s) = &self.handed {
                    // Idle connections move to the successor. The drain starts before anyone
                    // hears "ok": from then on, new connections reach the successor.
                    self.server.move_to(s.channel.clone());
                    self.drain.start_for(crate::drain::DrainReason::Handoff);
                    fault::point_with_peer(Step::DrainStarted, s.pid() as u32);
                    return;
                }
            }
            DrainTo::Store => {
                // Under systemd with an fd store, idle keep-alive connections wait there for the
                // next process (a restart); a final stop releases the store, which closes them.
                let listeners = self.listeners();
                let stored = listeners
                    .iter()
                    .filter(|l| crate::fdstore::is_bound_listener(&l.name))
                    .count() as u64;
                let others = listeners.len() as u64 - stored;
                if let Some(room) =
                    crate::fdstore::connection_room(stored, others, crate::listeners::MAX_LISTEN_FDS)
                {
                    self.server.store_on_stop(room);
                }
                if let Some(save) = &self.save_state
                    && crate::fdstore::available()
                {
                    match crate::fdstore::store_bytes(crate::fdstore::STATE_NAME, &save()) {
                        Ok(()) => info!("state kept in the fd store"),
                        Err(e) => warn!(error = %e, "cannot keep the state in the fd store"),
                    }
                }
                // Release the sockets now (unless systemd holds them), then drain.
                self.listeners = None;
            }
            DrainTo::Close => self.listeners = None,
        }
        self.drain.start();
    }

    /// The successor died after the handover: nobody would hold the sockets. Become the main
    /// process again and serve.
    pub(super) fn take_back(&mut self, successor: i32, status: &str) -> Result<(), RunError> {
        error!(successor, %status, "the successor died after the handover; taking the service back");
        notify::send(&[
            NotifyState::MainPid(std::process::id()),
            NotifyState::Ready,
            NotifyState::Status(&format!(
                "successor {successor} died; serving again, pid {}",
                std::process::id()
            )),
        ]);
        self.handed = None;
        // Its connections went with it.
        crate::metrics::region::forget_open(self.generation + 1);
        self.awaiting_ack = false;
        self.ack_timer = None;
        self.drain_wait = None;
        self.drain = Drain::new();
        // The idle timer watched the old drain.
        self.idle = None;
        let listeners = self.listeners.clone().unwrap_or_default();
        let serve = self
            .opts
            .serve
            .clone()
            .with_drain_timeout(self.opts.drain_timeout);
        self.server =
            Server::spawn(&listeners, self.routes.clone(), &self.drain, &serve).map_err(RunError::Serve)?;
        self.control.restart();
        self.watchdog = notify::start_watchdog();
        Ok(())
    }
}

/// Counts a handoff's outcome in the metrics: the successor's answer while handing over.
pub(super) fn count_outcome(phase: &crate::lifecycle::Phase, event: &super::Event) {
    use crate::metrics::region::{HANDOFFS_FAILED, HANDOFFS_SUCCEEDED, inc};
    if *phase == crate::lifecycle::Phase::HandingOver {
        match event {
            super::Event::SuccessorReady { .. } => inc(HANDOFFS_SUCCEEDED),
            super::Event::SuccessorFailed { .. } => inc(HANDOFFS_FAILED),
            _ => {}
        }
    }
}
