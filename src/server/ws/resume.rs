//! A WebSocket that a predecessor moved to us, resumed: the path of the request that opened it
//! is replayed through the router, and the handler that takes [`super::WsUpgrade`] there gets
//! the resumed socket ([`Resume`]).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tower::ServiceExt;
use tracing::warn;

use super::super::context::ConnCtx;
use super::super::moving;
use super::super::request::{self, Env, ReqCtx};
use super::conn::{Conn, Origin, decode_headers};
use super::{WebSocket, WsEnv};
use crate::wire::WsConn;

/// A resumed connection waiting for its route's handler (a request extension of the request
/// the successor replays through its router).
#[derive(Clone)]
pub(in crate::server) struct Resume(pub Arc<Mutex<Option<WebSocket>>>);

/// Resumes a WebSocket a predecessor moved to us (a `ws` message): the socket, with the
/// unread bytes replayed first, goes to the handler of its path on its listener's router,
/// through a request with the original headers and the extensions of any request of this
/// process ([`request::replayed`]): the handler's `Draining` is this process's drain.
pub(in crate::server) fn resume(ctx: &Arc<ConnCtx>, w: &WsConn<'_>, fd: OwnedFd) -> io::Result<()> {
    let (taken, local) = moving::arrive(w.kind, fd, Bytes::copy_from_slice(w.unread), &ctx.drain, w.client)?;
    let conn = Conn::Served(taken.io);
    let router = ctx.routes.for_local(&local);
    // The connection's context, as any HTTP/1.1 connection's.
    let movable = conn.movable();
    let rc = ReqCtx::new(
        ctx.clone(),
        router,
        taken.state,
        taken.peer,
        w.moves,
        false,
        movable,
    );
    let origin = Origin {
        path: w.path.to_string(),
        headers: decode_headers(w.headers),
    };
    let state = w.state.to_vec();
    tokio::spawn(replay(rc, conn, origin, state));
    Ok(())
}

/// Runs the request that opened the WebSocket through the router again, with the resumed
/// socket waiting in a [`Resume`] for the handler.
async fn replay(rc: Arc<ReqCtx>, conn: Conn, origin: Origin, state: Vec<u8>) {
    let path = origin.path.clone();
    let mut req = request::replayed(&rc, &path, origin.headers.clone());
    let env = WsEnv::of(&Env(rc.clone()));
    let ws = WebSocket::new(conn, b"", env, rc.draining.clone(), origin, Some(state)).await;
    let slot = Resume(Arc::new(Mutex::new(Some(ws))));
    req.extensions_mut().insert(slot.clone());
    let status = match rc.router.clone().oneshot(req).await {
        Ok(r) => r.status(),
        Err(never) => match never {},
    };
    let left = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(ws) = left {
        // No handler took it (the route is gone or is no longer resumable, or a middleware
        // refused the request): the client reconnects and finds out.
        warn!(path, %status, "no resumable websocket handler for a moved connection; closing with 1012");
        ws.close(1012, "service restart").await;
    }
}
