//! HTTP/1.1 connections, with upgrades (WebSocket), and how each one ends at a drain.
//!
//! Moving a connection: once the successor has taken over, each connection waits until no
//! request of it is in the handler (a response in progress, an SSE stream included, finishes
//! here first), then hyper is stopped without closing the socket, and the socket's fd and the
//! bytes hyper read but did not parse go to the successor (see [`super::moving`]). The client
//! sees nothing. Shutting hyper down while a request is in the handler would put
//! `Connection: close` on that response, so we never do.
//!
//! hyper's upgradeable connection has no `poll_without_shutdown`: it ends a connection that did
//! not upgrade with `poll_shutdown` on the IO, which would send FIN. So the IO ignores
//! `poll_shutdown` while a move is pending ([`super::io::ConnState::moving`]), and
//! `into_parts()` then gives the socket back whole. An upgraded connection has left hyper (its
//! IO lives in the WebSocket); it never moves, and stays counted in the drain until it closes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{Extensions, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::context::{ConnCtx, log_conn_end};
use super::io::ConnState;
use super::moving::{self, Cargo};
use super::request::{self, Call, GuardedBody, ReqCtx};
use super::served::Served;

/// The service of one connection: each request through [`request::call`] (named, so that the
/// connection's type can be named too).
pub(super) struct Service {
    rc: Arc<ReqCtx>,
    template: Extensions,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = Call;

    fn call(&self, req: Request<Incoming>) -> Call {
        request::call(&self.rc, &self.template, req)
    }
}

type Conn = http1::UpgradeableConnection<TokioIo<Served>, Service>;

/// Serves one HTTP/1.1 connection until it ends, upgrades, moves, or is closed by the drain.
///
/// TLS connections ([`Served::movable`] false) never move: at a drain they are treated as if
/// there were nobody to move to.
pub(super) async fn serve(io: Served, rc: Arc<ReqCtx>) {
    let movable = io.movable();
    let ctx = rc.ctx.clone();
    let state = rc.state.clone();
    let moves = rc.moves;
    let template = request::template(&rc);
    let mut builder = http1::Builder::new();
    // No hyper timer: its header-read timeout arms and drops a timer for every request. The
    // check below does the same job with the coarse clock of `tick`, and no timer at all.
    builder.header_read_timeout(None).keep_alive(true);
    let mut conn: Conn = builder
        .serve_connection(TokioIo::new(io), Service { rc, template })
        .with_upgrades();

    // The header-read timeout: at each tick of the coarse clock (one per `header_read_timeout`,
    // see `tick`), a connection on which no request started since the previous tick, with none
    // in flight then or now, is closed. A request head thus arrives within one to two periods
    // of the last response (of the start, for the first one: the first tick only looks), or the
    // connection ends (slow-header clients, and keep-alive connections idle that long, as with
    // hyper's own timeout).
    let hand = ctx.ticker.hand();
    let mut check = hand.after(hand.epoch());
    let mut started = state.requests.load(Ordering::Relaxed);
    let mut was_idle = false;
    // This connection's turn in the drain (at a handoff, turns come at a pace: see `pace`).
    let drain_started = ctx.pacer.turn(&ctx.drain);
    tokio::pin!(drain_started);
    loop {
        tokio::select! {
            // The drain turn first: once it has come, hyper must not be polled (and start
            // reading the next request) before the reads are held. Until then the connection
            // is served as before, also while a handoff's drain hands out turns to others.
            biased;
            _ = &mut drain_started => break,
            res = &mut conn => {
                log_conn_end(res);
                return;
            }
            epoch = &mut check => {
                let now = state.requests.load(Ordering::Relaxed);
                let idle = state.in_flight.load(Ordering::SeqCst) == 0;
                if idle && was_idle && now == started {
                    debug!("closed a connection that sent no request head in time");
                    return;
                }
                (started, was_idle) = (now, idle);
                check = hand.after(epoch);
            }
        }
    }

    if movable && ctx.moves.to().is_some() {
        move_when_idle(conn, &ctx, &state, moves).await;
    } else {
        close_when_idle(conn, &ctx, &state).await;
    }
}

/// The drain turn came, with somewhere to move to: waits until no request of the connection is
/// in the handler or being answered, stops hyper without closing the socket, and moves it.
async fn move_when_idle(mut conn: Conn, ctx: &ConnCtx, state: &Arc<ConnState>, moves: u32) {
    state.hold_reads.store(true, Ordering::SeqCst);
    // Whatever happens next, an IO that lives on (upgraded just now: a WebSocket owns it)
    // reads and shuts down normally again.
    let _release = Release(state.clone());
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
    state.moving.store(true, Ordering::SeqCst);
    Pin::new(&mut conn).graceful_shutdown();
    // Keep-alive is off now: hyper finishes what it has (say, the rest of a request body the
    // handler did not read) and stops; it may read, but it starts no new request.
    state.hold_reads.store(false, Ordering::SeqCst);
    if let Err(e) = (&mut conn).await {
        debug!(error = %e, "connection ended while being moved");
        return;
    }
    let Some(parts) = conn.into_parts() else {
        // It upgraded just now (the 101 was the last response): the WebSocket owns it.
        return;
    };
    let io = parts.io.into_inner();
    moving::move_out(&ctx.moves, &ctx.drain, io, &parts.read_buf, Cargo::Conn, moves).await;
}

/// Draining with nobody to move to: the next response carries `Connection: close`; an idle
/// connection is shut down once it has stayed idle (nothing in the handler, nothing read) for
/// a whole grace period.
async fn close_when_idle(mut conn: Conn, ctx: &ConnCtx, state: &ConnState) {
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

/// Clears the move-time switches of a connection's IO when dropped.
struct Release(Arc<ConnState>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold_reads.store(false, Ordering::SeqCst);
        self.0.moving.store(false, Ordering::SeqCst);
    }
}
