//! What a run is given and how it can fail: [`Options`] and [`RunError`]. Below both the run
//! loop and [`crate::Service`], so that the loop never imports the service.

use std::path::PathBuf;
use std::time::Duration;

use crate::control;
use crate::server::ServeSettings;

/// Runtime options of a service. Start from `Options::default()` and set what you need:
///
/// ```
/// let mut opts = heird::Options::default();
/// opts.drain_timeout = std::time::Duration::from_secs(10);
/// opts.handle_signals = false; // the app drives heird::Handle itself
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// How long a drain may take before the rest is closed (default 30 s).
    pub drain_timeout: Duration,
    /// How long a successor may take to say it is ready, readiness gate included (30 s).
    pub handoff_timeout: Duration,
    /// The connection layer's settings.
    pub serve: ServeSettings,
    /// Control socket path used when no control fd was inherited (`None`: no control socket).
    /// Defaults to `$RUNTIME_DIRECTORY/control.sock`, else a private directory of ours.
    pub control_socket: Option<PathBuf>,
    /// Handle SIGTERM/SIGINT (stop) and SIGUSR2/SIGHUP (handoff) (default true). Without, the
    /// app drives the lifecycle through [`crate::Handle`].
    pub handle_signals: bool,
    /// Exit when idle (`None`, the default: never): once no connection has been open for this
    /// long, stop accepting, send `STOPPING=1` and exit 0. Only for a service whose listening
    /// sockets someone else holds (a socket unit), which starts it again on the next connection;
    /// [`crate::Service::run`] refuses it when heird bound its own sockets
    /// ([`RunError::IdleExitStandalone`]). A keep-alive connection counts as open.
    pub idle_exit: Option<Duration>,
    /// A lame duck before a stop (default zero: none). On SIGTERM, SIGINT or
    /// [`crate::Handle::stop`] the primary keeps serving every request for this long while its
    /// health check says down ([`crate::Draining::is_stopping`], [`crate::Status::LameDuck`];
    /// the `heird serve` app's `/healthz` answers 503), so that a load balancer takes it out
    /// before the drain closes anything; then it stops as usual. Set it longer than the
    /// balancer's check interval × its fall count. A reload never waits: nothing leaves. A
    /// second stop signal cuts the delay short.
    pub shutdown_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            drain_timeout: Duration::from_secs(30),
            handoff_timeout: Duration::from_secs(30),
            serve: ServeSettings::default(),
            control_socket: control::default_path(),
            handle_signals: true,
            idle_exit: None,
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// Why a run ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// Each variant is documented by its message.
#[allow(missing_docs)]
pub enum RunError {
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("cannot start serving: {0}")]
    Serve(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot report readiness to the predecessor: {0}")]
    Ready(std::io::Error),
    #[error(
        "idle_exit needs a listening socket that someone else holds (a socket unit): {0} was bound by heird, and nothing would start it again after an idle exit"
    )]
    IdleExitStandalone(String),
}

impl RunError {
    /// The exit status for this error: 78 (EX_CONFIG) for a configuration that cannot work,
    /// else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::IdleExitStandalone(_) => EX_CONFIG,
            _ => 1,
        }
    }
}

/// EX_CONFIG: bad configuration or environment.
pub const EX_CONFIG: u8 = 78;
