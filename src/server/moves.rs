//! Moving idle HTTP/1.1 connections out (to the successor over the handoff channel, or into
//! systemd's fd store at a stop) and taking them in.
//!
//! A connection moves as its socket's fd plus the bytes read but not parsed yet. Over the
//! channel that is one message: header `conn <tcp|unix> <moves>\n`, then the bytes, with the fd
//! attached. In the fd store it is an fd named `conn-<tcp|unix>-<moves>-<pid>-<n>`, and the
//! bytes (if any) a memfd named `cbuf-<pid>-<n>` beside it. The receiver replays the bytes
//! first, so a pipelined or half-sent request is answered once, in order.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::net::{TcpStream, UnixStream};
use tracing::{debug, warn};

use super::io::{ConnIo, Movable};
use super::routes::Local;
use super::{ConnCtx, Server, serve_connection};
use crate::channel::{Channel, MAX_MSG};
use crate::fdstore;
use crate::wire::{ChannelMsg, ConnKind as Kind};

/// Where draining connections go instead of closing.
pub(super) enum Mover {
    Successor(Arc<Channel>),
    /// Into systemd's fd store, while it has room.
    Store {
        room: AtomicU64,
    },
}

/// Moves a connection that has nothing in the handler out, and counts the outcome; one that
/// cannot move is closed (dropped).
pub(super) async fn move_out<S: Movable>(
    ctx: &ConnCtx,
    mover: &Mover,
    io: ConnIo<S>,
    read_buf: Bytes,
    moves: u32,
) {
    // The drain lasts until the outcome is counted, not only until the fd has gone: the counts
    // are logged when the drain ends (a race that logged `moved=0` for a stored connection).
    let _counted = ctx.drain.track();
    let sent = match mover {
        Mover::Successor(channel) => send_moved(channel, io, read_buf, moves + 1).await,
        Mover::Store { room } => {
            // One slot for the socket, and one for the memfd of its unparsed bytes if any.
            let slots = 1 + u64::from(io.prefix_len() > 0 || !read_buf.is_empty());
            if room
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(slots))
                .is_ok()
            {
                store_moved(io, read_buf, moves + 1)
            } else {
                Err(io::Error::other("the fd store is full"))
            }
        }
    };
    match sent {
        Ok(()) => {
            ctx.moved.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => {
            ctx.not_moved.fetch_add(1, Ordering::SeqCst);
            debug!(error = %e, "connection not moved; closed");
        }
    }
}

/// Stores one idle connection in systemd's fd store, with the bytes read but not parsed yet (a
/// request that had just started arriving) in a memfd stored beside it.
fn store_moved<S: Movable>(io: ConnIo<S>, read_buf: Bytes, moves: u32) -> io::Result<()> {
    static N: AtomicU64 = AtomicU64::new(0);
    let (fd, unread, _open) = io.into_fd()?;
    let id = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    if !unread.is_empty() || !read_buf.is_empty() {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let buf = memfd_create(c"heird-conn-bytes", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        let mut f = std::fs::File::from(buf);
        std::io::Write::write_all(&mut f, &unread)?;
        std::io::Write::write_all(&mut f, &read_buf)?;
        fdstore::store(&fdstore::conn_buf_name(&id), f.as_fd())?;
    }
    fdstore::store(&fdstore::conn_name(S::KIND, moves, &id), fd.as_fd())
}

/// Sends one connection to the successor: header `conn <tcp|unix> <moves>\n`, then the bytes
/// read but not parsed yet, with the socket's fd attached.
async fn send_moved<S: Movable>(
    channel: &Channel,
    io: ConnIo<S>,
    read_buf: Bytes,
    moves: u32,
) -> io::Result<()> {
    // `_open` keeps the process from exiting before the message is sent.
    let (fd, unread, _open) = io.into_fd()?;
    let mut bytes = Vec::with_capacity(unread.len() + read_buf.len());
    bytes.extend_from_slice(&unread);
    bytes.extend_from_slice(&read_buf);
    if bytes.len() + 64 > MAX_MSG {
        return Err(io::Error::other("too many unparsed bytes to move"));
    }
    let msg = ChannelMsg::Conn {
        kind: S::KIND,
        moves,
        unread: &bytes,
    };
    channel.send_with_fd(&msg, Some(fd.as_fd())).await
}

impl Server {
    /// Serves a connection that a predecessor moved to us (a `conn` message on the channel),
    /// replaying `unread` (bytes read from it but not parsed) first.
    pub fn adopt(&self, kind: Kind, moves: u32, unread: &[u8], fd: OwnedFd) -> io::Result<()> {
        let ctx = self.ctx.clone();
        let prefix = Bytes::copy_from_slice(unread);
        match kind {
            Kind::Tcp => {
                let std = std::net::TcpStream::from(fd);
                std.set_nonblocking(true)?;
                let s = TcpStream::from_std(std)?;
                let local = s.local_addr().map(Local::Tcp).unwrap_or(Local::Unknown);
                let router = ctx.routes.for_local(&local);
                let open = ctx.drain.track();
                tokio::spawn(serve_connection(s, prefix, ctx, moves, open, router));
            }
            Kind::Unix => {
                let std = std::os::unix::net::UnixStream::from(fd);
                std.set_nonblocking(true)?;
                let s = UnixStream::from_std(std)?;
                let local = s
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| Local::Unix(p.display().to_string())))
                    .unwrap_or(Local::Unknown);
                let router = ctx.routes.for_local(&local);
                let open = ctx.drain.track();
                tokio::spawn(serve_connection(s, prefix, ctx, moves, open, router));
            }
        }
        Ok(())
    }

    /// Serves the connections systemd's fd store gave back at start (fds named `conn-…`, with
    /// their unparsed bytes in `cbuf-…` memfds); returns the names to remove from the store.
    pub fn adopt_stored(&self, stored: Vec<(String, OwnedFd)>) -> Vec<String> {
        let mut bufs = std::collections::HashMap::new();
        let mut conns = Vec::new();
        let mut names = Vec::new();
        let (mut ws_socks, mut ws_msgs) = (Vec::new(), std::collections::HashMap::new());
        for (name, fd) in stored {
            if name == fdstore::TLS_TICKETS_NAME {
                // Stays in the store (it is the copy a later restart needs) unless unused.
                if !self.adopt_stored_tickets(fd) {
                    names.push(name);
                }
                continue;
            }
            if let Some(id) = fdstore::parse_ws_msg_name(&name) {
                ws_msgs.insert(id.to_string(), fd);
            } else if fdstore::parse_ws_conn_name(&name).is_some() {
                ws_socks.push((name.clone(), fd));
            } else if let Some(id) = fdstore::parse_conn_buf_name(&name) {
                bufs.insert(id.to_string(), fd);
            } else {
                conns.push((name.clone(), fd));
            }
            names.push(name);
        }
        for (name, fd) in conns {
            let Some((kind, moves, id)) = fdstore::parse_conn_name(&name) else {
                warn!(name, "not a stored connection name; closed");
                continue;
            };
            let prefix = match bufs.remove(id).map(|fd| fdstore::read_bytes(fd, MAX_MSG as u64)) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    warn!(name, error = %e, "cannot read a stored connection's bytes; closed");
                    continue;
                }
                None => Vec::new(),
            };
            if let Err(e) = self.adopt(kind, moves, &prefix, fd) {
                warn!(name, error = %e, "cannot serve a stored connection");
            }
        }
        self.adopt_stored_ws(ws_socks, ws_msgs);
        names
    }
}
