//! A WebSocket that moves to the next process instead of closing (`heird::ws`): each text
//! message on `/counter` gets `pid=<serving pid> n=<messages on this connection> echo=<text>`.
//! At a handoff the connection, with `n`, moves to the successor at a frame boundary: the client
//! sees `pid` change while `n` keeps counting, on the same TCP connection, with no close.
//!
//! Try: `cargo build --example ws && target/debug/examples/ws 127.0.0.1:3006`, connect a client
//! (e.g. `python3 -m websockets ws://127.0.0.1:3006/counter`), type, `kill -USR2 <pid>`, and
//! type again.
use axum::response::Response;
use axum::{Router, routing::get};
use heird::ws::{Event, Message, WebSocket, WsUpgrade};

async fn counter(upgrade: WsUpgrade) -> Response {
    upgrade.on_upgrade(|mut ws: WebSocket| async move {
        // None on a new connection; on a moved one, what the predecessor handed over.
        let mut n: u64 = ws
            .restored()
            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(0);
        loop {
            match ws.next().await {
                Event::Message(Message::Text(text)) => {
                    n += 1;
                    let reply = format!("pid={} n={n} echo={}", std::process::id(), text.as_str());
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
                // Pings are answered for us; binary messages are not counted.
                Event::Message(_) => {}
                // The process drains: hand the socket and `n` to the successor.
                Event::Move => return ws.hand_over(n.to_string()).await,
                Event::Closed => return,
            }
        }
    })
}

fn main() -> std::process::ExitCode {
    // `ws reload`, `ws stop`, `--help`, `--version`; an address is the app's own.
    let cli = heird::cli::Dispatch::new()
        .version(env!("CARGO_PKG_VERSION"))
        .serve_args("[ADDR]");
    if let Some(code) = cli.run(std::env::args_os()) {
        return code;
    }
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3006".into());
    heird::main(heird::Acquire::bind(&[&addr]), |service| async move {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/counter", get(counter));
        service.run(app, heird::Options::default()).await
    })
}
