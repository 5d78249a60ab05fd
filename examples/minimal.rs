//! An axum app made systemd-native with heird: socket activation or its own bind, READY=1,
//! zero-downtime handoff on SIGUSR2/SIGHUP, and a graceful drain on SIGTERM.
//!
//! Try: `systemd-socket-activate -l 127.0.0.1:3000 cargo run --example minimal`
use axum::{Router, routing::get};
use heird::{Acquire, ListenAddr, Options, Service};
use std::process::ExitCode;

fn main() -> ExitCode {
    let acquire = Acquire {
        bind: vec![ListenAddr::Tcp(([127, 0, 0, 1], 3000).into())],
        ..Default::default()
    };
    // Take the sockets before any thread exists.
    let service = match Service::prepare(&acquire) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("minimal: {e}");
            return ExitCode::from(78);
        }
    };
    let app = Router::new().route("/", get(|| async { "hello from a systemd-native axum app\n" }));
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(service.run(app, Options::default())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minimal: {e}");
            ExitCode::FAILURE
        }
    }
}
