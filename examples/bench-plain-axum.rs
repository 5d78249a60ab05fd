//! `bench-plain-axum`: the throughput baseline of `bench/run.sh`, a plain axum hello-world
//! served with `axum::serve` and nothing else.
//!
//! ```text
//! bench-plain-axum [ADDR]        # default 127.0.0.1:8090
//! ```
//!
//! `GET /` answers `Hello World` (the body of heird's `/`). The runtime is built the way
//! `heird serve` builds its own (multi-thread, default worker count, which follows the CPU
//! affinity mask), so that a `taskset`-pinned comparison compares the HTTP stacks, not the
//! runtimes. Prints `listening on ADDR` once bound; SIGTERM or SIGINT stops it.

use std::process::ExitCode;

use axum::{Router, routing::get};

fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-plain-axum: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-plain-axum: cannot bind {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(a) => println!("listening on {a}"),
            Err(_) => println!("listening on {addr}"),
        }
        let app = Router::new().route("/", get(|| async { "Hello World" }));
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        match axum::serve(listener, app).with_graceful_shutdown(stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-plain-axum: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
