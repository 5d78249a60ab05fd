//! Moving connections between processes, for HTTP/1.1 connections and WebSockets alike: out (to
//! the successor over the handoff channel, or into systemd's fd store at a stop), counted, and
//! in again (an fd handed over becomes a connection's IO).
//!
//! A connection moves as its socket's fd plus the bytes read from it but not parsed yet, which
//! the receiver replays first, so a pipelined or half-sent request is answered once, in order.
//! A WebSocket carries the request that opened it and its handler's state too ([`Cargo::Ws`]).
//! - Over the channel, either is one message with the fd attached: `conn <tcp|unix> <moves>\n`
//!   then the bytes, or a `ws` message ([`WsConn`]). The client's address from a PROXY header
//!   goes with it (a last word of the message's first line).
//! - In the fd store, a connection is an fd named `conn-<tcp|unix>-<moves>-<id>` (with
//!   `@<client>` after `<moves>` when a PROXY header named one), with its bytes
//!   (if any) in a memfd `cbuf-<id>` beside it; a WebSocket is `wsconn-<id>`, with the encoded
//!   `ws` message in a memfd `wsmsg-<id>` (`<id>` is `<pid>-<n>`). [`unstore`] reads them back.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::net::{TcpStream, UnixStream};
use tracing::{debug, warn};

use super::routes::Local;
use super::served::{Servable, Served, Taken};
use crate::channel::{Channel, MAX_MSG};
use crate::drain::Drain;
use crate::fdstore;
use crate::wire::{ChannelMsg, ConnKind as Kind, WsConn};

/// Where draining connections go instead of closing.
pub(super) enum Mover {
    Successor(Arc<Channel>),
    /// Into systemd's fd store, while it has room.
    Store {
        room: AtomicU64,
    },
}

/// Where this process's connections move to (set once, before the drain starts), and how many
/// did or did not.
#[derive(Default)]
pub(super) struct Moves {
    to: OnceLock<Mover>,
    moved: AtomicU64,
    not_moved: AtomicU64,
}

impl Moves {
    /// From now on, connections move to `mover` (the first call wins).
    pub fn set(&self, mover: Mover) {
        let _ = self.to.set(mover);
    }

    /// Where connections move to; `None`: a drain closes them.
    pub fn to(&self) -> Option<&Mover> {
        self.to.get()
    }

    /// Takes room for `fds` more fds in the fd store, before a connection is taken apart;
    /// false when the store is full, or when there is nowhere to move to. Always true towards
    /// a successor.
    pub fn reserve(&self, fds: u64) -> bool {
        match self.to.get() {
            Some(Mover::Store { room }) => room
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(fds))
                .is_ok(),
            Some(Mover::Successor(_)) => true,
            None => false,
        }
    }

    /// Counts one connection as moved, or as not moved (closed).
    pub fn count(&self, moved: bool) {
        let c = if moved { &self.moved } else { &self.not_moved };
        c.fetch_add(1, Ordering::SeqCst);
    }

    /// (moved, not moved).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.moved.load(Ordering::SeqCst),
            self.not_moved.load(Ordering::SeqCst),
        )
    }

    /// Where they went, for the log.
    pub fn destination(&self) -> &'static str {
        match self.to.get() {
            Some(Mover::Store { .. }) => "the fd store",
            _ => "the successor",
        }
    }
}

/// What a socket carries to the next process besides its unread bytes.
#[derive(Clone, Copy)]
pub(super) enum Cargo<'a> {
    /// An HTTP/1.1 connection (or one that had not said which protocol yet): nothing else.
    Conn,
    /// A resumable WebSocket: the path and headers of the request that opened it (headers
    /// encoded), and its handler's state.
    Ws {
        path: &'a str,
        headers: &'a [u8],
        state: &'a [u8],
    },
}

/// Moves a connection out (see the module doc) and counts the outcome; one that cannot move is
/// closed (dropped). The bytes that go with it: what `io` still has to replay, then `after`
/// (read from it past that). An HTTP/1.1 connection takes its room in the fd store here; a
/// WebSocket has taken it already ([`Moves::reserve`], before it stopped at a boundary).
pub(super) async fn move_out(
    moves: &Moves,
    drain: &Drain,
    io: Served,
    after: &[u8],
    cargo: Cargo<'_>,
    times: u32,
) {
    // The drain lasts until the outcome is counted, not only until the fd has gone: the counts
    // are logged when the drain ends (a race that logged `moved=0` for a stored connection).
    let _counted = drain.track();
    let res = match (moves.to(), cargo) {
        (None, _) => Err(io::Error::other("nowhere to move to")),
        // One slot for the socket, and one for the memfd of its unparsed bytes if any.
        (Some(_), Cargo::Conn) if !moves.reserve(1 + u64::from(io.pending() > 0 || !after.is_empty())) => {
            Err(io::Error::other("the fd store is full"))
        }
        (Some(to), _) => send(to, io, after, cargo, times + 1).await,
    };
    moves.count(res.is_ok());
    if res.is_ok() {
        use crate::metrics::region::{CONNECTIONS_MOVED, WEBSOCKETS_MOVED, inc};
        inc(match cargo {
            Cargo::Conn => CONNECTIONS_MOVED,
            Cargo::Ws { .. } => WEBSOCKETS_MOVED,
        });
    }
    if let Err(e) = res {
        match cargo {
            Cargo::Conn => debug!(error = %e, "connection not moved; closed"),
            Cargo::Ws { path, .. } => debug!(error = %e, path, "websocket not moved; closed"),
        }
    }
}

/// Sends one connection to `to`, as one channel message or as named fds in the store.
async fn send(to: &Mover, io: Served, after: &[u8], cargo: Cargo<'_>, times: u32) -> io::Result<()> {
    let client = io.client();
    // `_open` keeps the process from exiting before the socket has been handed on.
    let (kind, fd, rest, _open) = io.into_fd()?;
    let mut unread = Vec::with_capacity(rest.len() + after.len());
    unread.extend_from_slice(&rest);
    unread.extend_from_slice(after);
    let msg = match cargo {
        Cargo::Conn => ChannelMsg::Conn {
            kind,
            moves: times,
            client,
            unread: &unread,
        },
        Cargo::Ws { path, headers, state } => ChannelMsg::Ws(WsConn {
            kind,
            moves: times,
            path,
            headers,
            state,
            unread: &unread,
            client,
        }),
    };
    match to {
        Mover::Successor(channel) => {
            if unread.len() + 64 > MAX_MSG {
                return Err(io::Error::other("too many unparsed bytes to move"));
            }
            channel.send_with_fd(&msg, Some(fd.as_fd())).await
        }
        Mover::Store { .. } => {
            static N: AtomicU64 = AtomicU64::new(0);
            let id = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
            match cargo {
                Cargo::Conn => {
                    if !unread.is_empty() {
                        fdstore::store_bytes(&fdstore::conn_buf_name(&id), &unread)?;
                    }
                    fdstore::store(&fdstore::conn_name(kind, times, client, &id), fd.as_fd())
                }
                Cargo::Ws { .. } => fdstore::store_bytes(&fdstore::ws_msg_name(&id), &msg.encode())
                    .and_then(|()| fdstore::store(&fdstore::ws_conn_name(&id), fd.as_fd())),
            }
        }
    }
}

/// A socket a predecessor handed over, taken up as a plain connection that replays `prefix`
/// first, with its local end (which tells its listener's router). `client`: the address its
/// PROXY header named, which stays its peer.
pub(super) fn arrive(
    kind: Kind,
    fd: OwnedFd,
    prefix: Bytes,
    drain: &Drain,
    client: Option<SocketAddr>,
) -> io::Result<(Taken, Local)> {
    fn take<S: Servable>(
        fd: OwnedFd,
        prefix: Bytes,
        drain: &Drain,
        client: Option<SocketAddr>,
    ) -> io::Result<(Taken, Local)> {
        let s = S::from_fd(fd)?;
        let local = s.local();
        Ok((Taken::new(s, prefix, drain.track_connection(), client), local))
    }
    match kind {
        Kind::Tcp => take::<TcpStream>(fd, prefix, drain, client),
        Kind::Unix => take::<UnixStream>(fd, prefix, drain, client),
    }
}

/// A connection that systemd's fd store gave back (`conn-…`), with its unparsed bytes.
pub(super) struct StoredConn {
    pub name: String,
    pub kind: Kind,
    pub moves: u32,
    pub client: Option<SocketAddr>,
    pub unread: Vec<u8>,
    pub fd: OwnedFd,
}

/// A WebSocket that systemd's fd store gave back (`wsconn-…`), with its encoded `ws` message.
pub(super) struct StoredWs {
    pub name: String,
    pub msg: Vec<u8>,
    pub fd: OwnedFd,
}

/// What systemd's fd store gave back at start, read back: the connections and the WebSockets
/// (what cannot be read is logged and closed), and the names to remove from the store.
#[derive(Default)]
pub(super) struct Unstored {
    pub conns: Vec<StoredConn>,
    pub websockets: Vec<StoredWs>,
    pub names: Vec<String>,
}

/// Sorts what the fd store gave back (see the module doc). The TLS session-ticket keys go to
/// `keys`, and stay in the store when it takes them (it is the copy a later restart needs).
pub(super) fn unstore(stored: Vec<(String, OwnedFd)>, mut keys: impl FnMut(OwnedFd) -> bool) -> Unstored {
    let mut out = Unstored::default();
    let (mut conns, mut bufs) = (Vec::new(), HashMap::new());
    let (mut socks, mut msgs) = (Vec::new(), HashMap::new());
    for (name, fd) in stored {
        if name == fdstore::TLS_TICKETS_NAME {
            if !keys(fd) {
                out.names.push(name);
            }
            continue;
        }
        if let Some(id) = fdstore::parse_ws_msg_name(&name) {
            msgs.insert(id.to_string(), fd);
        } else if fdstore::parse_ws_conn_name(&name).is_some() {
            socks.push((name.clone(), fd));
        } else if let Some(id) = fdstore::parse_conn_buf_name(&name) {
            bufs.insert(id.to_string(), fd);
        } else {
            conns.push((name.clone(), fd));
        }
        out.names.push(name);
    }
    for (name, fd) in conns {
        let Some((kind, moves, client, id)) = fdstore::parse_conn_name(&name) else {
            warn!(name, "not a stored connection name; closed");
            continue;
        };
        let unread = match bufs.remove(id).map(|fd| fdstore::read_bytes(fd, MAX_MSG as u64)) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                warn!(name, error = %e, "cannot read a stored connection's bytes; closed");
                continue;
            }
            None => Vec::new(),
        };
        out.conns.push(StoredConn {
            name,
            kind,
            moves,
            client,
            unread,
            fd,
        });
    }
    for (name, fd) in socks {
        let Some(buf) = fdstore::parse_ws_conn_name(&name).and_then(|id| msgs.remove(id)) else {
            warn!(name, "stored websocket without its message; closed");
            continue;
        };
        match fdstore::read_bytes(buf, MAX_MSG as u64) {
            Ok(msg) => out.websockets.push(StoredWs { name, msg, fd }),
            Err(e) => warn!(name, error = %e, "cannot read a stored websocket's message; closed"),
        }
    }
    out
}
