//! HTTP/2 with prior knowledge (h2c). An h2 connection cannot move (HPACK tables and flow
//! control live in the codec), so a drain ends it the way RFC 9113 §6.8 describes: GOAWAY with
//! the largest stream id, a PING round trip, then GOAWAY with the last stream id actually
//! received (the h2 crate does both steps in `graceful_shutdown`). Streams already opened
//! finish; the client sends new ones to the successor on a new connection. The drain deadline
//! bounds a client that never lets its streams finish (a flow-control stall).
//!
//! The same serves h2 over TLS (ALPN `h2`).
//!
//! Extended CONNECT (RFC 8441) is on, so axum's WebSocket routes work over HTTP/2 too.

use std::sync::Arc;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::context::log_conn_end;
use super::request::{self, ReqCtx};
use super::served::Served;

/// Serves one HTTP/2 connection until it ends, or until its graceful shutdown completes.
pub(super) async fn serve(io: Served, rc: Arc<ReqCtx>) {
    let ctx = rc.ctx.clone();
    // What `axum::serve` runs for a request, plus the connection's extensions: no in-flight
    // count (h2 connections never move, so nothing waits for them to be idle) and no
    // `Connection` header (illegal in h2; GOAWAY does its job). Not wrapped in a future of
    // heird's own: hyper moves each stream's future into a task, and a bigger future costs more
    // to move (or a box to allocate).
    let template = request::template(&rc);
    let (router, requests) = (rc.router.clone(), rc.requests);
    let svc = hyper::service::service_fn(move |req| request::route(&router, &template, requests, req));
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).enable_connect_protocol();
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            log_conn_end(res);
            return;
        }
        _ = ctx.drain.started_polled_often() => {}
    }
    conn.as_mut().graceful_shutdown();
    log_conn_end(conn.await);
}
