//! Serving one connection: HTTP/1.1 or HTTP/2, told by sniffing (a plain connection) or by
//! ALPN (TLS).

use std::sync::Arc;

use axum::Router;

use super::context::ConnCtx;
use super::io::ConnState;
use super::peer::Peer;
use super::request::ReqCtx;
use super::served::{Served, Taken};
use super::sniff::{self, Proto};
use super::{h1, h2};

/// Serves a plain connection, accepted or handed over by a predecessor, whose IO replays the
/// bytes that one read but did not parse yet. `take` takes it up, in the connection's task (an
/// accepted one's peer is looked up there, not in the accept loop).
///
/// The connection is counted in the drain from the moment it was accepted or adopted, not
/// from the task's first poll: a drain that ends in between would otherwise exit the process
/// with the connection in a task that never ran (seen as a reconnect after chained handoffs).
///
/// This is the task's own future, not wrapped in another: each poll of the connection (one or
/// two per request) goes through every future it is nested in.
pub(super) async fn serve(take: impl FnOnce() -> Taken, ctx: Arc<ConnCtx>, moves: u32, router: Router) {
    let conn = take();
    let Some((proto, io)) = sniff::sniff(conn.io, &ctx, moves).await else {
        return;
    };
    serve_proto(proto, io, ctx, conn.state, conn.peer, moves, router).await;
}

/// Serves a connection whose protocol is known (sniffed, or negotiated by ALPN).
pub(super) async fn serve_proto(
    proto: Proto,
    io: Served,
    ctx: Arc<ConnCtx>,
    state: Arc<ConnState>,
    peer: Peer,
    moves: u32,
    router: Router,
) {
    let h2 = proto == Proto::Http2;
    let rc = ReqCtx::new(ctx, router, state, peer, moves, h2, io.movable());
    match proto {
        Proto::Http1 => h1::serve(io, rc).await,
        Proto::Http2 => h2::serve(io, rc).await,
    }
}
