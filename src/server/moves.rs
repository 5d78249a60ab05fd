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

use super::io::{ConnIo, Kind, Movable};
use super::{ConnCtx, Server, serve_connection};
use crate::handoff::{Channel, MAX_MSG};

/// Where draining connections go instead of closing.
pub(super) enum Mover {
    Successor(Arc<Channel>),
    /// Into systemd's fd store, while it has room.
    Store {
        room: AtomicU64,
    },
}

/// Prefix of the fd-store names of stored connections: `conn-<tcp|unix>-<moves>-<pid>-<n>`.
pub const STORED_CONN_PREFIX: &str = "conn-";
/// Prefix of the fd-store names of a stored connection's unparsed bytes (a memfd):
/// `cbuf-<pid>-<n>`, matching the connection's `<pid>-<n>`.
pub const STORED_BUF_PREFIX: &str = "cbuf-";

/// True for fd-store names of stored connections and their bytes, and of what else the
/// server keeps there beside its listeners (the TLS session-ticket keys): not listeners, taken
/// back by [`super::Server::adopt_stored`].
pub fn is_stored_connection(name: &str) -> bool {
    name.starts_with(STORED_CONN_PREFIX)
        || name.starts_with(STORED_BUF_PREFIX)
        || name == crate::tls::tickets::STORED_NAME
}

/// True for a channel message that carries a moved connection.
pub fn is_moved_connection(msg: &[u8]) -> bool {
    msg.starts_with(b"conn ")
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
    let sent = match mover {
        Mover::Successor(channel) => send_moved(channel, io, read_buf, moves + 1).await,
        Mover::Store { room } => {
            if room
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
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
    use crate::notify::NotifyState;
    static N: AtomicU64 = AtomicU64::new(0);
    let (fd, unread, _open) = io.into_fd()?;
    let id = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    if !unread.is_empty() || !read_buf.is_empty() {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let buf = memfd_create(c"heird-conn-bytes", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        let mut f = std::fs::File::from(buf);
        std::io::Write::write_all(&mut f, &unread)?;
        std::io::Write::write_all(&mut f, &read_buf)?;
        let name = format!("{STORED_BUF_PREFIX}{id}");
        sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(&name)], &[f.as_fd()])?;
    }
    let name = format!("{STORED_CONN_PREFIX}{}-{moves}-{id}", S::KIND.as_str());
    sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(&name)], &[fd.as_fd()])
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
    let header = format!("conn {} {moves}\n", S::KIND.as_str());
    let mut msg = Vec::with_capacity(header.len() + unread.len() + read_buf.len());
    msg.extend_from_slice(header.as_bytes());
    msg.extend_from_slice(&unread);
    msg.extend_from_slice(&read_buf);
    if msg.len() > MAX_MSG {
        return Err(io::Error::other("too many unparsed bytes to move"));
    }
    channel.send_with_fd(&msg, Some(fd.as_fd())).await
}

impl Server {
    /// Serves a connection that a predecessor moved to us (a `conn` message on the channel).
    pub fn adopt(&self, header: &[u8], fd: OwnedFd) -> io::Result<()> {
        let moved = parse_move_header(header)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad moved-connection header"))?;
        let ctx = self.ctx.clone();
        let prefix = Bytes::copy_from_slice(moved.prefix);
        match moved.kind {
            Kind::Tcp => {
                let std = std::net::TcpStream::from(fd);
                std.set_nonblocking(true)?;
                let s = TcpStream::from_std(std)?;
                tokio::spawn(serve_connection(s, prefix, ctx, moved.moves));
            }
            Kind::Unix => {
                let std = std::os::unix::net::UnixStream::from(fd);
                std.set_nonblocking(true)?;
                let s = UnixStream::from_std(std)?;
                tokio::spawn(serve_connection(s, prefix, ctx, moved.moves));
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
        for (name, fd) in stored {
            if name == crate::tls::tickets::STORED_NAME {
                // Stays in the store (it is the copy a later restart needs) unless unused.
                if !self.adopt_stored_tickets(fd) {
                    names.push(name);
                }
                continue;
            }
            if let Some(id) = name.strip_prefix(STORED_BUF_PREFIX) {
                bufs.insert(id.to_string(), fd);
            } else {
                conns.push((name.clone(), fd));
            }
            names.push(name);
        }
        for (name, fd) in conns {
            let Some((kind, moves, id)) = parse_stored_name(&name) else {
                warn!(name, "not a stored connection name; closed");
                continue;
            };
            let prefix = match bufs.remove(id).map(read_memfd) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    warn!(name, error = %e, "cannot read a stored connection's bytes; closed");
                    continue;
                }
                None => Vec::new(),
            };
            let mut header = format!("conn {} {moves}\n", kind.as_str()).into_bytes();
            header.extend_from_slice(&prefix);
            if let Err(e) = self.adopt(&header, fd) {
                warn!(name, error = %e, "cannot serve a stored connection");
            }
        }
        names
    }
}

fn read_memfd(fd: OwnedFd) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::from(fd);
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut v = Vec::new();
    f.take(MAX_MSG as u64).read_to_end(&mut v)?;
    Ok(v)
}

/// `conn-tcp-2-1234-7` → (tcp, 2 moves, "1234-7").
fn parse_stored_name(name: &str) -> Option<(Kind, u32, &str)> {
    let rest = name.strip_prefix(STORED_CONN_PREFIX)?;
    let (kind, rest) = rest.split_once('-')?;
    let kind = Kind::parse(kind)?;
    let (moves, id) = rest.split_once('-')?;
    Some((kind, moves.parse().ok()?, id))
}

struct MoveHeader<'a> {
    kind: Kind,
    moves: u32,
    prefix: &'a [u8],
}

fn parse_move_header(msg: &[u8]) -> Option<MoveHeader<'_>> {
    let nl = msg.iter().position(|b| *b == b'\n')?;
    let head = std::str::from_utf8(&msg[..nl]).ok()?;
    let mut it = head.split(' ');
    if it.next()? != "conn" {
        return None;
    }
    let kind = Kind::parse(it.next()?)?;
    let moves = it.next()?.parse().ok()?;
    Some(MoveHeader {
        kind,
        moves,
        prefix: &msg[nl + 1..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_header_round_trip() {
        let m = parse_move_header(b"conn tcp 3\nGET / HTTP/1.1\r\n").unwrap();
        assert_eq!(m.kind, Kind::Tcp);
        assert_eq!(m.moves, 3);
        assert_eq!(m.prefix, b"GET / HTTP/1.1\r\n");
        assert!(parse_move_header(b"conn udp 1\n").is_none());
        assert!(parse_move_header(b"primary").is_none());
        assert!(parse_move_header(b"conn tcp x\n").is_none());
        assert_eq!(
            parse_stored_name("conn-tcp-2-1234-7"),
            Some((Kind::Tcp, 2, "1234-7"))
        );
        assert_eq!(parse_stored_name("conn-unix-0-1-0"), Some((Kind::Unix, 0, "1-0")));
        assert_eq!(parse_stored_name("bound-tcp-127.0.0.1_80"), None);
    }
}
