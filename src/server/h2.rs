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

use super::io::ServedIo;
use super::log_conn_end;
use super::request::{self, ReqCtx};

/// Serves one HTTP/2 connection until it ends, or until its graceful shutdown completes.
pub(super) async fn serve<I: ServedIo>(io: I, rc: Arc<ReqCtx>) {
    let ctx = rc.ctx.clone();
    // Boxed here (not on HTTP/1.1): hyper spawns each stream as a task and moves the future a
    // few times on the way, and moving a box is cheaper than moving the whole future.
    let template = request::template(&rc);
    let svc = hyper::service::service_fn(move |req| Box::pin(request::call(&rc, &template, req)));
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
