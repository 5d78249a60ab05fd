//! heird's own HTTP endpoints (the `heird serve` app): `/`, `/sleep`, `/healthz`, `/info`,
//! `/metrics` (heird's Prometheus metrics, [`heird::metrics`]),
//! and one of each long-lived kind, to show how they end at a drain: `/ws` (a WebSocket echo that
//! moves to the successor with its counter; `/ws-drain` also says when the process drains),
//! `/ws-close` (the same echo on axum's WebSocket,
//! closed with 1012 at a drain) and `/events` (Server-Sent Events). A library user brings their own `Router` instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::config::{Config, parse_duration};
use heird::{ConnectionMoves, Draining, Listener, ListenerSource, UnixPeer};

/// What `/info` reports about this process.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub pid: u32,
    pub generation: u64,
    pub version: &'static str,
    pub started_at: String,
    pub listeners: Vec<ListenerInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    pub name: String,
    pub address: String,
    pub source: ListenerSource,
}

impl Info {
    pub fn new(generation: u64, listeners: &[Listener]) -> Info {
        Info {
            pid: std::process::id(),
            generation,
            version: env!("CARGO_PKG_VERSION"),
            started_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            listeners: listeners
                .iter()
                .map(|l| ListenerInfo {
                    name: l.name().to_string(),
                    address: l.address().to_string(),
                    source: l.source(),
                })
                .collect(),
        }
    }
}

struct AppState {
    greeting: String,
    max_sleep: Duration,
    info: Info,
    pid_header: HeaderValue,
}

/// Response header naming the pid that answered (used by the load tests).
pub const PID_HEADER: &str = "x-heird-pid";

/// The router of `heird serve`.
pub fn router(cfg: &Config, info: Info, metrics: heird::metrics::Metrics) -> Router {
    let state = Arc::new(AppState {
        greeting: cfg.greeting.clone(),
        max_sleep: cfg.max_sleep,
        pid_header: HeaderValue::from(info.pid),
        info,
    });
    Router::new()
        .route("/", get(root))
        .route("/sleep", get(sleep))
        .route("/healthz", get(healthz))
        .route("/info", get(info_handler))
        // Resumable (heird::ws): HTTP/1.1 upgrades only.
        .route("/ws", get(ws))
        .route("/ws-drain", get(ws_drain))
        // `any`: HTTP/1.1 upgrades with GET, HTTP/2 WebSockets (RFC 8441) with CONNECT.
        .route("/ws-close", any(ws_close))
        .route("/events", get(events))
        .with_state(state)
        .merge(metrics.router())
}

/// `/healthz`: `ok`, or 503 once the process is stopping (from the start of a lame duck,
/// `shutdown_delay`), so that a load balancer's health check takes this host out first.
async fn healthz(State(st): State<Arc<AppState>>, draining: Draining) -> Response {
    let resp = if draining.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else {
        "ok".into_response()
    };
    with_pid(&st, resp)
}

async fn root(State(st): State<Arc<AppState>>) -> Response {
    with_pid(&st, st.greeting.clone().into_response())
}

#[derive(Deserialize)]
struct SleepQuery {
    duration: Option<String>,
}

async fn sleep(
    State(st): State<Arc<AppState>>,
    q: Result<Query<SleepQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let resp = match q.map(|Query(q)| q.duration) {
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad query: {e}\n")).into_response(),
        Ok(None) => (
            StatusCode::BAD_REQUEST,
            "missing duration, e.g. /sleep?duration=250ms\n",
        )
            .into_response(),
        Ok(Some(d)) => match parse_duration(&d) {
            Err(e) => (StatusCode::BAD_REQUEST, format!("bad duration {d:?}: {e}\n")).into_response(),
            Ok(dur) if dur > st.max_sleep => (
                StatusCode::BAD_REQUEST,
                format!(
                    "duration {d} is more than max_sleep {}\n",
                    humantime::format_duration(st.max_sleep)
                ),
            )
                .into_response(),
            Ok(dur) => {
                tokio::time::sleep(dur).await;
                "Hello World".into_response()
            }
        },
    };
    with_pid(&st, resp)
}

/// `/info`: the process, plus how often the connection this request came on has moved, the
/// protocol, and the peer.
#[derive(Serialize)]
struct InfoReply<'a> {
    #[serde(flatten)]
    info: &'a Info,
    connection_moves: u32,
    /// `"HTTP/1.1"`, `"HTTP/2.0"`, ...
    protocol: String,
    /// The client's address (`"127.0.0.1:51234"`), or `"unix:<path>"` / `"unix"` (an unnamed
    /// client socket) on a Unix socket; `null` when unknown.
    peer: Option<String>,
    /// On a Unix socket: the connecting process's uid, gid and pid (SO_PEERCRED).
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_credentials: Option<PeerCredentials>,
}

#[derive(Serialize)]
struct PeerCredentials {
    uid: u32,
    gid: u32,
    pid: Option<i32>,
}

async fn info_handler(
    State(st): State<Arc<AppState>>,
    version: Version,
    moves: Option<Extension<ConnectionMoves>>,
    tcp: Option<Extension<ConnectInfo<SocketAddr>>>,
    unix: Option<Extension<ConnectInfo<UnixPeer>>>,
) -> Response {
    let connection_moves = moves.map(|Extension(m)| m.0).unwrap_or(0);
    let (peer, peer_credentials) = match (tcp, unix) {
        (Some(Extension(ConnectInfo(a))), _) => (Some(a.to_string()), None),
        (None, Some(Extension(ConnectInfo(p)))) => (
            Some(match &p.path {
                Some(path) => format!("unix:{}", path.display()),
                None => "unix".to_string(),
            }),
            Some(PeerCredentials {
                uid: p.uid,
                gid: p.gid,
                pid: p.pid,
            }),
        ),
        (None, None) => (None, None),
    };
    with_pid(
        &st,
        axum::Json(InfoReply {
            info: &st.info,
            connection_moves,
            protocol: format!("{version:?}"),
            peer,
            peer_credentials,
        })
        .into_response(),
    )
}

/// `/ws`: a WebSocket echo. Each text message gets a text reply
/// `{"pid": <serving pid>, "n": <messages received on this connection>, "echo": "<message>",
/// "peer": "<ConnectInfo<SocketAddr>, or null>"}`.
/// At a handoff the connection moves to the successor with `n` (its state, as decimal text), so
/// `n` keeps counting while `pid` changes; at a drain that cannot move it, the library closes it
/// with 1012.
async fn ws(
    State(st): State<Arc<AppState>>,
    tcp: Option<Extension<ConnectInfo<SocketAddr>>>,
    upgrade: heird::ws::WsUpgrade,
) -> Response {
    let pid = st.info.pid;
    let peer = tcp.map(|Extension(ConnectInfo(a))| a.to_string());
    upgrade.on_upgrade(move |socket| ws_resumable(socket, pid, None, peer))
}

/// `/ws-drain`: the `/ws` echo, whose handler also watches [`Draining`] (on a moved connection
/// too: the successor's drain). When the drain starts it sends
/// `{"pid": <pid>, "n": <count>, "draining": "handoff" | "stop"}` first; then the connection moves,
/// or is closed with 1012, as on `/ws`.
async fn ws_drain(
    State(st): State<Arc<AppState>>,
    draining: Draining,
    upgrade: heird::ws::WsUpgrade,
) -> Response {
    let pid = st.info.pid;
    upgrade.on_upgrade(move |socket| ws_resumable(socket, pid, Some(draining), None))
}

async fn ws_resumable(
    mut socket: heird::ws::WebSocket,
    pid: u32,
    draining: Option<Draining>,
    peer: Option<String>,
) {
    use heird::DrainReason;
    use heird::ws::{Event, Message};
    let mut n: u64 = socket
        .restored()
        .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
        .unwrap_or(0);
    // Said once per process: `started` stays ready once the drain has begun.
    let mut told = draining.is_none();
    let draining = draining.unwrap_or_else(Draining::never);
    loop {
        // Biased: the note goes out before the library parks the connection for the move.
        let event = tokio::select! {
            biased;
            reason = draining.started(), if !told => {
                told = true;
                let reason = match reason {
                    DrainReason::Handoff => "handoff",
                    _ => "stop",
                };
                let note = serde_json::json!({"pid": pid, "n": n, "draining": reason});
                if socket.send(Message::text(note.to_string())).await.is_err() {
                    return;
                }
                continue;
            }
            event = socket.next() => event,
        };
        match event {
            Event::Message(Message::Text(t)) => {
                n += 1;
                let reply = serde_json::json!({"pid": pid, "n": n, "echo": t.as_str(), "peer": peer});
                if socket.send(Message::text(reply.to_string())).await.is_err() {
                    return;
                }
            }
            // Pings are answered by the library; binary messages and pongs are ignored.
            Event::Message(_) => {}
            Event::Move => return socket.hand_over(n.to_string()).await,
            Event::Closed => return,
        }
    }
}

/// `/ws-close`: the same echo on axum's WebSocket, which cannot move: at a drain it closes with
/// 1012 ("service restart"), and waits for the client's close (the drain deadline bounds a
/// client that never sends it).
async fn ws_close(
    State(st): State<Arc<AppState>>,
    upgrade: WebSocketUpgrade,
    draining: Draining,
) -> Response {
    let pid = st.info.pid;
    upgrade.on_upgrade(move |socket| ws_echo(socket, pid, draining))
}

async fn ws_echo(mut socket: WebSocket, pid: u32, draining: Draining) {
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    n += 1;
                    let reply = serde_json::json!({"pid": pid, "n": n, "echo": t.as_str()});
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        return;
                    }
                }
                // Pings are answered by the codec; binary messages and pongs are ignored.
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
            _ = draining.started() => break,
        }
    }
    let frame = CloseFrame {
        code: 1012,
        reason: "service restart".into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // The closing handshake: what the client still sends is not answered.
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }
}

/// `/events`: Server-Sent Events, one every 100 ms, `id:` counting up from 1 and `data:` JSON
/// `{"pid": .., "id": ..}`. A client that reconnects with `Last-Event-ID: k` continues from
/// k + 1 (a value that is not a number starts afresh). At a drain the stream sends one last
/// event (`"draining": true`, `retry: 100` so that browsers reconnect at once) and ends.
async fn events(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    draining: Draining,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let next = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(1, |k| k.saturating_add(1));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pid = st.info.pid;
    let stream = futures_util::stream::unfold(Some((next, tick, draining)), move |s| async move {
        let (id, mut tick, draining) = s?;
        let last = tokio::select! {
            biased;
            _ = draining.started() => true,
            _ = tick.tick() => false,
        };
        let mut event = Event::default().id(id.to_string());
        if last {
            let data = serde_json::json!({"pid": pid, "id": id, "draining": true});
            event = event.data(data.to_string()).retry(Duration::from_millis(100));
            Some((Ok(event), None))
        } else {
            let data = serde_json::json!({"pid": pid, "id": id});
            event = event.data(data.to_string());
            Some((Ok(event), Some((id.saturating_add(1), tick, draining))))
        }
    });
    Sse::new(stream)
}

fn with_pid(st: &AppState, mut r: Response) -> Response {
    r.headers_mut().insert(PID_HEADER, st.pid_header.clone());
    r
}
