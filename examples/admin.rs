//! Two routers, two named sockets: the public API on `http`, metrics on `admin`, from socket
//! units that pass both (`FileDescriptorName=http` and `FileDescriptorName=admin`). A request to
//! one listener never reaches the other's routes, also after its connection moved to a
//! successor.
//!
//! Try: `cargo build --example admin && systemd-socket-activate -l 127.0.0.1:3003 \
//!   --fdname=http -l 127.0.0.1:3004 --fdname=admin target/debug/examples/admin`, then
//! `curl 127.0.0.1:3003/` and `curl 127.0.0.1:3004/metrics`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::{Router, extract::State, routing::get};

fn main() -> std::process::ExitCode {
    if let Some(code) = heird::cli::dispatch(std::env::args_os()) {
        return code;
    }
    // Without systemd: bind both (named fd0-style names do not apply; both get the API).
    heird::main(heird::Acquire::bind(&["127.0.0.1:3003"]), |service| async move {
        let hits = Arc::new(AtomicU64::new(0));
        let api = Router::new()
            .route(
                "/",
                get(|State(h): State<Arc<AtomicU64>>| async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    "api\n"
                }),
            )
            .with_state(hits.clone());
        let admin = Router::new()
            .route(
                "/metrics",
                get(|State(h): State<Arc<AtomicU64>>| async move {
                    format!("api_requests {}\n", h.load(Ordering::SeqCst))
                }),
            )
            .with_state(hits);
        let routes = heird::Routes::new(api).listener("admin", admin);
        service.run_routes(routes, heird::Options::default()).await
    })
}
