//! `bench-plain-axum`: the throughput baseline of `bench/run.sh`, a plain axum hello-world
//! served with `axum::serve` and nothing else.
//!
//! ```text
//! bench-plain-axum [ADDR] [--nodelay]   # default 127.0.0.1:8090
//! ```
//!
//! `--nodelay` sets `TCP_NODELAY` on every accepted socket, as heird does (`axum::serve` does
//! not): with it, a comparison is like for like (it matters most for h2, whose responses go out
//! in more, smaller writes).
//!
//! `GET /` answers `Hello World` (the body of heird's `/`). The runtime is built the way
//! `heird serve` builds its own (multi-thread, default worker count, which follows the CPU
//! affinity mask), so that a `taskset`-pinned comparison compares the HTTP stacks, not the
//! runtimes. Prints `listening on ADDR` once bound; SIGTERM or SIGINT stops it.

use std::process::ExitCode;

use axum::serve::ListenerExt;
use axum::{Router, routing::get};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodelay = args.iter().any(|a| a == "--nodelay");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
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
        let served = if nodelay {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).with_graceful_shutdown(stop).await
        } else {
            axum::serve(listener, app).with_graceful_shutdown(stop).await
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-plain-axum: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
