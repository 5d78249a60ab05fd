//! A small chat on WebSocket, with heird's draining signal: every message a client sends on
//! `/chat` goes to every connected client. When the process drains (a handoff or a stop), each
//! connection closes with code 1012 ("service restart"), so clients reconnect at once, to the
//! successor after a handoff, instead of being cut at the drain deadline.
//!
//! Try: `cargo build --example websocket && target/debug/examples/websocket 127.0.0.1:3005`,
//! connect two clients (e.g. `python3 -m websockets ws://127.0.0.1:3005/chat`), type, then
//! `kill -USR2 <pid>`.
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::{Router, routing::get};
use heird::Draining;
use tokio::sync::broadcast;

async fn chat(
    State(room): State<broadcast::Sender<String>>,
    upgrade: WebSocketUpgrade,
    draining: Draining,
) -> Response {
    upgrade.on_upgrade(move |socket| member(socket, room, draining))
}

async fn member(mut socket: WebSocket, room: broadcast::Sender<String>, draining: Draining) {
    let mut heard = room.subscribe();
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let _ = room.send(text.to_string());
                }
                Some(Ok(_)) => {}
                // The client left.
                _ => return,
            },
            said = heard.recv() => match said {
                Ok(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // Too slow to keep up: it missed some messages; carry on.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // The process drains: say so with 1012, the client reconnects to whoever serves now.
            _ = draining.started() => {
                let close = CloseFrame { code: 1012, reason: "service restart".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    // `websocket reload`, `websocket stop`, `--help`, `--version`; an address is the app's own.
    let cli = heird::cli::Dispatch::new()
        .version(env!("CARGO_PKG_VERSION"))
        .serve_args("[ADDR]");
    if let Some(code) = cli.run(std::env::args_os()) {
        return code;
    }
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3005".into());
    heird::main(heird::Acquire::bind(&[&addr]), |service| async move {
        let (room, _) = broadcast::channel::<String>(256);
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/chat", get(chat))
            .with_state(room);
        service.run(app, heird::Options::default()).await
    })
}
