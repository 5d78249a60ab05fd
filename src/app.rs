//! heird's own HTTP endpoints (the `heird serve` app): `/`, `/sleep`, `/healthz`, `/info`.
//! A library user brings their own `Router` instead.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::config::{Config, parse_duration};
use crate::listeners::{Listener, Source};
use crate::server::ConnectionMoves;

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
    pub source: Source,
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
                    name: l.name.clone(),
                    address: l.address.clone(),
                    source: l.source,
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
pub fn router(cfg: &Config, info: Info) -> Router {
    let state = Arc::new(AppState {
        greeting: cfg.greeting.clone(),
        max_sleep: cfg.max_sleep,
        pid_header: HeaderValue::from(info.pid),
        info,
    });
    Router::new()
        .route("/", get(root))
        .route("/sleep", get(sleep))
        .route("/healthz", get(|| async { "ok" }))
        .route("/info", get(info_handler))
        .with_state(state)
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

/// `/info`: the process, plus how often the connection this request came on has moved.
#[derive(Serialize)]
struct InfoReply<'a> {
    #[serde(flatten)]
    info: &'a Info,
    connection_moves: u32,
}

async fn info_handler(
    State(st): State<Arc<AppState>>,
    moves: Option<Extension<ConnectionMoves>>,
) -> Response {
    let connection_moves = moves.map(|Extension(m)| m.0).unwrap_or(0);
    with_pid(
        &st,
        axum::Json(InfoReply {
            info: &st.info,
            connection_moves,
        })
        .into_response(),
    )
}

fn with_pid(st: &AppState, mut r: Response) -> Response {
    r.headers_mut().insert(PID_HEADER, st.pid_header.clone());
    r
}
