//! What hyper serves: one type for every kind of connection (TCP or Unix, plain or TLS).
//!
//! hyper's connection code is generic over its IO. Served once per IO type, the binary held four
//! copies of it, and with four callers the compiler inlined less of hyper and h2 than it does in
//! a binary with one (as `axum::serve`'s): about 190 instructions more per request, on HTTP/1.1
//! and on h2 alike. With this one type there is one copy, and each IO call costs a `match`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

use super::io::{ConnIo, ConnState, Movable};
use super::peer::Peer;
use crate::drain::ConnGuard;
use crate::wire::ConnKind as Kind;

/// A connection as hyper gets it.
pub(super) enum Served {
    Tcp(ConnIo<TcpStream>),
    Unix(ConnIo<UnixStream>),
    /// Boxed: a TLS stream is large, and hyper's connection holds its IO inline.
    TlsTcp(Box<TlsStream<ConnIo<TcpStream>>>),
    TlsUnix(Box<TlsStream<ConnIo<UnixStream>>>),
}

impl Served {
    /// False for TLS: its record state lives in this process (no kernel TLS here), so a drain
    /// never tries to move it, and its next response closes it. The one answer to "can this
    /// connection move?", for HTTP/1.1 connections and WebSockets alike.
    pub fn movable(&self) -> bool {
        matches!(self, Served::Tcp(_) | Served::Unix(_))
    }

    /// Bytes the IO still has to replay before the socket (none under TLS, which never moves).
    pub fn pending(&self) -> usize {
        match self {
            Served::Tcp(io) => io.prefix_len(),
            Served::Unix(io) => io.prefix_len(),
            Served::TlsTcp(_) | Served::TlsUnix(_) => 0,
        }
    }

    /// Puts `bytes` back in front of what a plain connection reads next (the bytes read to
    /// tell its protocol). Only plain connections are sniffed: under TLS this does nothing.
    pub fn unread(&mut self, bytes: &[u8]) {
        match self {
            Served::Tcp(io) => io.unread(bytes),
            Served::Unix(io) => io.unread(bytes),
            Served::TlsTcp(_) | Served::TlsUnix(_) => {}
        }
    }

    /// The client's address from the connection's PROXY header, when it named one (plain
    /// connections only: TLS never moves).
    pub fn client(&self) -> Option<SocketAddr> {
        match self {
            Served::Tcp(io) => io.client(),
            Served::Unix(io) => io.client(),
            Served::TlsTcp(_) | Served::TlsUnix(_) => None,
        }
    }

    /// Takes a plain connection apart to move it: its kind, the socket, the bytes still to be
    /// replayed, and the guard that keeps it counted in the drain (see [`ConnIo::into_fd`]).
    /// An error for TLS, which never moves.
    pub fn into_fd(self) -> io::Result<(Kind, OwnedFd, Bytes, ConnGuard)> {
        let (kind, (fd, rest, open)) = match self {
            Served::Tcp(io) => (Kind::Tcp, io.into_fd()?),
            Served::Unix(io) => (Kind::Unix, io.into_fd()?),
            Served::TlsTcp(_) | Served::TlsUnix(_) => {
                return Err(io::Error::other("not a movable connection"));
            }
        };
        Ok((kind, fd, rest, open))
    }
}

/// A plain connection taken up (accepted, or handed over by a predecessor): hyper's IO, and
/// what its requests carry beside it.
pub(super) struct Taken {
    pub io: Served,
    pub state: Arc<ConnState>,
    pub peer: Peer,
}

impl Taken {
    /// `socket`, replaying `prefix` first, counted in the drain by `open` for as long as it
    /// lives here. Its peer is `client` (from a PROXY header) when there is one, else the
    /// socket's.
    pub fn new<S: Servable>(socket: S, prefix: Bytes, open: ConnGuard, client: Option<SocketAddr>) -> Taken {
        let state = Arc::new(ConnState {
            client,
            ..ConnState::default()
        });
        let peer = client.map_or_else(|| socket.peer(), Peer::Tcp);
        let io = S::served(ConnIo::new(socket, prefix, state.clone(), open));
        Taken { io, state, peer }
    }
}

/// A socket hyper can serve, plain or under TLS: each kind has its own variant of [`Served`].
pub(super) trait Servable: Movable + Sized {
    fn served(io: ConnIo<Self>) -> Served;
    fn served_tls(io: TlsStream<ConnIo<Self>>) -> Served;
}

impl Servable for TcpStream {
    fn served(io: ConnIo<Self>) -> Served {
        Served::Tcp(io)
    }
    fn served_tls(io: TlsStream<ConnIo<Self>>) -> Served {
        Served::TlsTcp(Box::new(io))
    }
}

impl Servable for UnixStream {
    fn served(io: ConnIo<Self>) -> Served {
        Served::Unix(io)
    }
    fn served_tls(io: TlsStream<ConnIo<Self>>) -> Served {
        Served::TlsUnix(Box::new(io))
    }
}

macro_rules! each {
    ($self:expr, $io:ident => $e:expr) => {
        match $self {
            Served::Tcp($io) => $e,
            Served::Unix($io) => $e,
            Served::TlsTcp($io) => $e,
            Served::TlsUnix($io) => $e,
        }
    };
}

impl AsyncRead for Served {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Served {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        each!(self, io => io.is_write_vectored())
    }
}
