//! A resumable WebSocket's connection, and what it carries when it moves: the request that
//! opened it ([`Origin`]) and the handler's state, sent on by the connection layer's `moving`
//! (one `ws` message to the successor, or `wsconn-<id>` and `wsmsg-<id>` in the fd store).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::super::moving::{self, Cargo};
use super::super::served::Served;
use super::WsEnv;

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

/// The connection under a resumable WebSocket: heird's own IO (plain, which moves, or TLS,
/// which never does: [`Served::movable`]), or whatever else an upgrade gave (HTTP/2's extended
/// CONNECT, a router served outside heird): never moved.
pub(in crate::server) enum Conn {
    Served(Served),
    Other(TokioIo<Upgraded>),
}

impl Conn {
    /// Takes heird's IO back out of hyper's upgrade, with the bytes hyper read past the request
    /// (they go to the front of the WebSocket's [`super::frames::FrameIo`]).
    pub fn from_upgraded(up: Upgraded) -> (Conn, Bytes) {
        match up.downcast::<TokioIo<Served>>() {
            Ok(p) => (Conn::Served(p.io.into_inner()), p.read_buf),
            Err(up) => (Conn::Other(TokioIo::new(up)), Bytes::new()),
        }
    }

    pub fn movable(&self) -> bool {
        matches!(self, Conn::Served(io) if io.movable())
    }

    /// Bytes the IO still has to replay.
    pub fn pending(&self) -> usize {
        match self {
            Conn::Served(io) => io.pending(),
            Conn::Other(_) => 0,
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
            Conn::Served($io) => $e,
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

/// Sends a parked connection on with the request that opened it and the handler's `state`,
/// and counts the outcome (room in the fd store was taken before it parked). `unread` came
/// first off the socket, then what the IO still holds.
pub(super) async fn move_out(env: &WsEnv, conn: Conn, unread: BytesMut, origin: &Origin, state: &[u8]) {
    let ctx = &env.ctx;
    let Conn::Served(mut io) = conn else {
        ctx.moves.count(false);
        debug!(
            path = origin.path,
            "websocket not moved (not a movable connection); closed"
        );
        return;
    };
    io.unread(&unread);
    let headers = encode_headers(&origin.headers);
    let cargo = Cargo::Ws {
        path: &origin.path,
        headers: &headers,
        state,
    };
    moving::move_out(&ctx.moves, &ctx.drain, io, &[], cargo, env.moves).await;
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
