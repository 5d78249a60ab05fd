//! A readiness gate and work that runs in exactly one process at a time.
//!
//! The gate stands for a slow dependency (a database pool, a cache warm-up): it waits until the
//! file named by `$READY_FILE` exists and says `ok`. Until then the process says neither
//! `READY=1` nor (in a successor) `ready` to its predecessor, and accepts nothing. A file that
//! says anything else fails the gate: a first start exits 1; a reload fails visibly (`readiness
//! reload` exits 1 with the reason) and the old process serves on.
//!
//! The background job (a ticker standing for a scheduler or a queue consumer) starts when the
//! process becomes primary and stops when it starts leaving, so across a handoff it runs in one
//! process at a time. `GET /` answers with the pid, the lifecycle status and the ticks so far.
//!
//! Try: `READY_FILE=/tmp/dep cargo run --example readiness -- 127.0.0.1:3001`, then
//! `echo ok > /tmp/dep`, `curl 127.0.0.1:3001/`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::{Router, extract::State, routing::get};

async fn dependency_ready(path: std::path::PathBuf) -> Result<(), String> {
    loop {
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim() == "ok" => return Ok(()),
            Ok(s) => return Err(format!("dependency {} says {:?}", path.display(), s.trim())),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn main() -> std::process::ExitCode {
    // `readiness reload`, `readiness stop`, `--help`, `--version`; an address is the app's own.
    let cli = heird::cli::Dispatch::new()
        .version(env!("CARGO_PKG_VERSION"))
        .serve_args("[ADDR]");
    if let Some(code) = cli.run(std::env::args_os()) {
        return code;
    }
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3001".into());
    let ready_file = std::env::var_os("READY_FILE").unwrap_or_else(|| "/tmp/dep".into());
    heird::main(heird::Acquire::bind(&[&addr]), |mut service| async move {
        service.ready_when(dependency_ready(ready_file.into()));
        let handle = service.handle();
        let ticks = Arc::new(AtomicU64::new(0));
        // Singleton work: only while this process is the primary.
        let (h, t) = (handle.clone(), ticks.clone());
        tokio::spawn(async move {
            h.primary().await;
            let work = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    t.fetch_add(1, Ordering::SeqCst);
                }
            };
            tokio::select! {
                _ = work => {}
                _ = h.leaving() => {}
            }
        });
        let app = Router::new()
            .route(
                "/",
                get(
                    |State((h, t)): State<(heird::Handle, Arc<AtomicU64>)>| async move {
                        format!(
                            "pid={} status={:?} ticks={}\n",
                            std::process::id(),
                            h.status(),
                            t.load(Ordering::SeqCst)
                        )
                    },
                ),
            )
            .with_state((handle, ticks));
        service.run(app, heird::Options::default()).await
    })
}
