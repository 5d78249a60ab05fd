//! What hyper serves: one type for every kind of connection (TCP or Unix, plain or TLS).
//!
//! hyper's connection code is generic over its IO. Served once per IO type, the binary held four
//! copies of it, and with four callers the compiler inlined less of hyper and h2 than it does in
//! a binary with one (as `axum::serve`'s): about 190 instructions more per request, on HTTP/1.1
//! and on h2 alike. With this one type there is one copy, and each IO call costs a `match`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

use super::io::{ConnIo, Movable};

/// A connection as hyper gets it.
pub(super) enum Served {
    Tcp(ConnIo<TcpStream>),
    Unix(ConnIo<UnixStream>),
    /// Boxed: a TLS stream is large, and hyper's connection holds its IO inline.
    TlsTcp(Box<TlsStream<ConnIo<TcpStream>>>),
    TlsUnix(Box<TlsStream<ConnIo<UnixStream>>>),
}

/// A plain connection given back by hyper, to be moved.
pub(super) enum Plain {
    Tcp(ConnIo<TcpStream>),
    Unix(ConnIo<UnixStream>),
}

impl Served {
    /// False for TLS: its record state lives in this process (no kernel TLS here), so a drain
    /// never tries to move it, and its next response closes it.
    pub fn movable(&self) -> bool {
        matches!(self, Served::Tcp(_) | Served::Unix(_))
    }

    /// The plain connection, when this one can move; `None` for TLS.
    pub fn into_plain(self) -> Option<Plain> {
        match self {
            Served::Tcp(io) => Some(Plain::Tcp(io)),
            Served::Unix(io) => Some(Plain::Unix(io)),
            Served::TlsTcp(_) | Served::TlsUnix(_) => None,
        }
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
