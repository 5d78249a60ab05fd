//! Listeners with the PROXY protocol ([`crate::proxy`]): each connection's header is read in the
//! connection's own task (never in the accept loop), before TLS and before telling HTTP/1.1 from
//! h2; then the connection goes on as on any listener, with the header's client as its peer and
//! the bytes read past the header replayed first.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::context::ConnCtx;
use super::peer::Peer;
use super::served::{Servable, Taken};
use super::{conn, tls};
use crate::drain::ConnGuard;
use crate::proxy::{self, MAX_HEADER, Parsed, ProxyProtocol};
use crate::tls::TlsSetup;

/// Serves one connection of a PROXY listener: its header, then TLS (on a TLS listener) or the
/// protocol sniffing. A connection without a valid header is closed (see [`read_header`]).
pub(super) async fn serve<S: Servable>(
    mut stream: S,
    ctx: Arc<ConnCtx>,
    open: ConnGuard,
    router: Router,
    tls: Option<Arc<TlsSetup>>,
    pp: Arc<ProxyProtocol>,
) {
    let Some((client, rest)) = read_header(&mut stream, &ctx, &pp).await else {
        return;
    };
    match tls {
        Some(tls) => tls::serve(stream, ctx, tls, open, router, (rest, client)).await,
        None => {
            let take = move || Taken::new(stream, rest, open, client);
            conn::serve(take, ctx, 0, router).await;
        }
    }
}

/// The client the header names (`None`: a v2 `LOCAL` or v1 `UNKNOWN` header, the socket's peer
/// stays) and the bytes read past it. `None`, logged with the socket's peer, when the source
/// is not trusted (`from`), the header is malformed or not complete within `timeout`, or the
/// connection closed first; one that sent nothing when the drain started is closed after the
/// grace an idle connection gets.
async fn read_header<S: Servable>(
    stream: &mut S,
    ctx: &ConnCtx,
    pp: &ProxyProtocol,
) -> Option<(Option<SocketAddr>, Bytes)> {
    let peer = stream.peer();
    if let Peer::Tcp(a) = &peer
        && !pp.trusts(a.ip())
    {
        warn!(peer = %a, "proxy protocol: connection from a source not in proxy_from; closed");
        return None;
    }
    let who = tls::describe(&peer);
    let deadline = Instant::now() + pp.timeout;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(peer = %who, bytes = buf.len(), timeout = ?pp.timeout, "proxy protocol: no complete header in time; closed");
                return None;
            }
            _ = async {
                ctx.drain.started().await;
                tokio::time::sleep(ctx.settings.idle_close_grace).await;
            }, if buf.is_empty() => {
                debug!(peer = %who, "proxy protocol: closed a connection that sent nothing before the drain");
                return None;
            }
        };
        match read {
            Ok(0) if buf.is_empty() => {
                debug!(peer = %who, "proxy protocol: closed before sending anything");
                return None;
            }
            Ok(0) => {
                warn!(peer = %who, bytes = buf.len(), "proxy protocol: closed in the middle of its header");
                return None;
            }
            Err(e) => {
                debug!(peer = %who, error = %e, "proxy protocol: read failed before the header");
                return None;
            }
            Ok(_) => {}
        }
        match proxy::parse(&buf) {
            Parsed::Incomplete if buf.len() < MAX_HEADER => {}
            Parsed::Incomplete => {
                warn!(peer = %who, bytes = buf.len(), "proxy protocol: header longer than the protocol allows; closed");
                return None;
            }
            Parsed::Invalid(reason) => {
                warn!(peer = %who, %reason, "proxy protocol: no valid header; closed");
                return None;
            }
            Parsed::Header { len, client } => {
                debug!(peer = %who, ?client, "proxy protocol: header read");
                let rest = buf.split_off(len).freeze();
                return Some((client, rest));
            }
        }
    }
}
