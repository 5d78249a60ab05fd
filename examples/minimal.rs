//! The smallest heird app: an axum `Router` in, a systemd-native service out. Sockets from
//! systemd (socket activation, the fd store) or its own bind, READY=1, a zero-downtime handoff
//! on SIGUSR2/SIGHUP or `minimal reload`, a graceful drain on SIGTERM or `minimal stop`.
//!
//! Try (run the built binary: `cargo run` would get the socket instead of the app):
//! `cargo build --example minimal && systemd-socket-activate -l 127.0.0.1:3000 target/debug/examples/minimal`
//! then `curl 127.0.0.1:3000/`.
use axum::{Router, routing::get};

fn main() -> std::process::ExitCode {
    // `minimal reload` and `minimal stop`: the unit's ExecReload= and ExecStop=; `--help`,
    // `--version` (the app's own, from its Cargo.toml); anything else is a usage error.
    let cli = heird::cli::Dispatch::new()
        .version(env!("CARGO_PKG_VERSION"))
        .about("The smallest heird app.");
    if let Some(code) = cli.run(std::env::args_os()) {
        return code;
    }
    heird::main(heird::Acquire::bind(&["127.0.0.1:3000"]), |service| async move {
        let app = Router::new().route("/", get(|| async { "hello from a systemd-native axum app\n" }));
        service.run(app, heird::Options::default()).await
    })
}
