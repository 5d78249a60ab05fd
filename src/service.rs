//! The process: [`Service::prepare`] takes the sockets before the async runtime exists (it
//! edits the environment); [`Service::run`] turns the world (signals, control requests, the
//! handoff channel, the successor's exit, timers) into [`lifecycle`] events and performs the
//! actions the state machine returns, until it says exit.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tracing::{info, warn};

use crate::acquire::{self, Acquire};
use crate::channel::Channel;
use crate::control;
use crate::drain::Drain;
use crate::fault::{self, Step};
use crate::inherit::{InheritError, Inherited};
use crate::listeners::{ListenError, Listener};
use crate::runloop;
use crate::server::{ServeSettings, Server};
use crate::successor;

pub use crate::lifecycle::Exit;

/// Runtime options of a service.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a drain may take before the rest is closed.
    pub drain_timeout: Duration,
    /// How long a successor may take to say it is ready.
    pub handoff_timeout: Duration,
    pub serve: ServeSettings,
    /// Test-only: never send watchdog pings.
    pub watchdog_stall: bool,
    /// Control socket path used when no control fd was inherited (`None`: no control socket).
    pub control_socket: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            drain_timeout: Duration::from_secs(30),
            handoff_timeout: Duration::from_secs(30),
            serve: ServeSettings::default(),
            watchdog_stall: false,
            control_socket: control::default_path(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Inherit(#[from] InheritError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("no listening socket: pass sockets with systemd, --fd, or give an address to bind")]
    NoListeners,
    #[error("cannot resolve the path of our own binary: {0}")]
    Exe(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start serving: {0}")]
    Serve(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot report readiness to the predecessor: {0}")]
    Ready(std::io::Error),
}

/// A service whose sockets are taken, ready to run.
#[derive(Debug)]
pub struct Service {
    listeners: Arc<Vec<Listener>>,
    inherited: Inherited,
    exe: PathBuf,
    args: Vec<OsString>,
    ignored: Option<String>,
    /// Keep-alive connections a previous process left in the fd store at its stop.
    stored_connections: Vec<(String, OwnedFd)>,
}

impl Service {
    /// Reads what a predecessor passed, takes the listening sockets, and resolves our binary's
    /// path for later handoffs. Call before any thread exists (before the tokio runtime).
    pub fn prepare(acquire: &Acquire) -> Result<Service, StartError> {
        Service::prepare_with(Inherited::from_env()?, acquire)
    }

    /// Like [`Service::prepare`], with [`Inherited::from_env`] already read (so that a config
    /// error found in between can still be reported to the predecessor).
    pub fn prepare_with(inherited: Inherited, acquire: &Acquire) -> Result<Service, StartError> {
        let fail = |e: StartError| {
            inherited.report_error(&e.to_string());
            e
        };
        fault::set_generation(inherited.generation);
        let acquired = acquire::acquire(acquire).map_err(|e| fail(e.into()))?;
        if inherited.channel.is_some() {
            fault::point(Step::SuccessorTookFds);
        }
        if acquired.listeners.is_empty() {
            return Err(fail(StartError::NoListeners));
        }
        let exe = successor::resolve_exe().map_err(|e| fail(StartError::Exe(e)))?;
        if crate::fdstore::available() {
            // Removals first: a socket bound anew may carry the name of the one it replaces.
            for name in &acquired.unstore {
                crate::fdstore::remove(name);
            }
            for &i in &acquired.store {
                let l = &acquired.listeners[i];
                crate::fdstore::store_listener(&l.name, &l.address, l.fd.as_fd());
            }
        }
        if let Err(e) = crate::sys::raise_nofile_limit() {
            warn!(error = %e, "cannot raise the open-files limit");
        }
        // Whatever else we inherited stays out of our successors.
        crate::sys::cloexec_all_above_stderr();
        Ok(Service {
            listeners: Arc::new(acquired.listeners),
            inherited,
            exe,
            args: std::env::args_os().skip(1).collect(),
            ignored: acquired.ignored,
            stored_connections: acquired.connections,
        })
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    pub fn generation(&self) -> u64 {
        self.inherited.generation
    }

    /// A note when `LISTEN_FDS` was present but meant for another process.
    pub fn ignored_listen_fds(&self) -> Option<&str> {
        self.ignored.as_deref()
    }

    /// Serves `router` until a stop or a completed handoff, then drains.
    pub async fn run(self, router: Router, opts: Options) -> Result<Exit, RunError> {
        let report = |e: RunError| {
            self.inherited.report_error(&e.to_string());
            e
        };
        let drain = Drain::new();
        let server = Server::spawn(&self.listeners, router.clone(), &drain, &opts.serve)
            .map_err(|e| report(RunError::Serve(e)))?;
        let signals = runloop::Signals::new().map_err(|e| report(RunError::Signals(e)))?;
        let Service {
            listeners,
            inherited,
            exe,
            args,
            stored_connections,
            ..
        } = self;
        // Connections the previous process stored at a restart: serve them, then take them out
        // of the store (it holds a copy of each fd).
        if !stored_connections.is_empty() {
            let names = server.adopt_stored(stored_connections);
            for name in &names {
                crate::fdstore::remove_quietly(name);
            }
            info!(fds = names.len(), "took over connections from the fd store");
        }
        let channel = match inherited.channel {
            Some(fd) => Some(Channel::new(fd).map_err(RunError::Ready)?),
            None => None,
        };
        runloop::run(runloop::Start {
            generation: inherited.generation,
            channel,
            control_fd: inherited.control,
            opts,
            router,
            listeners,
            exe,
            args,
            drain,
            server,
            signals,
        })
        .await
    }
}
