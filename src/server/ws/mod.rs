//! WebSockets that survive a handoff: [`WsUpgrade`] and [`WebSocket`].
//!
//! A handler opts in by taking [`WsUpgrade`] instead of axum's `WebSocketUpgrade`, reading with
//! [`WebSocket::next`], and answering [`Event::Move`] with [`WebSocket::hand_over`] and its
//! state as bytes. The successor's router gets the same request again (path, query, headers:
//! middleware sees what it saw the first time); the same handler runs there
//! with [`WebSocket::restored`] giving those bytes back, on the same TCP connection. The client
//! sees no close and no gap.
//!
//! ```no_run
//! use axum::{Router, response::Response, routing::get};
//! use heird::ws::{Event, Message, WebSocket, WsUpgrade};
//!
//! async fn counter(upgrade: WsUpgrade) -> Response {
//!     upgrade.on_upgrade(|mut ws: WebSocket| async move {
//!         // 0 on a fresh connection; what the predecessor handed over on a moved one.
//!         let mut n: u64 = ws.restored().and_then(|b| Some(u64::from_be_bytes(b.try_into().ok()?))).unwrap_or(0);
//!         loop {
//!             match ws.next().await {
//!                 Event::Message(Message::Text(t)) => {
//!                     n += 1;
//!                     if ws.send(Message::text(format!("{n} {t}"))).await.is_err() {
//!                         return;
//!                     }
//!                 }
//!                 Event::Message(_) => {} // pings are answered for you
//!                 Event::Move => return ws.hand_over(n.to_be_bytes()).await,
//!                 Event::Closed => return,
//!             }
//!         }
//!     })
//! }
//! let app: Router = Router::new().route("/counter", get(counter));
//! ```
//!
//! Files, lowest first: `frames` (the IO under the codec), `conn` (the connection, and what it
//! carries when it moves), `resume` (a moved connection, in again), `upgrade` ([`WsUpgrade`]).
//!
//! How it works (see `frames`): under the codec sits an IO that hands it at most the rest of the
//! current frame, so the codec holds nothing between frames. Once the successor is primary, the
//! connection parks at the next frame boundary (a fragmented message, or a close handshake
//! under way, finishes here first), [`WebSocket::next`] says [`Event::Move`], and the socket's
//! fd, the bytes read but not parsed (a partial frame included), the path and the state go to
//! the successor in one message on the handoff channel (or, at a stop under systemd, into the
//! fd store). A connection that reaches no boundary within
//! [`ServeSettings::ws_boundary_timeout`](crate::ServeSettings), and every connection at a drain
//! that cannot move (a stop without the fd store, `move_connections = false`, HTTP/2), is closed
//! with 1012 ("service restart") by the library, as non-resumable handlers do.
//!
//! Why tokio-tungstenite and not axum's `WebSocket`: axum's type hides its stream, so neither
//! the socket nor the codec's buffer can be taken back out, and it cannot be built on an
//! existing connection; tokio-tungstenite (which axum wraps) has `from_raw_socket` and
//! `into_inner`.

mod conn;
mod frames;
mod resume;
mod upgrade;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, Stream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as TCloseFrame, Role, WebSocketConfig};
use tracing::{debug, warn};

pub use tokio_tungstenite::tungstenite::Error;
pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::context::ConnCtx;
use crate::drain::Draining;
use conn::{Conn, Origin};
use frames::FrameIo;
pub(super) use resume::resume;
pub use upgrade::{WsRejection, WsUpgrade};

type Ws = WebSocketStream<FrameIo<Conn>>;

/// The codec's read buffer (see [`WebSocket::new`]).
const READ_BUFFER: usize = 4 * 1024;

/// What [`WebSocket::next`] returns.
#[derive(Debug)]
pub enum Event {
    /// A message from the client (text, binary, ping or pong: pings are answered by the
    /// library, and a close ends in [`Event::Closed`] once the close handshake is done).
    Message(Message),
    /// The process hands over and the connection stopped between two messages: call
    /// [`WebSocket::hand_over`] with the handler's state now. Nothing is read meanwhile (what
    /// the client sends waits for the successor).
    Move,
    /// The connection has ended: the client closed it, it failed, or the library closed it with
    /// 1012 at a drain that could not move it.
    Closed,
}

/// Per-connection context from heird (absent under `axum::serve`: such a socket never moves).
#[derive(Clone)]
pub(in crate::server) struct WsEnv {
    pub ctx: Arc<ConnCtx>,
    pub moves: u32,
}

enum Phase {
    Serving,
    /// Holding at the next boundary until this deadline.
    Parking(Instant),
    Parked,
    Closed,
}

/// A WebSocket whose connection can move to the successor with the handler's state; see the
/// [module](self) doc.
pub struct WebSocket {
    stream: Ws,
    env: Option<WsEnv>,
    draining: Draining,
    origin: Origin,
    restored: Option<Vec<u8>>,
    phase: Phase,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("path", &self.origin.path)
            .finish_non_exhaustive()
    }
}

/// One step of the codec.
enum Step {
    Msg(Message),
    Parked,
    End,
}

async fn step(stream: &mut Ws) -> Step {
    poll_fn(|cx| match Pin::new(&mut *stream).poll_next(cx) {
        Poll::Ready(Some(Ok(m))) => Poll::Ready(Step::Msg(m)),
        Poll::Ready(Some(Err(e))) => {
            debug!(error = %e, "websocket ended with an error");
            Poll::Ready(Step::End)
        }
        Poll::Ready(None) => Poll::Ready(Step::End),
        Poll::Pending if stream.get_ref().parked() => Poll::Ready(Step::Parked),
        Poll::Pending => Poll::Pending,
    })
    .await
}

impl WebSocket {
    /// `read`: bytes read from `conn` already, the first to go to the codec.
    async fn new(
        conn: Conn,
        read: &[u8],
        env: Option<WsEnv>,
        draining: Draining,
        origin: Origin,
        restored: Option<Vec<u8>>,
    ) -> WebSocket {
        // The codec's read buffer is allocated whole per connection (128 KiB by default);
        // FrameIo hands it at most one frame at a time anyway, so a small one costs nothing.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let stream =
            WebSocketStream::from_raw_socket(FrameIo::new(conn, read), Role::Server, Some(config)).await;
        WebSocket {
            stream,
            env,
            draining,
            origin,
            restored,
            phase: Phase::Serving,
        }
    }

    /// The state the predecessor's handler handed over; `None` on a connection that did not
    /// move.
    pub fn restored(&self) -> Option<&[u8]> {
        self.restored.as_deref()
    }

    /// The next message, or [`Event::Move`] when the connection should go to the successor, or
    /// [`Event::Closed`]. Cancel-safe.
    pub async fn next(&mut self) -> Event {
        loop {
            match self.phase {
                Phase::Closed => return Event::Closed,
                Phase::Parked => return Event::Move,
                Phase::Serving => {
                    let s = tokio::select! {
                        biased;
                        _ = self.draining.started() => None,
                        s = step(&mut self.stream) => Some(s),
                    };
                    match s {
                        Some(s) => return self.deliver(s).await,
                        None => self.on_drain().await,
                    }
                }
                Phase::Parking(deadline) => {
                    let s = tokio::select! {
                        s = step(&mut self.stream) => Some(s),
                        _ = tokio::time::sleep_until(deadline) => None,
                    };
                    match s {
                        Some(s) => return self.deliver(s).await,
                        None => {
                            debug!(path = %self.origin.path, "websocket reached no message boundary in time; closing with 1012");
                            self.count(false);
                            self.close_restart().await;
                        }
                    }
                }
            }
        }
    }

    /// Sends a message (and flushes it).
    pub async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.stream.send(msg).await
    }

    /// Closes the connection with this code and reason, and waits (briefly) for the client's
    /// close.
    pub async fn close(mut self, code: u16, reason: &str) {
        self.close_with(code, reason).await;
    }

    /// After [`Event::Move`]: hands the connection and `state` to the successor (or the fd
    /// store), where the same route's handler resumes it with [`WebSocket::restored`] giving
    /// `state` back. At any other time, or when the move fails before the socket left (the
    /// state is too big: the whole message must fit in 128 KiB), the connection is closed with
    /// 1012 instead.
    pub async fn hand_over(mut self, state: impl AsRef<[u8]>) {
        let state = state.as_ref();
        let env = match (&self.phase, &self.env) {
            (Phase::Parked, Some(env)) => env.clone(),
            _ => {
                warn!(path = %self.origin.path, "hand_over outside Event::Move; closing with 1012");
                return self.close_restart().await;
            }
        };
        let size = self.origin.path.len()
            + conn::encode_headers(&self.origin.headers).len()
            + state.len()
            + self.stream.get_ref().pending()
            + 64;
        if size > crate::channel::MAX_MSG {
            warn!(path = %self.origin.path, state = state.len(), "websocket state too big to move; closing with 1012");
            self.count(false);
            return self.close_restart().await;
        }
        // Room for two fds in the fd store (the socket and the memfd with its message), taken
        // before the socket is taken apart.
        if !env.ctx.moves.reserve(2) {
            debug!(path = %self.origin.path, "no room left in the fd store for a websocket; closing with 1012");
            self.count(false);
            return self.close_restart().await;
        }
        // A pong (or anything else) the codec still has to write goes out from here.
        if let Err(e) = self.stream.flush().await {
            debug!(error = %e, "websocket failed while being moved");
            self.count(false);
            return;
        }
        let (conn, unread) = self.stream.into_inner().into_parts();
        conn::move_out(&env, conn, unread, &self.origin, state).await;
    }

    fn count(&self, moved: bool) {
        if let Some(env) = &self.env {
            env.ctx.moves.count(moved);
        }
    }

    /// The drain started: park for a move if the connection can go somewhere, else close 1012.
    async fn on_drain(&mut self) {
        let movable = self.stream.get_ref().get_ref().movable()
            && self.env.as_ref().is_some_and(|e| e.ctx.moves.to().is_some());
        match &self.env {
            Some(env) if movable => {
                self.stream.get_mut().set_hold(true);
                let wait = env
                    .ctx
                    .settings
                    .ws_boundary_timeout
                    .unwrap_or(Duration::from_secs(5));
                self.phase = Phase::Parking(Instant::now() + wait);
            }
            _ => self.close_restart().await,
        }
    }

    async fn deliver(&mut self, s: Step) -> Event {
        match s {
            Step::Parked => {
                self.phase = Phase::Parked;
                Event::Move
            }
            Step::End => {
                self.phase = Phase::Closed;
                Event::Closed
            }
            Step::Msg(Message::Close(_)) => {
                // The codec queued the answering close; it goes out while we read to the end.
                self.stream.get_mut().set_hold(false);
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut self.stream).await {}
                })
                .await;
                self.phase = Phase::Closed;
                Event::Closed
            }
            Step::Msg(m) => Event::Message(m),
        }
    }

    async fn close_restart(&mut self) {
        self.close_with(1012, "service restart").await;
    }

    async fn close_with(&mut self, code: u16, reason: &str) {
        self.phase = Phase::Closed;
        self.stream.get_mut().set_hold(false);
        let frame = TCloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if self.stream.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // The closing handshake: what the client still sends is not answered.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(m)) = futures_util::StreamExt::next(&mut self.stream).await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
