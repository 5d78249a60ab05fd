//! A connection's IO: the socket, the bytes to replay before it, and what the drain needs to see.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

use super::peer::{Peer, UnixPeer};
use super::routes::Local;
use crate::drain::ConnGuard;

/// Per-connection counters that tell whether the connection is idle, and the switch that keeps
/// hyper from half-closing a socket that is about to move.
#[derive(Default, Debug)]
pub(super) struct ConnState {
    /// Requests whose response body has not been fully sent.
    pub in_flight: AtomicUsize,
    /// Requests started on this connection (HTTP/1.1), for the header-read timeout.
    pub requests: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Notified when `in_flight` drops to zero while `hold_reads` is set (only a mover waits).
    pub idle: Notify,
    /// Set while the connection is being handed over: `poll_shutdown` does nothing, so that
    /// hyper's end of an HTTP/1.1 connection (which shuts the socket's write side down) leaves
    /// the socket whole for the successor.
    pub moving: AtomicBool,
    /// Set from the drain's start until hyper has been told to stop: while no request is in
    /// flight, reads are held back, so that hyper cannot start on the next request (it would
    /// be answered here, with `Connection: close`) in the moment between the last response and
    /// the move. The bytes stay in the socket and go with it.
    pub hold_reads: AtomicBool,
    /// The client's address from the connection's PROXY header, when it named one: it goes
    /// with the connection when it moves.
    pub client: Option<SocketAddr>,
}

/// A stream whose socket can be handed to another process.
pub(super) trait Movable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// A connected socket's fd (one a predecessor handed over) as a stream of this runtime.
    fn from_fd(fd: OwnedFd) -> io::Result<Self>
    where
        Self: Sized;
    fn into_owned_fd(self) -> io::Result<OwnedFd>;
    /// Who is on the other end (computed once per connection, for `ConnectInfo`).
    fn peer(&self) -> Peer;
    /// The local end: the address of the listener that accepted the connection.
    fn local(&self) -> Local;
}

/// An fd as a tokio socket of the current runtime (`Std::from`, nonblocking, `register`): the
/// one way heird turns an fd into a listener or a stream.
pub(super) fn from_fd<Std: From<OwnedFd>, T>(
    fd: OwnedFd,
    set_nonblocking: fn(&Std, bool) -> io::Result<()>,
    register: fn(Std) -> io::Result<T>,
) -> io::Result<T> {
    let std = Std::from(fd);
    set_nonblocking(&std, true)?;
    register(std)
}

impl Movable for TcpStream {
    /// With `TCP_NODELAY`, as every accepted connection.
    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let s = from_fd(fd, std::net::TcpStream::set_nonblocking, TcpStream::from_std)?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
    fn into_owned_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
    fn peer(&self) -> Peer {
        match self.peer_addr() {
            Ok(a) => Peer::Tcp(a),
            Err(_) => Peer::Unknown,
        }
    }
    fn local(&self) -> Local {
        self.local_addr().map(Local::Tcp).unwrap_or(Local::Unknown)
    }
}

impl Movable for UnixStream {
    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        from_fd(
            fd,
            std::os::unix::net::UnixStream::set_nonblocking,
            UnixStream::from_std,
        )
    }
    fn into_owned_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
    fn local(&self) -> Local {
        self.local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| Local::Unix(p.display().to_string())))
            .unwrap_or(Local::Unknown)
    }
    fn peer(&self) -> Peer {
        match self.peer_cred() {
            Ok(cred) => Peer::Unix(UnixPeer {
                path: self
                    .peer_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.to_path_buf())),
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            }),
            Err(_) => Peer::Unknown,
        }
    }
}

/// A connection's IO: yields `prefix` (bytes read before hyper got the connection: by a
/// predecessor, or by the protocol sniffing) before reading from the socket, counts bytes read,
/// so that a drain can tell an idle connection from one that is receiving a request, and keeps
/// the connection counted as open in the drain for as long as the socket lives here (also after
/// an upgrade, when a WebSocket owns it).
pub(super) struct ConnIo<S> {
    prefix: Bytes,
    inner: S,
    state: Arc<ConnState>,
    _open: ConnGuard,
}

impl<S: Movable> ConnIo<S> {
    pub fn new(inner: S, prefix: Bytes, state: Arc<ConnState>, open: ConnGuard) -> ConnIo<S> {
        ConnIo {
            prefix,
            inner,
            state,
            _open: open,
        }
    }

    /// Puts `bytes` back in front of whatever is still to be replayed.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut b = BytesMut::with_capacity(bytes.len() + self.prefix.len());
        b.extend_from_slice(bytes);
        b.extend_from_slice(&self.prefix);
        self.prefix = b.freeze();
    }

    /// The client's address from the PROXY header (see [`ConnState::client`]).
    pub fn client(&self) -> Option<SocketAddr> {
        self.state.client
    }

    /// Bytes still to be replayed before the socket.
    pub fn prefix_len(&self) -> usize {
        self.prefix.len()
    }

    /// The socket, whatever of the prefix was not read yet, and the guard that keeps the
    /// connection counted in the drain (hold it until the socket has been handed on: the process
    /// exits once nothing is counted).
    pub fn into_fd(self) -> io::Result<(OwnedFd, Bytes, ConnGuard)> {
        Ok((self.inner.into_owned_fd()?, self.prefix, self._open))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.hold_reads.load(Ordering::SeqCst) && self.state.in_flight.load(Ordering::SeqCst) == 0 {
            // Woken by the mover: it polls the connection again once it released the hold.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = if self.prefix.is_empty() {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        } else {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            Poll::Ready(Ok(()))
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            self.state.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.moving.load(Ordering::SeqCst) {
            // The socket goes to the successor: flush, but do not send FIN.
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::drain::Drain;

    fn pair(prefix: &'static [u8]) -> (ConnIo<UnixStream>, UnixStream, Arc<ConnState>, Drain) {
        let (a, b) = UnixStream::pair().unwrap();
        let state = Arc::new(ConnState::default());
        let drain = Drain::new();
        let io = ConnIo::new(a, Bytes::from_static(prefix), state.clone(), drain.track());
        (io, b, state, drain)
    }

    #[tokio::test]
    async fn replays_the_prefix_then_what_was_unread_then_the_socket() {
        let (mut io, mut peer, state, _d) = pair(b"rest");
        let mut first = [0u8; 2];
        io.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"re");
        io.unread(b"XY");
        peer.write_all(b"!").await.unwrap();
        let mut all = [0u8; 5];
        io.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"XYst!");
        assert_eq!(state.bytes_read.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn held_reads_wait_only_while_nothing_is_in_flight() {
        let (mut io, mut peer, state, _d) = pair(b"");
        peer.write_all(b"GET").await.unwrap();
        state.hold_reads.store(true, Ordering::SeqCst);
        let mut b = [0u8; 3];
        let held = tokio::time::timeout(Duration::from_millis(50), io.read(&mut b)).await;
        assert!(held.is_err(), "read while held and idle: {held:?}");
        // A request in flight (its body may still be arriving) reads through the hold.
        state.in_flight.store(1, Ordering::SeqCst);
        assert_eq!(io.read(&mut b).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_moving_connection_is_not_shut_down_and_stays_counted_until_handed_on() {
        let (mut io, mut peer, state, drain) = pair(b"left");
        assert_eq!(drain.open_connections(), 1);
        state.moving.store(true, Ordering::SeqCst);
        io.write_all(b"bye").await.unwrap();
        io.shutdown().await.unwrap();
        let (fd, unread, open) = io.into_fd().unwrap();
        assert_eq!(&unread[..], b"left");
        assert_eq!(drain.open_connections(), 1, "the guard travels with the fd");
        drop(open);
        assert_eq!(drain.open_connections(), 0);
        // The peer got the bytes and no EOF: the socket still works from its new owner.
        let mut b = [0u8; 3];
        peer.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"bye");
        let mut moved = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)).unwrap();
        moved.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        peer.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");
        // Without `moving`, shutdown sends EOF.
        let (mut io, mut peer, _state, _d) = pair(b"");
        io.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(peer.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
