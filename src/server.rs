//! Serving: one accept loop per listener (TCP or Unix), and each connection served by hyper's
//! HTTP/1.1 connection driving the axum `Router`. axum's own `serve` hides connections; we need
//! them, to drain each one gently (see [`crate::drain`]) and, later, to move idle ones to a
//! successor.

use std::convert::Infallible;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::drain::Drain;
use crate::listeners::{Family, Listener};

/// Settings of the connection layer.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// While draining, an idle connection is closed after this long without activity.
    pub idle_close_grace: Duration,
    /// A request head must arrive within this long (slow-header clients are cut off).
    pub header_read_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            idle_close_grace: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Starts one accept loop per listener on the current runtime. Each loop owns a duplicate of
/// the listener's fd and closes it when the drain starts; the caller keeps the originals (a
/// successor needs them).
pub fn spawn(
    listeners: &[Listener],
    router: Router,
    drain: &Drain,
    settings: &ServeSettings,
) -> io::Result<()> {
    for l in listeners {
        let fd: OwnedFd = l.fd.try_clone()?;
        let ctx = Arc::new(ConnCtx {
            router: router.clone(),
            drain: drain.clone(),
            settings: settings.clone(),
        });
        let name = l.name.clone();
        match l.family {
            Family::Inet => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true)?;
                let listener = TcpListener::from_std(std)?;
                tokio::spawn(accept_loop(name, ctx, move |cx| {
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
                tokio::spawn(accept_loop(name, ctx, move |cx| {
                    listener.poll_accept(cx).map_ok(|(s, _)| s)
                }));
            }
        }
    }
    Ok(())
}

struct ConnCtx {
    router: Router,
    drain: Drain,
    settings: ServeSettings,
}

/// Accepts until the drain starts. Errors never end the loop: running out of fds (EMFILE,
/// ENFILE) or memory pauses accepting briefly instead of spinning.
async fn accept_loop<S, F>(name: String, ctx: Arc<ConnCtx>, mut accept: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
                let ctx = ctx.clone();
                tokio::spawn(serve_connection(stream, ctx));
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
    in_flight: AtomicUsize,
    bytes_read: AtomicU64,
}

/// Decrements `in_flight` when a request's handler is done (or cancelled).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_connection<S>(stream: S, ctx: Arc<ConnCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = ctx.drain.track();
    let state = Arc::new(ConnState::default());
    let io = TokioIo::new(Tracked {
        inner: stream,
        state: state.clone(),
    });
    let svc_state = state.clone();
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let st = svc_state.clone();
        let ctx = svc_ctx.clone();
        st.in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(st);
        async move {
            let _in_flight = in_flight;
            let mut resp: Response<Body> = match ctx.router.clone().oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if ctx.drain.is_draining() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.settings.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);

    tokio::select! {
        res = conn.as_mut() => {
            log_conn_end(res);
            return;
        }
        _ = ctx.drain.started() => {}
    }
    // Draining: the next response carries `Connection: close`; an idle connection is shut down
    // once it has stayed idle (nothing in the handler, nothing read) for a whole grace period.
    let grace = ctx.settings.idle_close_grace;
    let mut seen = state.bytes_read.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            res = conn.as_mut() => {
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
    conn.as_mut().graceful_shutdown();
    log_conn_end(conn.await);
}

fn log_conn_end(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
}

/// An IO wrapper that counts bytes read, so a drain can tell an idle connection from one that
/// is receiving a request.
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.state.bytes_read.fetch_add(n as u64, Ordering::SeqCst);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
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
