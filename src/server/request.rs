//! The hyper service of one connection: what every request gets beside itself (extensions), and
//! the accounting that tells the drain whether a connection is idle.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tower::ServiceExt;

use super::io::ConnState;
use super::peer::Peer;
use super::{ConnCtx, ConnectionMoves};
use crate::drain::Draining;

/// What every request of one connection carries.
pub(super) struct ReqCtx {
    pub ctx: Arc<ConnCtx>,
    /// The router of the connection's listener.
    pub router: axum::Router,
    pub state: Arc<ConnState>,
    pub moves: u32,
    pub peer: Peer,
    pub draining: Draining,
    /// HTTP/2: no `Connection` header (it is illegal there; GOAWAY does its job), and no
    /// in-flight count (h2 connections do not move).
    pub h2: bool,
    /// False over TLS: the connection never moves, so a drain always closes it.
    pub movable: bool,
}

/// Counts a request as in flight until its response body is done (or dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(st: Arc<ConnState>) -> InFlight {
        st.in_flight.fetch_add(1, Ordering::SeqCst);
        st.requests.fetch_add(1, Ordering::Relaxed);
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

/// A response body that keeps its request counted as in flight until hyper is done with it:
/// a long response (SSE, a streaming body) keeps its connection from being taken for idle.
pub(super) struct GuardedBody {
    inner: Body,
    /// `None` on HTTP/2: its connections never move, so nothing waits for them to be idle.
    _in_flight: Option<InFlight>,
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

/// Answers one request with the router. The future is not boxed here: on HTTP/1.1 hyper keeps
/// it in place, so a request costs no allocation of its own (h2 boxes it: see `h2::serve`).
pub(super) fn call(
    rc: &Arc<ReqCtx>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<GuardedBody>, Infallible>> + Send + use<> {
    let in_flight = (!rc.h2).then(|| InFlight::new(rc.state.clone()));
    let ext = req.extensions_mut();
    // Only on connections that did move: `/info` takes it as an `Option` (0 without it).
    if rc.moves > 0 {
        ext.insert(ConnectionMoves(rc.moves));
    }
    ext.insert(rc.draining.clone());
    if !rc.h2 {
        ext.insert(super::ws::WsEnv {
            ctx: rc.ctx.clone(),
            moves: rc.moves,
        });
    }
    rc.peer.insert_into(ext);
    let rc = rc.clone();
    async move {
        let mut resp: Response<Body> = match rc.router.clone().oneshot(req.map(Body::new)).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        // Draining without a successor to move to (or over TLS, which never moves): this is the
        // connection's last response (an upgrade keeps its `Connection: upgrade`; the handler
        // ends it).
        if !rc.h2
            && rc.ctx.drain.is_draining()
            && (!rc.movable || rc.ctx.mover.get().is_none())
            && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(resp.map(|inner| GuardedBody {
            inner,
            _in_flight: in_flight,
        }))
    }
}
