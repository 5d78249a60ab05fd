//! Serving: one accept loop per listener (TCP or Unix); each connection speaks HTTP/1.1 (with
//! upgrades: WebSocket) or HTTP/2 with prior knowledge on the same socket, and is served by
//! hyper driving the axum `Router`. axum's own `serve` hides connections; we need them, to
//! drain each one the way its protocol allows and to move idle HTTP/1.1 ones to a successor.
//!
//! - `io`: a connection's IO (replays bytes read early, counts bytes, holds a socket whole
//!   while it moves, keeps the connection counted in the drain).
//! - `served`: the one IO type hyper serves, whatever the connection (so hyper is compiled once).
//! - `sniff`: HTTP/1.1 or the HTTP/2 preface.
//! - `h1` and `h2`: serving each protocol, and what each does at a drain.
//! - `request`: what every request carries (`ConnectInfo`, [`crate::Draining`],
//!   [`ConnectionMoves`]) and, on HTTP/1.1, the in-flight accounting.
//! - `moves`: connections out to the successor or the fd store, and back in.
//! - `pace`: each connection's turn in a drain; a handoff hands turns out at a steady rate, so
//!   thousands of idle connections do not all move at once.
//! - `tls`: TLS listeners: the handshake (bounded, with bad input told apart), then h1 or h2 by
//!   ALPN. TLS connections never move; a drain closes them as its protocol allows.
//! - `peer`: `ConnectInfo` types ([`UnixPeer`]).
//! - `tick`: the coarse clock of the HTTP/1.1 header-read check (one thread, no timer per
//!   connection).
//! - [`ws`]: WebSockets that move to the successor with their handler's state.

mod h1;
mod h2;
mod io;
mod moves;
mod pace;
mod peer;
mod request;
mod routes;
mod served;
mod sniff;
mod tick;
mod tls;
pub mod ws;

use std::io as stdio;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::net::{TcpListener, UnixListener};
use tracing::{debug, info, warn};

use crate::channel::Channel;
use crate::drain::Drain;
use crate::listeners::{Family, Listener};
use io::{ConnIo, ConnState};
use moves::Mover;
use peer::Peer;
pub use peer::UnixPeer;
use request::ReqCtx;
pub use routes::Routes;
use served::{Servable, Served};
use sniff::Proto;

/// Settings of the connection layer.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// While draining, an idle connection is closed after this long without activity.
    pub idle_close_grace: Duration,
    /// A request head must arrive within this long (slow-header clients are cut off). Checked
    /// once per period per connection, not timed per request: on HTTP/1.1 a connection that
    /// started no request for a whole period, with nothing in flight, is closed, so a head
    /// arrives within one to two periods of the last response (keep-alive connections idle
    /// that long are closed too). Before the first bytes: within one period.
    pub header_read_timeout: Duration,
    /// Move idle keep-alive connections to the successor at a handoff (instead of closing them).
    pub move_connections: bool,
    /// At a move, a resumable WebSocket ([`crate::ws`]) in the middle of a fragmented message
    /// or a frame gets this long to reach a message boundary; then it is closed with 1012.
    /// `None` (the default): until a second before the drain deadline (half the drain timeout
    /// when that is shorter), so the close goes out before the process exits.
    pub ws_boundary_timeout: Option<Duration>,
    /// TLS on every listener, or on those it names; `None`: plain HTTP everywhere.
    pub tls: Option<Arc<crate::tls::TlsSetup>>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            idle_close_grace: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            move_connections: true,
            ws_boundary_timeout: None,
            tls: None,
        }
    }
}

impl ServeSettings {
    /// Fills in what depends on the drain timeout.
    pub(crate) fn with_drain_timeout(mut self, drain_timeout: Duration) -> ServeSettings {
        let close = Duration::from_secs(1).min(drain_timeout / 2);
        self.ws_boundary_timeout
            .get_or_insert(drain_timeout.saturating_sub(close));
        self
    }
}

/// How many times the connection a request arrived on has moved between processes; a request
/// extension (only on connections that moved: none means 0), e.g. for `/info`'s
/// `connection_moves`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionMoves(pub u32);

/// The running connection layer of one process.
#[derive(Clone)]
pub struct Server {
    ctx: Arc<ConnCtx>,
}

struct ConnCtx {
    routes: routes::Resolved,
    drain: Drain,
    settings: ServeSettings,
    /// Set when draining connections go somewhere instead of closing: to a successor that
    /// took over, or into systemd's fd store for the next process after a restart.
    mover: OnceLock<Mover>,
    moved: AtomicU64,
    not_moved: AtomicU64,
    /// Turns of the HTTP/1.1 connections in a drain (a handoff hands them out at a pace).
    pacer: pace::Pacer,
    /// Ticks once per `header_read_timeout`, for the HTTP/1.1 header-read check.
    ticker: tick::Ticker,
    /// The accept loops, each owning a listener fd until it ends.
    accepting: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Server {
    /// Starts one accept loop per listener on the current runtime. Each loop owns a duplicate of
    /// the listener's fd and closes it when the drain starts; the caller keeps the originals (a
    /// successor needs them).
    pub fn spawn(
        listeners: &[Listener],
        routes: Routes,
        drain: &Drain,
        settings: &ServeSettings,
    ) -> stdio::Result<Server> {
        let ctx = Arc::new(ConnCtx {
            routes: routes::Resolved::new(routes, listeners),
            drain: drain.clone(),
            settings: settings.clone(),
            mover: OnceLock::new(),
            moved: AtomicU64::new(0),
            not_moved: AtomicU64::new(0),
            accepting: Mutex::new(Vec::new()),
            pacer: pace::Pacer::new(),
            ticker: tick::Ticker::start(settings.header_read_timeout)?,
        });
        tokio::spawn(hand_out_turns(ctx.clone()));
        let mut accepting = Vec::new();
        let tls_for = tls::listener_settings(listeners, settings.tls.as_ref())?;
        for (l, tls) in listeners.iter().zip(tls_for) {
            let fd: OwnedFd = l.fd.try_clone()?;
            let name = l.name.clone();
            let router = ctx.routes.for_listener(&l.address);
            match l.family {
                Family::Inet => {
                    let std = std::net::TcpListener::from(fd);
                    std.set_nonblocking(true)?;
                    let listener = TcpListener::from_std(std)?;
                    accepting.push(tokio::spawn(accept_loop(
                        name,
                        ctx.clone(),
                        router,
                        tls,
                        move |cx| {
                            listener.poll_accept(cx).map_ok(|(s, _)| {
                                let _ = s.set_nodelay(true);
                                s
                            })
                        },
                    )));
                }
                Family::Unix => {
                    let std = std::os::unix::net::UnixListener::from(fd);
                    std.set_nonblocking(true)?;
                    let listener = UnixListener::from_std(std)?;
                    accepting.push(tokio::spawn(accept_loop(
                        name,
                        ctx.clone(),
                        router,
                        tls,
                        move |cx| listener.poll_accept(cx).map_ok(|(s, _)| s),
                    )));
                }
            }
        }
        *ctx.accepting.lock().unwrap_or_else(|e| e.into_inner()) = accepting;
        Ok(Server { ctx })
    }

    /// Ends the accept loops and waits until each has closed its listener fd, so that an
    /// address bound by this process is released when `run` returns (a loop ends by itself
    /// when the drain starts, but it may not have been polled since).
    pub async fn close_listeners(&self) {
        let loops = std::mem::take(&mut *self.ctx.accepting.lock().unwrap_or_else(|e| e.into_inner()));
        for l in loops {
            l.abort();
            let _ = l.await;
        }
    }

    /// From now on, draining connections move to the successor over `channel` instead of
    /// closing. Call before starting the drain.
    pub fn move_to(&self, channel: Arc<Channel>) {
        if self.ctx.settings.move_connections {
            let _ = self.ctx.mover.set(Mover::Successor(channel));
        }
    }

    /// From now on (a stop under systemd with an fd store), idle connections go into the fd
    /// store, for the next process to serve after a restart. Call before starting the drain.
    /// At most `room` connections are stored (what `FileDescriptorStoreMax=` leaves beside the
    /// listeners); the rest are closed and counted as not moved.
    pub fn store_on_stop(&self, room: u64) {
        // The TLS session-ticket keys, when kept in the store, take one slot of it too.
        let keys = self
            .ctx
            .settings
            .tls
            .as_ref()
            .is_some_and(|t| t.tickets.is_in_fd_store());
        let room = room.saturating_sub(u64::from(keys));
        if self.ctx.settings.move_connections {
            let _ = self.ctx.mover.set(Mover::Store {
                room: AtomicU64::new(room),
            });
        }
    }

    /// The TLS session-ticket keys in a new memfd, for a successor (`None` without TLS, or
    /// when the memfd cannot be made: the successor then starts with fresh keys).
    pub fn tls_ticket_keys(&self) -> Option<OwnedFd> {
        let tls = self.ctx.settings.tls.as_ref()?;
        match tls.tickets.to_memfd() {
            Ok(fd) => Some(fd),
            Err(e) => {
                warn!(error = %e, "tls: cannot pass the session ticket keys on; the successor makes new ones");
                None
            }
        }
    }

    /// (moved, not moved) connection counts of this process's drain.
    pub fn move_counts(&self) -> (u64, u64) {
        (
            self.ctx.moved.load(Ordering::SeqCst),
            self.ctx.not_moved.load(Ordering::SeqCst),
        )
    }
}

/// Once the drain has started: moving to a successor, the HTTP/1.1 connections get their turns
/// at a pace ([`pace`]), all of them well within the WebSocket boundary timeout (a second
/// before the drain deadline); otherwise (a stop) all at once.
async fn hand_out_turns(ctx: Arc<ConnCtx>) {
    ctx.drain.started().await;
    if matches!(ctx.mover.get(), Some(Mover::Successor(_))) {
        let budget = ctx
            .settings
            .ws_boundary_timeout
            .unwrap_or(Duration::from_secs(29))
            / 4;
        let n = ctx.drain.open_connections();
        info!(
            connections = n,
            within_ms = budget.as_millis() as u64,
            "connections get their drain turns at a pace (5 000 a second or more)"
        );
        ctx.pacer.release_paced(n, budget).await;
    } else {
        debug!("every connection gets its drain turn now");
        ctx.pacer.release_all();
    }
}

/// Accepts until the drain starts. Errors never end the loop: running out of fds (EMFILE,
/// ENFILE) or memory pauses accepting briefly instead of spinning.
/// On a TLS listener (`tls`), each connection does the TLS handshake first.
async fn accept_loop<S, F>(
    name: String,
    ctx: Arc<ConnCtx>,
    router: Router,
    tls: Option<Arc<crate::tls::TlsSetup>>,
    mut accept: F,
) where
    S: Servable,
    F: FnMut(&mut Context<'_>) -> Poll<stdio::Result<S>>,
{
    let mut last_warn: Option<tokio::time::Instant> = None;
    loop {
        let res = tokio::select! {
            biased;
            _ = ctx.drain.started() => break,
            r = std::future::poll_fn(&mut accept) => r,
        };
        match res {
            Ok(stream) => {
                let open = ctx.drain.track();
                match &tls {
                    Some(tls) => {
                        tokio::spawn(tls::serve(stream, ctx.clone(), tls.clone(), open, router.clone()));
                    }
                    None => {
                        tokio::spawn(serve_connection(
                            stream,
                            Bytes::new(),
                            ctx.clone(),
                            0,
                            open,
                            router.clone(),
                        ));
                    }
                }
            }
            Err(e) => {
                let resource = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    warn!(listener = %name, error = %e, "accept failed");
                    last_warn = Some(tokio::time::Instant::now());
                }
                if resource {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    debug!(listener = %name, "stopped accepting");
}

/// Serves one connection; `prefix` holds bytes a predecessor read but did not parse yet.
///
/// `open` counts the connection in the drain from the moment it was accepted or adopted, not
/// from the task's first poll: a drain that ends in between would otherwise exit the process
/// with the connection in a task that never ran (seen as a reconnect after chained handoffs).
async fn serve_connection<S: Servable>(
    stream: S,
    prefix: Bytes,
    ctx: Arc<ConnCtx>,
    moves: u32,
    open: crate::drain::ConnGuard,
    router: Router,
) {
    let state = Arc::new(ConnState::default());
    let peer = stream.peer();
    let io = ConnIo::new(stream, prefix, state.clone(), open);
    let Some((proto, io)) = sniff::sniff(io, &ctx, moves).await else {
        return;
    };
    serve_proto(proto, S::served(io), ctx, state, peer, moves, router).await;
}

/// Serves a connection whose protocol is known (sniffed, or negotiated by ALPN).
async fn serve_proto(
    proto: Proto,
    io: Served,
    ctx: Arc<ConnCtx>,
    state: Arc<ConnState>,
    peer: Peer,
    moves: u32,
    router: Router,
) {
    let rc = Arc::new(ReqCtx {
        ctx: ctx.clone(),
        router,
        state,
        moves,
        peer,
        draining: ctx.drain.signal(),
        h2: proto == Proto::Http2,
        movable: io.movable(),
    });
    match proto {
        Proto::Http1 => h1::serve(io, rc).await,
        Proto::Http2 => h2::serve(io, rc).await,
    }
}

fn log_conn_end(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Logs the outcome of moving connections at the end of a drain.
pub fn log_moves(server: &Server) {
    let (moved, not_moved) = server.move_counts();
    let to = match server.ctx.mover.get() {
        Some(Mover::Store { .. }) => "the fd store",
        _ => "the successor",
    };
    if moved + not_moved > 0 {
        info!(moved, not_moved, to, "connections moved; the rest were closed");
    }
}
