//! `bench-heird-hello`: heird serving exactly the router of `bench-plain-axum` (`GET /` answers
//! `Hello World`), so that a comparison of the two measures heird's connection layer and
//! nothing of the demo app (`heird serve`'s `/` adds an `x-heird-pid` header).
//!
//! ```text
//! bench-heird-hello [ADDR]       # default 127.0.0.1:8091
//! ```
//!
//! Runs the way any heird app runs (`heird::main`: socket activation or its own bind, READY=1,
//! a handoff on SIGUSR2, a drain on SIGTERM).

use axum::{Router, routing::get};

fn main() -> std::process::ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".to_string());
    heird::main(heird::Acquire::bind(&[addr.as_str()]), |service| async move {
        let app = Router::new().route("/", get(|| async { "Hello World" }));
        service.run(app, heird::Options::default()).await
    })
}
