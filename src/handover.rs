//! The two ends of the handover on the handoff channel.
//!
//! - The old process, once its successor is ready: `MAINPID=` + `READY=1`, `BARRIER=1` (so that
//!   systemd has processed the new main pid before anything else happens), then `primary` to the
//!   successor. From then on the successor is the service and outlives us.
//! - The successor: waits for `primary` (answers `primary-ack`), serves the connections its
//!   predecessor moves over, and notices when the predecessor closes the channel.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::channel::Channel;
use crate::fault::{self, Step};
use crate::handle::StateSlot;
use crate::lifecycle::Event;
use crate::notify;
use crate::server::Server;
use crate::successor::Successor;
use crate::wire::ChannelMsg;

/// MAINPID + READY, then the barrier, then tell the successor it is primary. After this the
/// process says nothing more to systemd, and the successor is no longer killed with us.
pub async fn hand_over(
    successor: &mut Successor,
    generation: u64,
    barrier_timeout: Duration,
    state: Option<Vec<u8>>,
) {
    let pid = successor.pid();
    successor.child.release();
    notify::handed_over(
        pid as u32,
        &format!("serving, generation {}, pid {pid}", generation + 1),
    );
    fault::point_with_peer(Step::MainPidSent, pid as u32);
    match tokio::task::spawn_blocking(move || notify::barrier(barrier_timeout)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "barrier failed; systemd may not have processed MAINPID yet"),
        Err(e) => warn!(error = %e, "barrier task failed"),
    }
    fault::point_with_peer(Step::BarrierDone, pid as u32);
    if let Some(bytes) = state
        && let Err(e) = successor.channel.send(&ChannelMsg::State(&bytes)).await
    {
        warn!(pid, bytes = bytes.len(), error = %e, "cannot hand the state over");
    }
    if let Err(e) = successor.channel.send(&ChannelMsg::Primary).await {
        warn!(pid, error = %e, "cannot tell the successor it is primary");
    }
    info!(
        successor = pid,
        generation = generation + 1,
        ready_ms = successor.ready_after.as_secs_f64() * 1e3,
        "handed over; draining"
    );
}

/// The successor's side of the channel: `primary` makes this process the primary; `conn`
/// messages bring moved connections; EOF means the predecessor is gone (before `primary`: it
/// went away without handing over, and this process carries on as the primary).
pub async fn predecessor_channel(
    ch: Channel,
    events: mpsc::UnboundedSender<Event>,
    server: Server,
    state: StateSlot,
) {
    let mut primary = false;
    loop {
        let (msg, fd) = match ch.recv_with_fd().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "handoff channel failed");
                break;
            }
        };
        match (ChannelMsg::parse(&msg), fd) {
            (
                Some(ChannelMsg::Conn {
                    kind,
                    moves,
                    client,
                    unread,
                }),
                Some(fd),
            ) => {
                if let Err(e) = server.adopt(kind, moves, client, unread, fd) {
                    warn!(error = %e, "cannot serve a moved connection");
                }
            }
            (Some(ChannelMsg::Ws(w)), Some(fd)) => {
                if let Err(e) = server.adopt_ws(&w, fd) {
                    warn!(error = %e, "cannot resume a moved websocket");
                }
            }
            (Some(ChannelMsg::Conn { .. } | ChannelMsg::Ws(_)), None) => {
                warn!("moved connection without its fd")
            }
            (Some(ChannelMsg::State(bytes)), _) => {
                *state.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
            }
            (Some(ChannelMsg::Primary), _) => {
                if !primary {
                    primary = true;
                    info!("predecessor handed over; now primary");
                    let _ = events.send(Event::BecamePrimary { handed_over: true });
                }
                if let Err(e) = ch.send(&ChannelMsg::PrimaryAck).await {
                    warn!(error = %e, "cannot acknowledge the handover");
                }
            }
            _ => warn!(
                message = %String::from_utf8_lossy(&msg[..msg.len().min(64)]),
                "unexpected message from the predecessor"
            ),
        }
    }
    if !primary {
        warn!("predecessor went away before handing over; carrying on as primary");
        let _ = events.send(Event::BecamePrimary { handed_over: false });
    }
    let _ = events.send(Event::PredecessorDone);
}
