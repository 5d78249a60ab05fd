//! The process: [`Service::prepare`] takes the sockets before the async runtime exists (it
//! edits the environment); [`Service::run`] turns the world (signals, control requests, the
//! handoff channel, the successor's exit, timers) into [`lifecycle`] events and performs the
//! actions the state machine returns, until it says exit.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tracing::{info, warn};

use crate::acquire::{self, Acquire};
use crate::channel::Channel;
use crate::drain::Drain;
use crate::fault::{self, Step};
use crate::handle::{Handle, Handles, StateProvider};
use crate::inherit::{InheritError, Inherited};
use crate::kept::Kept;
use crate::listeners::{Family, ListenError, Listener};
use crate::runloop;
use crate::server::Routes;
use crate::successor;

mod run;
use run::{fill_the_store, pass_gate, spawn_server, take_up_the_store};

pub use crate::lifecycle::Exit;
pub use crate::options::{Options, RunError};

/// Why a service could not take its sockets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// Each variant is documented by its message.
#[allow(missing_docs)]
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

/// A service whose sockets are taken, ready to run.
pub struct Service {
    listeners: Arc<Vec<Listener>>,
    inherited: Inherited,
    exe: PathBuf,
    args: Vec<OsString>,
    ignored: Option<String>,
    /// The one connection of a socket unit with `Accept=yes` (name, family, fd), served alone.
    accepted: Option<(String, Family, OwnedFd)>,
    /// Keep-alive connections a previous process left in the fd store at its stop.
    stored_connections: Vec<(String, OwnedFd)>,
    handles: Handles,
    gate: Option<Gate>,
    /// The app's state for the next process.
    save_state: Option<StateProvider>,
    /// The app's state came from the fd store: remove it there once running.
    stored_state: bool,
    /// The pid file to keep naming the primary (`None` under a supervisor, which keeps it).
    pid_file: Option<PathBuf>,
    /// A supervisor runs this process: the control socket's file is the supervisor's.
    supervised: bool,
    /// The app serves [`Service::metrics`]: their counters go into the fd store.
    metrics: bool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("listeners", &self.listeners)
            .field("generation", &self.inherited.generation)
            .field("exe", &self.exe)
            .finish_non_exhaustive()
    }
}

/// The app's readiness check.
struct Gate(std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Service {
    /// Reads what a predecessor passed, takes the listening sockets, and resolves our binary's
    /// path for later handoffs. Call before any thread exists (before the tokio runtime).
    pub fn prepare(acquire: &Acquire) -> Result<Service, StartError> {
        Service::prepare_with(Inherited::from_env()?, acquire)
    }

    /// Like [`Service::prepare`], with [`Inherited::from_env`] already read (so that a config
    /// error found in between can still be reported to the predecessor).
    pub fn prepare_with(mut inherited: Inherited, acquire: &Acquire) -> Result<Service, StartError> {
        let inherited_metrics = inherited.metrics.take();
        let fail = |e: StartError| {
            inherited.report_error(&e.to_string());
            e
        };
        fault::set_generation(inherited.generation);
        let acquired = acquire::acquire(acquire).map_err(|e| fail(e.into()))?;
        if inherited.channel.is_some() {
            fault::point(Step::SuccessorTookFds);
        }
        if acquired.listeners.is_empty() && acquired.accepted.is_none() {
            return Err(fail(StartError::NoListeners));
        }
        if let Some(note) = &acquired.listen_ignored
            && inherited.channel.is_none()
        {
            info!("{note}");
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
        crate::metrics::region::init(inherited_metrics, acquired.metrics, inherited.generation);
        let handles = Handles::new();
        let stored_state = acquired.state.is_some();
        if let Some(fd) = acquired.state {
            match crate::fdstore::read_bytes(fd, crate::channel::MAX_MSG as u64) {
                Ok(bytes) => *handles.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes),
                Err(e) => warn!(error = %e, "cannot read the state kept in the fd store"),
            }
        }
        if let Err(e) = crate::sys::raise_nofile_limit() {
            warn!(error = %e, "cannot raise the open-files limit");
        }
        // Whatever else we inherited stays out of our successors.
        crate::sys::cloexec_all_above_stderr();
        let supervised = crate::supervise::is_worker();
        Ok(Service {
            listeners: Arc::new(acquired.listeners),
            inherited,
            exe,
            args: std::env::args_os().skip(1).collect(),
            ignored: acquired.ignored,
            accepted: acquired.accepted,
            stored_connections: acquired.connections,
            stored_state,
            handles,
            gate: None,
            save_state: None,
            pid_file: acquire.pid_file.clone().filter(|_| !supervised),
            supervised,
            metrics: false,
        })
    }

    /// A handle to follow the lifecycle and to start a handoff or a stop from code.
    pub fn handle(&self) -> Handle {
        self.handles.handle()
    }

    /// A readiness gate: the process says it is ready (`READY=1`, or to its predecessor) and
    /// starts accepting only once `gate` returns `Ok`. An `Err` (or no answer within
    /// `handoff_timeout`) ends the run with [`RunError::NotReady`]; in a successor that fails the
    /// handoff visibly (`reload` exits 1 with the reason) and the old process keeps serving.
    /// The error is any type that displays (`String`, `std::io::Error`, `anyhow::Error`, …); its
    /// text is the reason.
    ///
    /// ```no_run
    /// # fn f(service: &mut heird::Service) {
    /// service.ready_when(async {
    ///     // e.g. the database answers; any error that displays fails the gate with its text.
    ///     std::fs::metadata("/run/myapp/db.ready").map(drop)
    /// });
    /// # }
    /// ```
    pub fn ready_when<F, E>(&mut self, gate: F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.gate = Some(Gate(Box::pin(
            async move { gate.await.map_err(|e| e.to_string()) },
        )));
    }

    /// Gives the next process a few bytes of state (a counter, a cache snapshot): `save` runs
    /// at the handover (the successor gets the bytes over the handoff channel) and at a stop
    /// under systemd with an fd store (the bytes wait there, in a memfd, for the process after a
    /// `systemctl restart`). The next process reads them with [`Handle::take_state`]. At most
    /// 128 KiB; a crash saves nothing. Requests still in the old process's handlers after the
    /// handover are not in the snapshot.
    pub fn save_state<F>(&mut self, save: F)
    where
        F: Fn() -> Vec<u8> + Send + Sync + 'static,
    {
        self.save_state = Some(std::sync::Arc::new(save));
    }

    /// The common case of [`Service::save_state`]: one value that serde can write, for axum's
    /// `State`. It starts as what the previous process saved (after a handoff, or a restart
    /// through the fd store), else as `T::default()`, and is saved for the next process in JSON.
    /// Read and change it with [`Kept::lock`]. It takes the place of a `save_state` (one per
    /// service: put everything in one `T`). See [`Kept`] for an example.
    pub fn keep_state<T>(&mut self) -> Kept<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default + Send + 'static,
    {
        let kept = Kept::new(self.handle());
        let k = kept.clone();
        self.save_state(move || k.save());
        kept
    }

    /// heird's Prometheus metrics (see [`crate::metrics`]), to serve with
    /// [`Metrics::router`](crate::metrics::Metrics::router). Their counters live on across
    /// handoffs (always) and, once this is called, across restarts too: they are kept in
    /// systemd's fd store, where they take one slot.
    ///
    /// ```no_run
    /// # async fn f(mut service: heird::Service) {
    /// let app = axum::Router::new().merge(service.metrics().router());
    /// service.run(app, heird::Options::default()).await;
    /// # }
    /// ```
    pub fn metrics(&mut self) -> crate::metrics::Metrics {
        self.metrics = true;
        crate::metrics::Metrics::new()
    }

    /// The listening sockets taken.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// 1 for a process started by systemd or by hand; one more for each successor.
    pub fn generation(&self) -> u64 {
        self.inherited.generation
    }

    /// A note when `LISTEN_FDS` was present but meant for another process.
    pub fn ignored_listen_fds(&self) -> Option<&str> {
        self.ignored.as_deref()
    }

    /// Serves `router` on every listener until a stop or a completed handoff, then drains.
    pub async fn run(self, router: Router, opts: Options) -> Result<Exit, RunError> {
        self.run_routes(Routes::new(router), opts).await
    }

    /// Like [`Service::run`], with a router per listener name (see [`Routes`]).
    pub async fn run_routes(mut self, routes: Routes, mut opts: Options) -> Result<Exit, RunError> {
        let control_fd = self.inherited.control.take();
        let ticket_keys = self.inherited.tls_ticket_keys.take();
        // Accept=yes: this process serves one connection and exits 0 when it closes (an idle
        // exit with no idle time); there is nothing to hand over, so no control socket either.
        let accepted = self.accepted.take();
        if accepted.is_some() {
            opts.idle_exit = Some(std::time::Duration::ZERO);
            opts.control_socket = None;
        }
        let report = |e: RunError| {
            self.inherited.report_error(&e.to_string());
            e
        };
        self.idle_exit_allowed(&opts).map_err(report)?;
        if let Some(gate) = self.gate.take() {
            pass_gate(gate, opts.handoff_timeout).await.map_err(report)?;
        }
        // The control socket before the first connection is served: a client that got an answer
        // can `reload` at once (it raced the first request under load).
        let control = crate::control::Control::open(
            control_fd,
            opts.control_socket.as_deref(),
            !self.supervised,
            self.handles.requests_tx.clone(),
        );
        let drain = Drain::new();
        let serve = opts.serve.clone().with_drain_timeout(opts.drain_timeout);
        if let (Some(tls), Some(keys)) = (&serve.tls, ticket_keys) {
            tls.take_predecessor_keys(keys);
        }
        let one_connection = accepted.is_some();
        let server = spawn_server(&self.listeners, &routes, &drain, &serve, accepted)
            .map_err(|e| report(RunError::Serve(e)))?;
        let signals = if opts.handle_signals {
            Some(runloop::Signals::new().map_err(|e| report(RunError::Signals(e)))?)
        } else {
            None
        };
        let Service {
            listeners,
            inherited,
            exe,
            args,
            stored_connections,
            handles,
            save_state,
            stored_state,
            pid_file,
            metrics,
            ..
        } = self;
        take_up_the_store(&server, stored_connections, stored_state);
        fill_the_store(&opts, metrics, save_state.is_some());
        let channel = match inherited.channel {
            Some(fd) => Some(Channel::new(fd).map_err(RunError::Ready)?),
            None => None,
        };
        runloop::run(runloop::Start {
            generation: inherited.generation,
            channel,
            control,
            opts,
            routes,
            listeners,
            exe,
            args,
            drain,
            server,
            signals,
            handles,
            save_state,
            pid_file,
            one_connection,
        })
        .await
    }
}

impl Service {
    /// Exit when idle only where someone else holds the sockets and starts us again: a socket
    /// heird bound (kept in the fd store or not) would go with the process, and the next client
    /// would be refused.
    fn idle_exit_allowed(&self, opts: &Options) -> Result<(), RunError> {
        match self.listeners.iter().find(|l| l.bound_by_heird()) {
            Some(l) if opts.idle_exit.is_some() => Err(RunError::IdleExitStandalone(format!(
                "{} ({})",
                l.address, l.name
            ))),
            _ => Ok(()),
        }
    }
}
