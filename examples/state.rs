//! State that survives handoffs and restarts: a counter.
//!
//! `GET /count` counts and answers `pid=<pid> count=<n>`. The count goes to the next process at
//! a handoff (over the handoff channel) and, under systemd with an fd store, across a
//! `systemctl restart` (in a memfd in the store): `n` keeps counting while `pid` changes.
//! `Service::keep_state` does the work: the value starts as what the previous process saved
//! (else its `Default`), and is saved for the next one.
//!
//! Try: `cargo build --example state && target/debug/examples/state 127.0.0.1:3002`, then
//! `curl 127.0.0.1:3002/count` a few times, `kill -USR2 <pid>`, and `curl` again.
use axum::{Router, extract::State, routing::get};

/// Everything the app keeps, in one value that serde can write.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter {
    count: u64,
}

async fn count(State(counter): State<heird::Kept<Counter>>) -> String {
    // In a successor, `lock` waits for the handover, which brings the count.
    let mut c = counter.lock().await;
    c.count += 1;
    format!("pid={} count={}\n", std::process::id(), c.count)
}

fn main() -> std::process::ExitCode {
    // `state reload`, `state stop`, `--help`, `--version`; an address is the app's own.
    let cli = heird::cli::Dispatch::new()
        .version(env!("CARGO_PKG_VERSION"))
        .serve_args("[ADDR]");
    if let Some(code) = cli.run(std::env::args_os()) {
        return code;
    }
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3002".into());
    heird::main(heird::Acquire::bind(&[&addr]), |mut service| async move {
        let counter = service.keep_state::<Counter>();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/count", get(count))
            .with_state(counter);
        service.run(app, heird::Options::default()).await
    })
}
