//! The upgrade of a resumable WebSocket: [`WsUpgrade`], the extractor that answers a fresh
//! RFC 6455 handshake, or hands the handler a connection resumed from a predecessor.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use tracing::debug;

use super::conn::{Conn, Origin};
use super::resume::Resume;
use super::{WebSocket, WsEnv};
use crate::drain::Draining;
use crate::server::request::Env;

/// The extractor of a WebSocket handler that opts into moving: like axum's
/// `WebSocketUpgrade`, for HTTP/1.1 (RFC 6455; no subprotocols, no extensions). On a connection
/// moved from a predecessor it gives the handler the resumed socket instead.
pub struct WsUpgrade {
    kind: Kind,
}

enum Kind {
    Fresh {
        on_upgrade: OnUpgrade,
        accept: HeaderValue,
        env: Option<WsEnv>,
        draining: Draining,
        origin: Origin,
    },
    Resumed(Box<WebSocket>),
}

impl std::fmt::Debug for WsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsUpgrade").finish_non_exhaustive()
    }
}

impl WsUpgrade {
    /// Answers the upgrade and runs `handler` on the socket (at once on a resumed one).
    pub fn on_upgrade<F, Fut>(self, handler: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self.kind {
            Kind::Resumed(ws) => {
                tokio::spawn(handler(*ws));
                StatusCode::SWITCHING_PROTOCOLS.into_response()
            }
            Kind::Fresh {
                on_upgrade,
                accept,
                env,
                draining,
                origin,
            } => {
                tokio::spawn(async move {
                    let upgraded = match on_upgrade.await {
                        Ok(u) => u,
                        Err(e) => {
                            debug!(error = %e, "websocket upgrade failed");
                            return;
                        }
                    };
                    let (conn, read) = Conn::from_upgraded(upgraded);
                    let env = env.filter(|_| conn.movable());
                    handler(WebSocket::new(conn, &read, env, draining, origin, None).await).await;
                });
                let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
                let h = r.headers_mut();
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                r
            }
        }
    }
}

impl WsEnv {
    /// What an upgrade on this request needs to move the connection later (`None` on HTTP/2,
    /// whose streams never move).
    pub(super) fn of(env: &Env) -> Option<WsEnv> {
        (!env.0.h2).then(|| WsEnv {
            ctx: env.0.ctx.clone(),
            moves: env.0.moves,
        })
    }
}

fn header_has(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Why a request is no WebSocket upgrade [`WsUpgrade`] takes: 400 (426 for another version).
#[derive(Debug)]
pub struct WsRejection(StatusCode, &'static str);

impl IntoResponse for WsRejection {
    fn into_response(self) -> Response {
        let mut r = (self.0, self.1).into_response();
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            r.headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        r
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = WsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(resume) = parts.extensions.get::<Resume>()
            && let Some(ws) = resume.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            return Ok(WsUpgrade {
                kind: Kind::Resumed(Box::new(ws)),
            });
        }
        let h = &parts.headers;
        if parts.method != Method::GET
            || !header_has(h, header::CONNECTION, "upgrade")
            || !header_has(h, header::UPGRADE, "websocket")
        {
            return Err(WsRejection(StatusCode::BAD_REQUEST, "not a websocket upgrade\n"));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(WsRejection(
                StatusCode::UPGRADE_REQUIRED,
                "websocket version 13 only\n",
            ));
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(WsRejection(
                StatusCode::BAD_REQUEST,
                "missing sec-websocket-key\n",
            ));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(WsRejection(
                StatusCode::BAD_REQUEST,
                "connection cannot be upgraded\n",
            ));
        };
        Ok(WsUpgrade {
            kind: Kind::Fresh {
                on_upgrade,
                accept: HeaderValue::from_str(&accept)
                    .map_err(|_| WsRejection(StatusCode::BAD_REQUEST, "bad key\n"))?,
                env: parts.extensions.get::<Env>().and_then(WsEnv::of),
                draining: parts
                    .extensions
                    .get::<Env>()
                    .map_or_else(Draining::never, |e| e.0.draining.clone()),
                origin: Origin {
                    path: parts
                        .uri
                        .path_and_query()
                        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
                    headers: parts.headers.clone(),
                },
            },
        })
    }
}
