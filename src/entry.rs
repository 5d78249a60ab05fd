//! Starting a binary without writing the runtime by hand: take the sockets while the process
//! has one thread, set up logging (journald under systemd, else stderr), build the runtime, run
//! the app's async main, and turn the outcome into an exit code.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use crate::acquire::Acquire;
use crate::inherit::Inherited;
use crate::service::{RunError, Service};
use crate::{Exit, logging};

pub use crate::options::EX_CONFIG;

/// Takes the sockets that `acquire` describes, then runs `app` on a multi-threaded runtime.
///
/// Exit codes: 0 after a stop, a handoff or an idle exit, 1 when the run failed, 78 (EX_CONFIG)
/// when the sockets cannot be taken (the message names the fd or address) or the options cannot
/// work with them ([`RunError::exit_code`]).
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// fn main() -> std::process::ExitCode {
///     heird::main(heird::Acquire::bind(&["127.0.0.1:8080"]), |service| async move {
///         let app = Router::new().route("/", get(|| async { "hello" }));
///         service.run(app, heird::Options::default()).await
///     })
/// }
/// ```
pub fn main<F, Fut>(acquire: Acquire, app: F) -> ExitCode
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = Result<Exit, RunError>>,
{
    match Inherited::from_env() {
        Ok(inherited) => start(inherited, &acquire, "info", app),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// Like [`main`], for a binary that reads its own configuration first: read [`Inherited`]
/// before anything else (so that a configuration error reaches a waiting predecessor through
/// [`Inherited::fail`], and the reload fails with that reason), then call this. `log_level` is
/// a tracing filter (`RUST_LOG` wins).
pub fn start<F, Fut>(inherited: Inherited, acquire: &Acquire, log_level: &str, app: F) -> ExitCode
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = Result<Exit, RunError>>,
{
    // As PID 1 (or when asked), this process stays for the service's whole life and runs the
    // service as its worker: the same binary, started again.
    if crate::supervise::wanted(acquire.supervise, &inherited) {
        return crate::supervise::run(acquire, log_level);
    }
    // The fds are taken before logging opens anything (the journald socket could otherwise
    // land on a number that a wrong LISTEN_FDS count claims); what prepare logs goes to stderr.
    // On an error, prepare_with has already told a waiting predecessor why.
    let service = match logging::with_stderr(log_level, || Service::prepare_with(inherited, acquire)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    logging::init(log_level);
    if let Some(note) = service.ignored_listen_fds() {
        tracing::warn!("{note}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app(service));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(exit) => {
            tracing::info!(?exit, "exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
