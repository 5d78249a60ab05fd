//! A resumable WebSocket's connection, and moving it: out to the successor over the handoff
//! channel (one `ws` message, the fd attached) or into systemd's fd store at a stop (the fd as
//! `wsconn-<id>`, and the same encoded message in a memfd `wsmsg-<id>` beside it), and in again:
//! the path of the request that opened it is replayed through the router, and the handler that
//! takes [`super::WsUpgrade`] there gets the resumed socket.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tower::ServiceExt;
use tracing::{debug, warn};

use super::super::Server;
use super::super::io::{ConnIo, ConnState, Movable};
use super::super::moves::Mover;
use super::super::request::{self, Env, ReqCtx};
use super::super::routes::Local;
use super::super::served::Served;
use super::{Resume, WebSocket, WsEnv};
use crate::channel::MAX_MSG;
use crate::drain::ConnGuard;
use crate::fdstore;
use crate::wire::{ChannelMsg, ConnKind as Kind, WsConn};

/// The request that opened a WebSocket, as the successor's router gets it again.
#[derive(Debug, Clone, Default)]
pub(in crate::server) struct Origin {
    pub path: String,
    pub headers: HeaderMap,
}

/// `name: value\r\n` per header (hyper never lets CR or LF into either).
pub(in crate::server) fn encode_headers(h: &HeaderMap) -> Vec<u8> {
    let mut v = Vec::new();
    for (name, value) in h {
        v.extend_from_slice(name.as_str().as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(value.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// The inverse of [`encode_headers`]; lines that are no valid header are skipped.
pub(in crate::server) fn decode_headers(b: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in b.split(|c| *c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|c| *c == b':') else {
            continue;
        };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    h
}

/// The connection under a resumable WebSocket: heird's own plain IO (movable), heird's TLS
/// (never moved), or whatever else an upgrade gave (HTTP/2's extended CONNECT, a router served
/// outside heird): never moved.
pub(in crate::server) enum Conn {
    Tcp(ConnIo<TcpStream>),
    Unix(ConnIo<UnixStream>),
    Tls(Served),
    Other(TokioIo<Upgraded>),
}

impl Conn {
    /// Takes heird's IO back out of hyper's upgrade, with the bytes hyper read past the request
    /// (they go to the front of the WebSocket's [`super::frames::FrameIo`]).
    pub fn from_upgraded(up: Upgraded) -> (Conn, Bytes) {
        let p = match up.downcast::<TokioIo<Served>>() {
            Ok(p) => p,
            Err(up) => return (Conn::Other(TokioIo::new(up)), Bytes::new()),
        };
        let conn = match p.io.into_inner() {
            Served::Tcp(io) => Conn::Tcp(io),
            Served::Unix(io) => Conn::Unix(io),
            tls => Conn::Tls(tls),
        };
        (conn, p.read_buf)
    }

    pub fn movable(&self) -> bool {
        matches!(self, Conn::Tcp(_) | Conn::Unix(_))
    }

    /// Bytes the IO still has to replay.
    pub fn pending(&self) -> usize {
        match self {
            Conn::Tcp(io) => io.prefix_len(),
            Conn::Unix(io) => io.prefix_len(),
            Conn::Tls(_) | Conn::Other(_) => 0,
        }
    }
}

impl super::frames::FrameIo<Conn> {
    /// Bytes read from the socket but not handed to the codec, here and below.
    pub fn pending(&self) -> usize {
        self.buffered() + self.get_ref().pending()
    }
}

macro_rules! each {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Tcp($io) => $e,
            Conn::Unix($io) => $e,
            Conn::Tls($io) => $e,
            Conn::Other($io) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}

/// Takes room for one WebSocket in the fd store (two fds: the socket and the memfd with its
/// message), before the socket is taken apart; false when the store is full. Always true
/// towards a successor.
pub(super) fn reserve(env: &WsEnv) -> bool {
    match env.ctx.mover.get() {
        Some(Mover::Store { room }) => room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(2))
            .is_ok(),
        Some(Mover::Successor(_)) => true,
        None => false,
    }
}

/// Sends a parked connection on (see the module doc) and counts the outcome. `unread` came
/// first off the socket, then what the IO still holds.
pub(super) async fn move_out(env: &WsEnv, conn: Conn, unread: BytesMut, origin: &Origin, state: &[u8]) {
    let ctx = &env.ctx;
    // The guard keeps the connection counted in the drain until it is counted as moved (or
    // not): the drain's end logs the counts.
    let (res, _open) = match ctx.mover.get() {
        Some(mover) => send(mover, conn, unread, origin, state, env.moves + 1).await,
        None => (Err(io::Error::other("nowhere to move to")), None),
    };
    match res {
        Ok(()) => {
            ctx.moved.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => {
            ctx.not_moved.fetch_add(1, Ordering::SeqCst);
            debug!(error = %e, path = origin.path, "websocket not moved; closed");
        }
    }
}

async fn send(
    mover: &Mover,
    conn: Conn,
    mut unread: BytesMut,
    origin: &Origin,
    state: &[u8],
    moves: u32,
) -> (io::Result<()>, Option<ConnGuard>) {
    let parts = match conn {
        Conn::Tcp(io) => io.into_fd().map(|p| (Kind::Tcp, p)),
        Conn::Unix(io) => io.into_fd().map(|p| (Kind::Unix, p)),
        Conn::Tls(_) | Conn::Other(_) => Err(io::Error::other("not a movable connection")),
    };
    let (kind, (fd, rest, open)) = match parts {
        Ok(p) => p,
        Err(e) => return (Err(e), None),
    };
    unread.extend_from_slice(&rest);
    let headers = encode_headers(&origin.headers);
    let msg = ChannelMsg::Ws(WsConn {
        kind,
        moves,
        path: &origin.path,
        headers: &headers,
        state,
        unread: &unread,
    });
    let res = match mover {
        Mover::Successor(channel) => channel.send_with_fd(&msg, Some(fd.as_fd())).await,
        Mover::Store { .. } => {
            // Room was taken by `reserve`.
            static N: AtomicU64 = AtomicU64::new(0);
            let id = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
            fdstore::store_bytes(&fdstore::ws_msg_name(&id), &msg.encode())
                .and_then(|()| fdstore::store(&fdstore::ws_conn_name(&id), fd.as_fd()))
        }
    };
    (res, Some(open))
}

impl Server {
    /// Resumes a WebSocket a predecessor moved to us (a `ws` message): the socket, with the
    /// unread bytes replayed first, goes to the handler of its path on its listener's router,
    /// through a request with the original headers and the extensions of any request of this
    /// process ([`request::replayed`]): the handler's `Draining` is this process's drain.
    pub fn adopt_ws(&self, w: &WsConn<'_>, fd: OwnedFd) -> io::Result<()> {
        let ctx = self.ctx.clone();
        let prefix = Bytes::copy_from_slice(w.unread);
        let state = Arc::new(ConnState::default());
        let (conn, local, peer) = match w.kind {
            Kind::Tcp => {
                let std = std::net::TcpStream::from(fd);
                std.set_nonblocking(true)?;
                let s = TcpStream::from_std(std)?;
                let _ = s.set_nodelay(true);
                let local = s.local_addr().map(Local::Tcp).unwrap_or(Local::Unknown);
                let peer = s.peer();
                let io = ConnIo::new(s, prefix, state.clone(), ctx.drain.track());
                (Conn::Tcp(io), local, peer)
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
                let peer = s.peer();
                let io = ConnIo::new(s, prefix, state.clone(), ctx.drain.track());
                (Conn::Unix(io), local, peer)
            }
        };
        // The connection's context, as `serve_proto` builds it for any HTTP/1.1 connection.
        let rc = Arc::new(ReqCtx {
            ctx: ctx.clone(),
            router: ctx.routes.for_local(&local),
            state,
            moves: w.moves,
            peer,
            draining: ctx.drain.signal(),
            h2: false,
            movable: conn.movable(),
        });
        let origin = Origin {
            path: w.path.to_string(),
            headers: decode_headers(w.headers),
        };
        let state = w.state.to_vec();
        tokio::spawn(async move {
            let path = origin.path.clone();
            let mut req = request::replayed(&rc, &path, origin.headers.clone());
            let ws = WebSocket::new(
                conn,
                b"",
                WsEnv::of(&Env(rc.clone())),
                rc.draining.clone(),
                origin,
                Some(state),
            )
            .await;
            let slot = Resume(Arc::new(Mutex::new(Some(ws))));
            req.extensions_mut().insert(slot.clone());
            let status = match rc.router.clone().oneshot(req).await {
                Ok(r) => r.status(),
                Err(never) => match never {},
            };
            let left = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(ws) = left {
                // No handler took it (the route is gone or is no longer resumable, or a
                // middleware refused the request): the client reconnects and finds out.
                warn!(path, %status, "no resumable websocket handler for a moved connection; closing with 1012");
                ws.close(1012, "service restart").await;
            }
        });
        Ok(())
    }

    /// Resumes the WebSockets systemd's fd store gave back (`wsconn-<id>` with `wsmsg-<id>`).
    pub(crate) fn adopt_stored_ws(
        &self,
        socks: Vec<(String, OwnedFd)>,
        mut msgs: std::collections::HashMap<String, OwnedFd>,
    ) {
        for (name, fd) in socks {
            let Some(id) = fdstore::parse_ws_conn_name(&name) else {
                continue;
            };
            let Some(buf) = msgs.remove(id) else {
                warn!(name, "stored websocket without its message; closed");
                continue;
            };
            let bytes = match fdstore::read_bytes(buf, MAX_MSG as u64) {
                Ok(b) => b,
                Err(e) => {
                    warn!(name, error = %e, "cannot read a stored websocket's message; closed");
                    continue;
                }
            };
            let Some(ChannelMsg::Ws(w)) = ChannelMsg::parse(&bytes) else {
                warn!(name, "a stored websocket's message does not parse; closed");
                continue;
            };
            if let Err(e) = self.adopt_ws(&w, fd) {
                warn!(name, error = %e, "cannot resume a stored websocket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_lines_are_skipped() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.org"));
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.insert("x-empty", HeaderValue::from_static(""));
        h.insert("x-bin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(decode_headers(&encode_headers(&h)), h);
        let odd = decode_headers(b"no colon\r\nbad name: x\r\n: empty\r\nok:  two spaces\nx-y:z");
        assert_eq!(odd.len(), 2, "{odd:?}");
        assert_eq!(odd["ok"], " two spaces");
        assert_eq!(odd["x-y"], "z");
    }
}
