//! State that survives handoffs and restarts: a counter.
//!
//! `GET /count` counts and answers `pid=<pid> count=<n>`. The count goes to the next process at
//! a handoff (over the handoff channel) and, under systemd with an fd store, across a
//! `systemctl restart` (in a memfd in the store): `n` keeps counting while `pid` changes.
//!
//! Try: `cargo build --example state && target/debug/examples/state 127.0.0.1:3002`, then
//! `curl 127.0.0.1:3002/count` a few times, `kill -USR2 <pid>`, and `curl` again.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::{Router, extract::State, routing::get};

fn main() -> std::process::ExitCode {
    if let Some(code) = heird::cli::dispatch(std::env::args_os()) {
        return code;
    }
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3002".into());
    heird::main(heird::Acquire::bind(&[&addr]), |mut service| async move {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        // What the next process gets: the count at the moment of the handover (or the stop).
        service.save_state(move || c.load(Ordering::SeqCst).to_string().into_bytes());
        let handle = service.handle();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/count",
                get(
                    |State((h, count)): State<(heird::Handle, Arc<AtomicU64>)>| async move {
                        // The counter is the primary's: once primary, the handed-over state is there.
                        h.primary().await;
                        if let Some(prev) = h.take_state() {
                            let prev = String::from_utf8_lossy(&prev).trim().parse().unwrap_or(0);
                            count.fetch_add(prev, Ordering::SeqCst);
                        }
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        format!("pid={} count={n}\n", std::process::id())
                    },
                ),
            )
            .with_state((handle, count));
        service.run(app, heird::Options::default()).await
    })
}
