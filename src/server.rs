//! Serving: one accept loop per listener (TCP or Unix), and each connection served by hyper's
//! HTTP/1.1 connection driving the axum `Router`. axum's own `serve` hides connections; we need
//! them, to drain each one gently (see [`crate::drain`]) and to move idle ones to a successor.
//!
//! Moving a connection: once the successor has taken over, each connection waits until no
//! request of it is in the handler (a response in progress finishes here first), then hyper is
//! stopped without closing the socket (`graceful_shutdown` + `poll_without_shutdown` +
//! `into_parts`). The socket's fd and the bytes hyper read but did not parse go to the successor
//! in one message over the handoff channel; the successor serves the connection from there,
//! replaying those bytes first. The client sees nothing. Shutting hyper down while a request is
//! in the handler would put `Connection: close` on that response, so we never do.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use bytes::{Buf, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::channel::{Channel, MAX_MSG};
use crate::drain::Drain;
use crate::fdstore;
use crate::listeners::{Family, Listener};
use crate::wire::{ChannelMsg, ConnKind as Kind};

/// Settings of the connection layer.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// While draining, an idle connection is closed after this long without activity.
    pub idle_close_grace: Duration,
    /// A request head must arrive within this long (slow-header clients are cut off).
    pub header_read_timeout: Duration,
    /// Move idle keep-alive connections to the successor at a handoff (instead of closing them).
    pub move_connections: bool,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            idle_close_grace: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            move_connections: true,
        }
    }
}

/// How many times the connection a request arrived on has moved between processes; a request
/// extension, e.g. for `/info`'s `connection_moves`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionMoves(pub u32);

/// The running connection layer of one process.
#[derive(Clone)]
pub struct Server {
    ctx: Arc<ConnCtx>,
}

struct ConnCtx {
    router: Router,
    drain: Drain,
    settings: ServeSettings,
    /// Set when draining connections go somewhere instead of closing: to a successor that
    /// took over, or into systemd's fd store for the next process after a restart.
    mover: OnceLock<Mover>,
    moved: AtomicU64,
    not_moved: AtomicU64,
}

impl Server {
    /// Starts one accept loop per listener on the current runtime. Each loop owns a duplicate of
    /// the listener's fd and closes it when the drain starts; the caller keeps the originals (a
    /// successor needs them).
    pub fn spawn(
        listeners: &[Listener],
        router: Router,
        drain: &Drain,
        settings: &ServeSettings,
    ) -> io::Result<Server> {
        let ctx = Arc::new(ConnCtx {
            router,
            drain: drain.clone(),
            settings: settings.clone(),
            mover: OnceLock::new(),
            moved: AtomicU64::new(0),
            not_moved: AtomicU64::new(0),
        });
        for l in listeners {
            let fd: OwnedFd = l.fd.try_clone()?;
            let name = l.name.clone();
            match l.family {
                Family::Inet => {
                    let std = std::net::TcpListener::from(fd);
                    std.set_nonblocking(true)?;
                    let listener = TcpListener::from_std(std)?;
                    tokio::spawn(accept_loop(name, ctx.clone(), move |cx| {
                        listener.poll_accept(cx).map_ok(|(s, _)| {
                            let _ = s.set_nodelay(true);
                            s
                        })
                    }));
                }
                Family::Unix => {
                    let std = std::os::unix::net::UnixListener::from(fd);
                    std.set_nonblocking(true)?;
                    let listener = UnixListener::from_std(std)?;
                    tokio::spawn(accept_loop(name, ctx.clone(), move |cx| {
                        listener.poll_accept(cx).map_ok(|(s, _)| s)
                    }));
                }
            }
        }
        Ok(Server { ctx })
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
        if self.ctx.settings.move_connections {
            let _ = self.ctx.mover.set(Mover::Store {
                room: AtomicU64::new(room),
            });
        }
    }

    /// Serves the connections systemd's fd store gave back at start (fds named `conn-…`, with
    /// their unparsed bytes in `cbuf-…` memfds); returns the names to remove from the store.
    pub fn adopt_stored(&self, stored: Vec<(String, OwnedFd)>) -> Vec<String> {
        let mut bufs = std::collections::HashMap::new();
        let mut conns = Vec::new();
        let mut names = Vec::new();
        for (name, fd) in stored {
            if let Some(id) = fdstore::parse_conn_buf_name(&name) {
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
            let prefix = match bufs.remove(id).map(read_memfd) {
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
        names
    }

    /// (moved, not moved) connection counts of this process's drain.
    pub fn move_counts(&self) -> (u64, u64) {
        (
            self.ctx.moved.load(Ordering::SeqCst),
            self.ctx.not_moved.load(Ordering::SeqCst),
        )
    }

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
                tokio::spawn(serve_connection(s, prefix, ctx, moves));
            }
            Kind::Unix => {
                let std = std::os::unix::net::UnixStream::from(fd);
                std.set_nonblocking(true)?;
                let s = UnixStream::from_std(std)?;
                tokio::spawn(serve_connection(s, prefix, ctx, moves));
            }
        }
        Ok(())
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

/// Accepts until the drain starts. Errors never end the loop: running out of fds (EMFILE,
/// ENFILE) or memory pauses accepting briefly instead of spinning.
async fn accept_loop<S, F>(name: String, ctx: Arc<ConnCtx>, mut accept: F)
where
    S: Movable,
    F: FnMut(&mut Context<'_>) -> Poll<io::Result<S>>,
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
                tokio::spawn(serve_connection(stream, Bytes::new(), ctx.clone(), 0));
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

/// Per-connection counters that tell whether the connection is idle.
#[derive(Default, Debug)]
struct ConnState {
    /// Requests whose response body has not been fully sent.
    in_flight: AtomicUsize,
    bytes_read: AtomicU64,
    /// Notified when `in_flight` drops to zero.
    idle: Notify,
}

/// Counts a request as in flight until its response body is done (or dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(st: Arc<ConnState>) -> InFlight {
        st.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(st)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it.
struct GuardedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type RespFuture = Pin<Box<dyn Future<Output = Result<Response<GuardedBody>, Infallible>> + Send>>;

/// Serves one connection; `prefix` holds bytes a predecessor read but did not parse yet.
async fn serve_connection<S: Movable>(stream: S, prefix: Bytes, ctx: Arc<ConnCtx>, moves: u32) {
    let _guard = ctx.drain.track();
    let state = Arc::new(ConnState::default());
    let io = TokioIo::new(ConnIo {
        prefix,
        inner: stream,
        state: state.clone(),
    });
    let svc_state = state.clone();
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| -> RespFuture {
        let in_flight = InFlight::new(svc_state.clone());
        let ctx = svc_ctx.clone();
        req.extensions_mut().insert(ConnectionMoves(moves));
        Box::pin(async move {
            let mut resp: Response<Body> = match ctx.router.clone().oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            // Draining without a successor to move to: this is the connection's last response.
            if ctx.drain.is_draining() && ctx.mover.get().is_none() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp.map(|inner| GuardedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.settings.header_read_timeout)
        .keep_alive(true);
    let mut conn = builder.serve_connection(io, svc);

    tokio::select! {
        res = &mut conn => {
            log_conn_end(res);
            return;
        }
        _ = ctx.drain.started() => {}
    }

    if let Some(mover) = ctx.mover.get() {
        // Wait until no request of this connection is in the handler or being answered.
        loop {
            let idle = state.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if state.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::select! {
                res = &mut conn => {
                    log_conn_end(res);
                    return;
                }
                _ = idle => {}
            }
        }
        Pin::new(&mut conn).graceful_shutdown();
        if let Err(e) = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await {
            debug!(error = %e, "connection ended while being moved");
            return;
        }
        let parts = conn.into_parts();
        let io = parts.io.into_inner();
        let sent = match mover {
            Mover::Successor(channel) => send_moved(channel, io, parts.read_buf, moves + 1).await,
            Mover::Store { room } => {
                if room
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                    .is_ok()
                {
                    store_moved(io, parts.read_buf, moves + 1)
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
        return;
    }

    // Draining with nobody to move to: the next response carries `Connection: close`; an idle
    // connection is shut down once it has stayed idle (nothing in the handler, nothing read) for
    // a whole grace period.
    let grace = ctx.settings.idle_close_grace;
    let mut seen = state.bytes_read.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            res = &mut conn => {
                log_conn_end(res);
                return;
            }
            _ = tokio::time::sleep(grace) => {
                let now = state.bytes_read.load(Ordering::SeqCst);
                if now == seen && state.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                seen = now;
            }
        }
    }
    Pin::new(&mut conn).graceful_shutdown();
    log_conn_end(conn.await);
}

/// Where draining connections go instead of closing.
enum Mover {
    Successor(Arc<Channel>),
    /// Into systemd's fd store, while it has room.
    Store {
        room: AtomicU64,
    },
}

/// Stores one idle connection in systemd's fd store, with the bytes read but not parsed yet (a
/// request that had just started arriving) in a memfd stored beside it.
fn store_moved<S: Movable>(io: ConnIo<S>, read_buf: Bytes, moves: u32) -> io::Result<()> {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let (fd, unread) = io.into_fd()?;
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
    let (fd, unread) = io.into_fd()?;
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

fn log_conn_end(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
}

/// A stream whose socket can be handed to another process.
trait Movable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    const KIND: Kind;
    fn into_owned_fd(self) -> io::Result<OwnedFd>;
}

impl Movable for TcpStream {
    const KIND: Kind = Kind::Tcp;
    fn into_owned_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

impl Movable for UnixStream {
    const KIND: Kind = Kind::Unix;
    fn into_owned_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

/// A connection's IO: yields `prefix` (bytes a predecessor read but did not parse) before
/// reading from the socket, and counts bytes read, so that a drain can tell an idle connection
/// from one that is receiving a request.
struct ConnIo<S> {
    prefix: Bytes,
    inner: S,
    state: Arc<ConnState>,
}

impl<S: Movable> ConnIo<S> {
    /// The socket and whatever of the prefix was not read yet.
    fn into_fd(self) -> io::Result<(OwnedFd, Bytes)> {
        Ok((self.inner.into_owned_fd()?, self.prefix))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
            self.state.bytes_read.fetch_add(n as u64, Ordering::SeqCst);
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
