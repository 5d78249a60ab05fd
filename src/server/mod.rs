//! Serving: one accept loop per listener (TCP or Unix); each connection speaks HTTP/1.1 (with
//! upgrades: WebSocket) or HTTP/2 with prior knowledge on the same socket, and is served by
//! hyper driving the axum `Router`. axum's own `serve` hides connections; we need them, to
//! drain each one the way its protocol allows and to move idle HTTP/1.1 ones to a successor.
//!
//! This file is [`Server`], all that the rest of heird calls. Below it, lowest first (each
//! imports only from those above it in this list):
//! - `peer`: `ConnectInfo` types ([`UnixPeer`]).
//! - `routes`: a router per listener ([`Routes`]).
//! - `tick`: the coarse clock of the HTTP/1.1 header-read check (one thread, no timer per
//!   connection).
//! - `pace`: each connection's turn in a drain; a handoff hands turns out at a steady rate, so
//!   thousands of idle connections do not all move at once.
//! - `settings`: [`ServeSettings`].
//! - `io`: a connection's IO (replays bytes read early, counts bytes, holds a socket whole
//!   while it moves, keeps the connection counted in the drain), and an fd as a socket.
//! - `served`: the one IO type hyper serves, whatever the connection (so hyper is compiled
//!   once), and the one answer to whether a connection can move.
//! - `moving`: connections and WebSockets out to the successor or the fd store, counted, and
//!   back in: the one home of moving.
//! - `context`: what every connection of a process shares.
//! - `request`: what every request carries (`ConnectInfo`, [`crate::Draining`],
//!   [`ConnectionMoves`]) and, on HTTP/1.1, the in-flight accounting.
//! - `sniff`: HTTP/1.1 or the HTTP/2 preface.
//! - `h1` and `h2`: serving each protocol, and what each does at a drain.
//! - [`ws`]: WebSockets that move to the successor with their handler's state.
//! - `conn`: one connection, sniffed (plain) or told by ALPN (TLS), to `h1` or `h2`.
//! - `tls`: TLS listeners: the handshake (bounded, with bad input told apart), then h1 or h2 by
//!   ALPN. TLS connections never move; a drain closes them as its protocol allows.
//! - `proxied`: listeners with the PROXY protocol: the header, read in the connection's task,
//!   then TLS or the sniffing, with the header's client as the peer.
//! - `accept`: the accept loops, and the drain turns.

mod accept;
mod conn;
mod context;
mod h1;
mod h2;
mod io;
mod moving;
mod pace;
mod peer;
mod proxied;
mod request;
mod routes;
mod served;
mod settings;
mod sniff;
mod tick;
mod tls;
pub mod ws;

use std::io as stdio;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{info, warn};

use crate::channel::Channel;
use crate::drain::Drain;
use crate::listeners::{Family, Listener};
use crate::wire::{ChannelMsg, ConnKind, WsConn};
use context::ConnCtx;
use moving::{Mover, Moves};
pub use peer::UnixPeer;
pub use request::ConnectionMoves;
pub use routes::Routes;
pub use settings::ServeSettings;

/// The running connection layer of one process.
#[derive(Clone)]
pub struct Server {
    ctx: Arc<ConnCtx>,
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
            moves: Moves::default(),
            accepting: Mutex::new(Vec::new()),
            pacer: pace::Pacer::new(),
            ticker: tick::Ticker::start(settings.header_read_timeout)?,
        });
        let accepting = accept::start(&ctx, listeners)?;
        *ctx.accepting.lock().unwrap_or_else(|e| e.into_inner()) = accepting;
        Ok(Server { ctx })
    }

    /// Serves the one connection a socket unit with `Accept=yes` passed (`name`: its
    /// `LISTEN_FDNAMES` entry, which `[tls] listeners` may name).
    pub fn serve_accepted(&self, name: &str, family: Family, fd: OwnedFd) -> stdio::Result<()> {
        accept::serve_accepted(&self.ctx, name, family, fd)
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
            self.ctx.moves.set(Mover::Successor(channel));
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
        // So do the metrics' counters.
        let metrics = crate::metrics::region::in_fd_store();
        let room = room.saturating_sub(u64::from(keys) + u64::from(metrics));
        if self.ctx.settings.move_connections {
            self.ctx.moves.set(Mover::Store {
                room: std::sync::atomic::AtomicU64::new(room),
            });
        }
    }

    /// (moved, not moved) connection counts of this process's drain.
    pub fn move_counts(&self) -> (u64, u64) {
        self.ctx.moves.counts()
    }

    /// Serves a connection that a predecessor moved to us (a `conn` message on the channel),
    /// replaying `unread` (bytes read from it but not parsed) first.
    /// `client`: the address the connection's PROXY header named, which stays its peer.
    pub fn adopt(
        &self,
        kind: ConnKind,
        moves: u32,
        client: Option<SocketAddr>,
        unread: &[u8],
        fd: OwnedFd,
    ) -> stdio::Result<()> {
        let ctx = self.ctx.clone();
        let (conn, local) = moving::arrive(kind, fd, Bytes::copy_from_slice(unread), &ctx.drain, client)?;
        let router = ctx.routes.for_local(&local);
        tokio::spawn(conn::serve(|| conn, ctx, moves, router));
        Ok(())
    }

    /// Resumes a WebSocket a predecessor moved to us (a `ws` message): the socket, with the
    /// unread bytes replayed first, goes to the handler of its path on its listener's router
    /// (see [`ws`]).
    pub fn adopt_ws(&self, w: &WsConn<'_>, fd: OwnedFd) -> stdio::Result<()> {
        ws::resume(&self.ctx, w, fd)
    }

    /// Serves the connections and resumes the WebSockets that systemd's fd store gave back at
    /// start (see `moving`), and takes the TLS session-ticket keys kept there; returns the names
    /// to remove from the store.
    pub fn adopt_stored(&self, stored: Vec<(String, OwnedFd)>) -> Vec<String> {
        let tls = self.ctx.settings.tls.as_ref();
        let found = moving::unstore(stored, |fd| tls::adopt_stored_tickets(tls, fd));
        for c in found.conns {
            if let Err(e) = self.adopt(c.kind, c.moves, c.client, &c.unread, c.fd) {
                warn!(name = c.name, error = %e, "cannot serve a stored connection");
            }
        }
        for w in found.websockets {
            let Some(ChannelMsg::Ws(msg)) = ChannelMsg::parse(&w.msg) else {
                warn!(
                    name = w.name,
                    "a stored websocket's message does not parse; closed"
                );
                continue;
            };
            if let Err(e) = self.adopt_ws(&msg, w.fd) {
                warn!(name = w.name, error = %e, "cannot resume a stored websocket");
            }
        }
        found.names
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

    /// Keeps the session-ticket keys in systemd's fd store, when there is one and the keys are
    /// not already there (a successor's inherited keys are), and again at each rotation; so a
    /// restart or a crash keeps the tickets good. Call after [`Server::adopt_stored`].
    pub fn store_tls_tickets(&self) {
        if let Some(tls) = &self.ctx.settings.tls
            && crate::fdstore::available()
        {
            tls.tickets.keep_in_fd_store();
        }
    }
}

/// Logs the outcome of moving connections at the end of a drain.
pub fn log_moves(server: &Server) {
    let (moved, not_moved) = server.move_counts();
    let to = server.ctx.moves.destination();
    if moved + not_moved > 0 {
        info!(moved, not_moved, to, "connections moved; the rest were closed");
    }
}
