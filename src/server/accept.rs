//! Accepting: one loop per listener (TCP or Unix), from the start until the drain starts, and
//! the drain turns of the HTTP/1.1 connections.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::context::ConnCtx;
use super::io::Movable;
use super::moving::Mover;
use super::served::{Servable, Taken};
use super::{conn, io as conn_io, proxied, tls};
use crate::listeners::{Family, Listener};
use crate::proxy::ProxyProtocol;
use crate::tls::TlsSetup;

/// A listening socket of either family.
trait Listen: Send + Sized + 'static {
    type Stream: Servable;
    fn from_fd(fd: OwnedFd) -> io::Result<Self>;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Stream>>;
}

impl Listen for TcpListener {
    type Stream = TcpStream;
    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        conn_io::from_fd(fd, std::net::TcpListener::set_nonblocking, TcpListener::from_std)
    }
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        TcpListener::poll_accept(self, cx).map_ok(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        })
    }
}

impl Listen for UnixListener {
    type Stream = UnixStream;
    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        conn_io::from_fd(
            fd,
            std::os::unix::net::UnixListener::set_nonblocking,
            UnixListener::from_std,
        )
    }
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>> {
        UnixListener::poll_accept(self, cx).map_ok(|(s, _)| s)
    }
}

/// Starts the drain turns' task and one accept loop per listener on the current runtime. Each
/// loop owns a duplicate of the listener's fd and closes it when the drain starts; the caller
/// keeps the originals (a successor needs them).
pub(super) fn start(ctx: &Arc<ConnCtx>, listeners: &[Listener]) -> io::Result<Vec<JoinHandle<()>>> {
    tokio::spawn(hand_out_turns(ctx.clone()));
    let mut accepting = Vec::new();
    let tls_for = tls::listener_settings(listeners, ctx.settings.tls.as_ref())?;
    let proxy_for = proxy_settings(listeners, ctx.settings.proxy_protocol.as_ref())?;
    for ((l, tls), proxy) in listeners.iter().zip(tls_for).zip(proxy_for) {
        let fd = l.fd.try_clone()?;
        let (name, ctx) = (l.name.clone(), ctx.clone());
        let router = ctx.routes.for_listener(&l.address);
        let how = How { tls, proxy };
        accepting.push(match l.family {
            Family::Inet => tokio::spawn(accept_loop(TcpListener::from_fd(fd)?, name, ctx, router, how)),
            Family::Unix => tokio::spawn(accept_loop(UnixListener::from_fd(fd)?, name, ctx, router, how)),
        });
    }
    Ok(accepting)
}

/// Once the drain has started: moving to a successor, the HTTP/1.1 connections get their turns
/// at a pace ([`super::pace`]), all of them well within the WebSocket boundary timeout (a
/// second before the drain deadline); otherwise (a stop) all at once.
async fn hand_out_turns(ctx: Arc<ConnCtx>) {
    ctx.drain.started().await;
    if matches!(ctx.moves.to(), Some(Mover::Successor(_))) {
        let budget = ctx
            .settings
            .ws_boundary_timeout
            .unwrap_or(Duration::from_secs(29))
            / 4;
        let n = ctx.drain.open_connections();
        info!(
            connections = n,
            within_ms = budget.as_millis() as u64,
            "connections get their drain turns at a pace (5 000 a second or more)"
        );
        ctx.pacer.release_paced(n, budget).await;
    } else {
        debug!("every connection gets its drain turn now");
        ctx.pacer.release_all();
    }
}

/// What a listener's connections do before HTTP: read a PROXY header (`proxy`), a TLS
/// handshake (`tls`).
#[derive(Clone, Default)]
struct How {
    tls: Option<Arc<TlsSetup>>,
    proxy: Option<Arc<ProxyProtocol>>,
}

/// The PROXY protocol settings of each listener (`None`: off), in order. An error when
/// `proxy_protocol` names a listener this process does not have (a typo would otherwise take
/// the balancer's address for the client's). Logs which listeners require the header.
fn proxy_settings(
    listeners: &[Listener],
    pp: Option<&ProxyProtocol>,
) -> io::Result<Vec<Option<Arc<ProxyProtocol>>>> {
    let Some(pp) = pp else {
        return Ok(vec![None; listeners.len()]);
    };
    if let Some(names) = &pp.listeners
        && let Some(missing) = names.iter().find(|n| !listeners.iter().any(|l| &l.name == *n))
    {
        let have: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        return Err(io::Error::other(format!(
            "proxy_protocol names {missing:?}, which is not a listener of this process (its listeners: {})",
            have.join(", ")
        )));
    }
    let pp = Arc::new(pp.clone());
    let on: Vec<&str> = listeners
        .iter()
        .filter(|l| pp.applies_to(&l.name))
        .map(|l| l.address.as_str())
        .collect();
    let from: Vec<String> = pp.from.iter().map(ToString::to_string).collect();
    info!(listeners = ?on, from = ?from, timeout = ?pp.timeout, "proxy protocol: header required");
    Ok(listeners
        .iter()
        .map(|l| pp.applies_to(&l.name).then(|| pp.clone()))
        .collect())
}

/// Accepts until the drain starts. Errors never end the loop: running out of fds (EMFILE,
/// ENFILE) or memory pauses accepting briefly instead of spinning.
/// On a TLS listener, each connection does the TLS handshake first; on a PROXY listener, each
/// reads its header before that.
async fn accept_loop<L: Listen>(listener: L, name: String, ctx: Arc<ConnCtx>, router: Router, how: How) {
    let mut last_warn: Option<tokio::time::Instant> = None;
    loop {
        let res = tokio::select! {
            biased;
            _ = ctx.drain.started() => break,
            r = std::future::poll_fn(|cx| listener.poll_accept(cx)) => r,
        };
        match res {
            Ok(stream) => serve_new(stream, &ctx, router.clone(), &how),
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

/// Serves a connection just accepted, counted in the drain from now on: its PROXY header first
/// on a PROXY listener, then TLS on a TLS listener, else HTTP/1.1 or h2c by sniffing.
fn serve_new<S: Servable>(stream: S, ctx: &Arc<ConnCtx>, router: Router, how: &How) {
    let open = ctx.drain.track_connection();
    let ctx = ctx.clone();
    match how {
        How { proxy: Some(pp), tls } => {
            tokio::spawn(proxied::serve(stream, ctx, open, router, tls.clone(), pp.clone()));
        }
        How {
            proxy: None,
            tls: Some(tls),
        } => {
            let plain = (Bytes::new(), None);
            tokio::spawn(tls::serve(stream, ctx, tls.clone(), open, router, plain));
        }
        How {
            proxy: None,
            tls: None,
        } => {
            let take = move || Taken::new(stream, Bytes::new(), open, None);
            tokio::spawn(conn::serve(take, ctx, 0, router));
        }
    }
}

/// Serves the one connection a socket unit with `Accept=yes` accepted for us (passed as `name`):
/// as a connection of a listener of that name (TLS when `[tls]` applies to it, a PROXY header
/// first when `proxy_protocol` does).
pub(super) fn serve_accepted(ctx: &Arc<ConnCtx>, name: &str, family: Family, fd: OwnedFd) -> io::Result<()> {
    fn serve<S: Servable>(s: S, ctx: &Arc<ConnCtx>, how: &How) {
        let router = ctx.routes.for_local(&s.local());
        serve_new(s, ctx, router, how);
    }
    let how = How {
        tls: ctx.settings.tls.clone().filter(|t| t.applies_to(name)),
        proxy: ctx
            .settings
            .proxy_protocol
            .clone()
            .filter(|p| p.applies_to(name))
            .map(Arc::new),
    };
    match family {
        Family::Inet => {
            let s = TcpStream::from_fd(fd)?;
            let _ = s.set_nodelay(true);
            serve(s, ctx, &how);
        }
        Family::Unix => serve(UnixStream::from_fd(fd)?, ctx, &how),
    }
    Ok(())
}
