//! What every request gets beside itself (extensions, on both protocols), and the hyper service
//! of one HTTP/1.1 connection with the accounting that tells the drain whether it is idle.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tower::ServiceExt;
use tower::util::Oneshot;

use super::context::ConnCtx;
use super::io::ConnState;
use super::peer::Peer;
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
    /// HTTP/2: its requests do not go through [`call`] (see `h2::serve`), and its WebSocket
    /// streams never move.
    pub h2: bool,
    /// False over TLS: the connection never moves, so a drain always closes it.
    pub movable: bool,
    /// The service's request counter (`heird_requests_total`), looked up once per connection.
    pub requests: &'static std::sync::atomic::AtomicU64,
}

impl ReqCtx {
    /// The context of a connection's requests, from the process's and the connection's.
    pub fn new(
        ctx: Arc<ConnCtx>,
        router: axum::Router,
        state: Arc<ConnState>,
        peer: Peer,
        moves: u32,
        h2: bool,
        movable: bool,
    ) -> Arc<ReqCtx> {
        Arc::new(ReqCtx {
            draining: ctx.drain.signal(),
            ctx,
            router,
            state,
            moves,
            peer,
            h2,
            movable,
            requests: crate::metrics::region::requests_counter(),
        })
    }
}

/// How many times the connection a request arrived on has moved between processes; a request
/// extension (only on connections that moved: none means 0), e.g. for `/info`'s
/// `connection_moves`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionMoves(pub u32);

/// Counts a request as in flight until its response body is done (or dropped). Holds the
/// connection's context (the count is in its `state`), which the request's future reads too.
struct InFlight(Arc<ReqCtx>);

impl InFlight {
    fn new(rc: Arc<ReqCtx>) -> InFlight {
        rc.state.in_flight.fetch_add(1, Ordering::SeqCst);
        rc.state.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(rc)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Only a mover waits for `idle`, and it holds the reads before it looks at the count
        // (both SeqCst): if it did not see this decrement, this sees its hold. Without one,
        // nobody is woken (a notify takes a lock: once per request otherwise).
        let st = &self.0.state;
        if st.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && st.hold_reads.load(Ordering::SeqCst) {
            st.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it:
/// a long response (SSE, a streaming body) keeps its connection from being taken for idle.
pub(super) struct GuardedBody {
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

/// heird's own extension of every request: the connection's context, one boxed value where a
/// field per extension would cost an allocation each. [`Draining`] and the WebSocket upgrade
/// read it.
#[derive(Clone)]
pub(in crate::server) struct Env(pub Arc<ReqCtx>);

impl<S: Send + Sync> FromRequestParts<S> for Draining {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Env>()
            .map_or_else(Draining::never, |e| e.0.draining.clone()))
    }
}

/// The extensions every request of a connection starts with: `ConnectInfo`, [`Env`] and, on a
/// connection that moved, [`ConnectionMoves`]. Built once per connection, with room for
/// axum's own three (`OriginalUri`, `MatchedPath`, the path parameters), so that a request
/// costs one table and a box per value, and the table never grows on the way.
pub(super) fn template(rc: &Arc<ReqCtx>) -> Extensions {
    let mut ext = Extensions::new();
    // Only on connections that did move: `/info` takes it as an `Option` (0 without it).
    if rc.moves > 0 {
        ext.insert(ConnectionMoves(rc.moves));
    }
    ext.insert(Env(rc.clone()));
    rc.peer.insert_into(&mut ext);
    // Grow the table to hold seven (the most its next size holds) by inserting placeholders,
    // then take them out again: the table keeps its size, and a clone keeps it too.
    #[derive(Clone)]
    struct Pad<const N: u8>;
    fn pad<const N: u8>(ext: &mut Extensions, add: bool) {
        if add {
            ext.insert(Pad::<N>);
        } else {
            ext.remove::<Pad<N>>();
        }
    }
    let n = 7usize.saturating_sub(ext.len());
    for add in [true, false] {
        let pads: [fn(&mut Extensions, bool); 7] = [
            pad::<0>, pad::<1>, pad::<2>, pad::<3>, pad::<4>, pad::<5>, pad::<6>,
        ];
        for p in &pads[..n] {
            p(&mut ext, add);
        }
    }
    ext
}

/// The request a successor replays through its router for a WebSocket moved to it: the
/// original path (with the query) and headers, and the connection's [`template`], as on any
/// request, so that its handler's extractors ([`Draining`], the upgrade, `ConnectInfo`,
/// [`ConnectionMoves`]) see this process. A path that is no valid URI any more becomes `/`.
pub(super) fn replayed(rc: &Arc<ReqCtx>, path: &str, headers: HeaderMap) -> Request<Body> {
    let mut req = Request::get(path)
        .body(Body::empty())
        .unwrap_or_else(|_| Request::new(Body::empty()));
    *req.headers_mut() = headers;
    *req.extensions_mut() = template(rc);
    req
}

/// Answers one HTTP/1.1 request with the router. `template` is the connection's [`template`].
///
/// The future is small and not boxed: hyper keeps it in place (no allocation of its own) but
/// moves it once or twice on the way, so it holds only the router's `Oneshot` (the request is
/// inside) and the in-flight count (which holds the connection's context); an `async` block
/// would hold the request twice (as its capture and inside the `Oneshot`).
pub(super) fn call(rc: &Arc<ReqCtx>, template: &Extensions, req: Request<Incoming>) -> Call {
    Call {
        in_flight: Some(InFlight::new(rc.clone())),
        inner: route(&rc.router, template, rc.requests, req),
    }
}

/// The router's future for `req`, with the connection's extensions (`template`) on it: what
/// every request runs, on either protocol.
///
/// Inlined into its two callers (hyper's HTTP/1.1 and h2 request paths): as a function of its
/// own it returns the `Oneshot` (the request inside) through memory, and the caller copies it
/// into its future; that `memcpy` and the call cost about 80 instructions per request.
#[inline(always)]
pub(super) fn route(
    router: &axum::Router,
    template: &Extensions,
    requests: &std::sync::atomic::AtomicU64,
    mut req: Request<Incoming>,
) -> Oneshot<axum::Router, Request<Body>> {
    // A counter: no order with anything else is needed.
    requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // hyper's own extensions are usually none (then this takes the template's table whole).
    req.extensions_mut().extend(template.clone());
    router.clone().oneshot(req.map(Body::new))
}

pin_project_lite::pin_project! {
    /// The future of [`call`].
    pub(super) struct Call {
        #[pin]
        inner: Oneshot<axum::Router, Request<Body>>,
        // `None` once the response is out (it went into the body).
        in_flight: Option<InFlight>,
    }
}

impl Future for Call {
    type Output = Result<Response<GuardedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp: Response<Body> = match std::task::ready!(this.inner.poll(cx)) {
            Ok(r) => r,
            Err(never) => match never {},
        };
        // Taken only here, when the response is ready, which happens once: the `Oneshot` above
        // panics if polled after it completed (hyper never does that).
        let Some(in_flight) = this.in_flight.take() else {
            return Poll::Pending;
        };
        let rc = &in_flight.0;
        // Draining without a successor to move to (or over TLS, which never moves): this is the
        // connection's last response (an upgrade keeps its `Connection: upgrade`; the handler
        // ends it).
        if rc.ctx.drain.is_draining()
            && (!rc.movable || rc.ctx.moves.to().is_none())
            && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(resp.map(|inner| GuardedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}
