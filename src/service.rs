//! The process: [`Service::prepare`] takes the sockets before the async runtime exists (it
//! edits the environment); [`Service::run`] turns the world (signals, control requests, the
//! handoff channel, the successor's exit, timers) into [`lifecycle`] events and performs the
//! actions the state machine returns, until it says exit.

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::acquire::{self, Acquire};
use crate::channel::Channel;
use crate::control;
use crate::drain::Drain;
use crate::fault::{self, Step};
use crate::handover;
use crate::inherit::{InheritError, Inherited};
use crate::lifecycle::{self, Action, DrainTo, Event, State, WaiterId};
use crate::listeners::{ListenError, Listener};
use crate::notify::{self, NotifyState};
use crate::server::{self, ServeSettings, Server};
use crate::successor::{self, HandoffError, Successor};
use crate::wire::{ChannelMsg, ControlAnswer};

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
        let signals = Signals::new().map_err(|e| report(RunError::Signals(e)))?;
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
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        let control = control::Control::open(inherited.control, opts.control_socket.as_deref(), ctl_tx);
        let (events_tx, events) = mpsc::unbounded_channel();
        let generation = inherited.generation;
        let status = format!("serving, generation {generation}, pid {}", std::process::id());
        let (state, first) = State::start(generation, channel.is_some(), status);
        let mut d = Driver {
            state,
            generation,
            opts,
            router,
            listeners: Some(listeners),
            exe,
            args,
            drain,
            server,
            control,
            ctl_rx,
            events,
            watchdog: None,
            running: None,
            cancel: watch::Sender::new(false),
            handed: None,
            awaiting_ack: false,
            ack_timer: None,
            drain_wait: None,
            waiters: HashMap::new(),
            next_waiter: 0,
            channel_task: None,
        };
        if let Some(ch) = channel {
            fault::point(Step::Serving);
            match successor::announce_ready(&ch).await {
                Ok(()) => info!(
                    generation,
                    listeners = d.listeners().len(),
                    "ready; waiting for the predecessor to hand over"
                ),
                // The predecessor is gone (its end of the channel is closed): the channel task
                // sees EOF at once and this process carries on as the primary.
                Err(e) => warn!(error = %e, "cannot tell the predecessor we are ready"),
            }
            fault::point(Step::ReadyWritten);
            d.channel_task = Some(tokio::spawn(handover::predecessor_channel(
                ch,
                events_tx,
                d.server.clone(),
            )));
        } else {
            info!(generation, listeners = d.listeners().len(), "ready");
        }
        for a in first {
            d.perform(a).await?;
        }
        d.run(signals).await
    }
}

/// The signals heird handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr2: signal(SignalKind::user_defined2())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

type DrainWait = Pin<Box<dyn Future<Output = usize> + Send>>;

/// Everything the run loop owns; `perform` is the only place that acts on the world.
struct Driver {
    state: State,
    generation: u64,
    opts: Options,
    router: Router,
    /// The listening sockets, passed to each successor; released at a stop.
    listeners: Option<Arc<Vec<Listener>>>,
    exe: PathBuf,
    args: Vec<OsString>,
    drain: Drain,
    server: Server,
    control: control::Control,
    ctl_rx: mpsc::Receiver<control::Request>,
    /// Events from background tasks (the predecessor's channel).
    events: mpsc::UnboundedReceiver<Event>,
    watchdog: Option<JoinHandle<()>>,
    /// The successor being started.
    running: Option<JoinHandle<Result<Successor, HandoffError>>>,
    /// Set to cancel the successor being started.
    cancel: watch::Sender<bool>,
    /// The successor that took over, until it exits or we do.
    handed: Option<Successor>,
    awaiting_ack: bool,
    ack_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    drain_wait: Option<DrainWait>,
    waiters: HashMap<WaiterId, oneshot::Sender<String>>,
    next_waiter: WaiterId,
    channel_task: Option<JoinHandle<()>>,
}

impl Driver {
    fn listeners(&self) -> &[Listener] {
        self.listeners.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    async fn run(mut self, mut sig: Signals) -> Result<Exit, RunError> {
        let mut exit = None;
        while exit.is_none() {
            let event = tokio::select! {
                _ = sig.term.recv() => Event::Stop,
                _ = sig.int.recv() => Event::Stop,
                _ = sig.usr2.recv() => Event::Reload(None),
                _ = sig.hup.recv() => Event::Reload(None),
                Some(req) = self.ctl_rx.recv() => {
                    let id = self.next_waiter;
                    self.next_waiter += 1;
                    self.waiters.insert(id, req.reply);
                    Event::Reload(Some(id))
                }
                Some(ev) = self.events.recv() => ev,
                res = async { self.running.as_mut().expect("guarded").await }, if self.running.is_some() => {
                    self.running = None;
                    match res.unwrap_or_else(|e| Err(HandoffError::Spawn(std::io::Error::other(e)))) {
                        Ok(s) => {
                            let pid = s.pid();
                            self.handed = Some(s);
                            Event::SuccessorReady { pid }
                        }
                        Err(e) => {
                            error!(error = %e, "handoff failed; still serving");
                            Event::SuccessorFailed { reason: e.to_string() }
                        }
                    }
                }
                msg = async { self.handed.as_ref().expect("guarded").channel.recv().await }, if self.awaiting_ack && self.handed.is_some() => {
                    match msg {
                        Ok(Some(m)) if ChannelMsg::parse(&m) == Some(ChannelMsg::PrimaryAck) => {
                            self.awaiting_ack = false;
                            Event::SuccessorAcked
                        }
                        Ok(Some(m)) => {
                            warn!(message = %String::from_utf8_lossy(&m[..m.len().min(64)]), "unexpected message from the successor");
                            continue;
                        }
                        // Closed without an acknowledgement: it is exiting or gone; its exit
                        // (or the acknowledgement timer) decides.
                        _ => {
                            self.awaiting_ack = false;
                            continue;
                        }
                    }
                }
                _ = async { self.handed.as_ref().expect("guarded").child.exited().await }, if self.handed.is_some() && self.state.phase != lifecycle::Phase::HandingOver => {
                    let mut s = self.handed.take().expect("guarded");
                    let (clean, status) = s.child.reap().await;
                    if clean {
                        info!(successor = s.pid(), "the successor exited cleanly; finishing the drain");
                    }
                    Event::SuccessorExited { clean, status }
                }
                _ = async { self.ack_timer.as_mut().expect("guarded").await }, if self.ack_timer.is_some() => {
                    self.ack_timer = None;
                    warn!("no acknowledgement from the successor in time");
                    Event::AckTimedOut
                }
                left = async { self.drain_wait.as_mut().expect("guarded").await }, if self.drain_wait.is_some() => {
                    self.drain_wait = None;
                    Event::DrainDone { left }
                }
            };
            // A successor that died since the last look is noticed before anything else (its
            // exit may not have woken the loop yet), so that a handed-over process never exits
            // while nobody serves.
            let mut events = vec![event];
            if matches!(self.state.phase, lifecycle::Phase::HandedOver(_))
                && let Some(mut s) = self.handed.take_if(|s| s.child.has_exited())
            {
                let (clean, status) = s.child.reap().await;
                events.insert(0, Event::SuccessorExited { clean, status });
            }
            for event in events {
                for action in lifecycle::step(&mut self.state, event) {
                    if let Action::Exit(e) = action {
                        exit = Some(e);
                    }
                    self.perform(action).await?;
                }
            }
        }
        let exit = exit.expect("loop ends with an exit");
        server::log_moves(&self.server);
        // Control requests that raced in: the successor (if any) will take them, so ask the
        // client to retry; then let every answer be written before exiting.
        self.ctl_rx.close();
        while let Ok(req) = self.ctl_rx.try_recv() {
            let answer = match exit {
                Exit::HandedOver { successor } => {
                    ControlAnswer::Retry(format!("handed over to pid {successor}"))
                }
                Exit::Stopped => ControlAnswer::Failed(lifecycle::STOPPING.into()),
            };
            let _ = req.reply.send(answer.to_string());
        }
        for (_, w) in self.waiters.drain() {
            let _ = w.send(ControlAnswer::Failed(lifecycle::STOPPING.into()).to_string());
        }
        self.control.finish(exit == Exit::Stopped).await;
        if let Some(t) = self.channel_task.take() {
            t.abort();
        }
        Ok(exit)
    }

    async fn perform(&mut self, action: Action) -> Result<(), RunError> {
        match action {
            Action::NotifyReady(status) => notify::ready(&status),
            Action::NotifyReloading => {
                notify::reloading(&format!("handing over to generation {}", self.generation + 1));
                info!(generation = self.generation, "handoff started");
            }
            Action::NotifyStopping => {
                notify::stopping(&format!(
                    "stopping, draining {} connections",
                    self.drain.open_connections()
                ));
                info!(generation = self.generation, "stopping");
            }
            Action::StartWatchdog => self.watchdog = start_watchdog(&self.opts),
            Action::StopWatchdog => {
                if let Some(w) = self.watchdog.take() {
                    w.abort();
                }
            }
            Action::StopControl => self.control.stop(),
            Action::StartSuccessor => self.start_successor(),
            Action::CancelSuccessor => self.cancel_successor().await,
            Action::HandOver => {
                if let Some(s) = self.handed.as_mut() {
                    handover::hand_over(s, self.generation, self.opts.handoff_timeout).await;
                    self.awaiting_ack = true;
                }
            }
            Action::StartDrain(to) => self.start_drain(to),
            Action::WaitDrain => {
                let open = self.drain.open_connections();
                let drain = self.drain.clone();
                let timeout = self.opts.drain_timeout;
                let successor = self.handed.as_ref().map(|s| s.pid() as u32);
                self.drain_wait = Some(Box::pin(async move {
                    let left = drain.wait(timeout).await;
                    log_drain(open, left, timeout);
                    if left > 0
                        && let Some(pid) = successor
                    {
                        fault::point_with_peer(Step::DrainDeadline, pid);
                    }
                    left
                }));
            }
            Action::ArmAckTimer => {
                self.ack_timer = Some(Box::pin(tokio::time::sleep(self.opts.handoff_timeout)));
            }
            Action::Reply(id, answer) => {
                if let Some(w) = self.waiters.remove(&id) {
                    let _ = w.send(answer.to_string());
                }
            }
            Action::TakeBack { successor, status } => self.take_back(successor, &status)?,
            Action::Exit(_) => {}
        }
        Ok(())
    }

    fn start_successor(&mut self) {
        let Some(listeners) = self.listeners.clone() else {
            return;
        };
        let control = self.control.fd();
        let (exe, args, generation) = (self.exe.clone(), self.args.clone(), self.generation);
        let (timeout, grace) = (self.opts.handoff_timeout, self.opts.drain_timeout);
        self.cancel.send_replace(false);
        let mut cancel = self.cancel.subscribe();
        self.running = Some(tokio::spawn(async move {
            let spawn = successor::Spawn {
                exe: &exe,
                args: &args,
                listeners: &listeners,
                control: control.as_deref().map(|f| f.as_fd()),
                generation,
                timeout,
            };
            successor::start(
                spawn,
                async move {
                    let _ = cancel.wait_for(|c| *c).await;
                },
                grace,
            )
            .await
        }));
    }

    /// A stop during a handoff: the successor never takes over. It may already serve
    /// connections, so it is stopped gently (SIGTERM, then its own drain), and reaped before
    /// this process goes on, so a stop leaves nothing serving.
    async fn cancel_successor(&mut self) {
        self.cancel.send_replace(true);
        if let Some(task) = self.running.take() {
            let bound = self.opts.drain_timeout + Duration::from_secs(5);
            match tokio::time::timeout(bound, task).await {
                Ok(Ok(Ok(mut s))) => {
                    let status = s.child.stop(self.opts.drain_timeout).await;
                    warn!(pid = s.pid(), %status, "stopping: successor was ready but not handed over; stopped it");
                }
                Ok(Ok(Err(e))) => info!(reason = %e, "handoff cancelled by stop"),
                Ok(Err(e)) => warn!(error = %e, "handoff task failed"),
                Err(_) => warn!("handoff did not cancel in time"),
            }
        }
    }

    fn start_drain(&mut self, to: DrainTo) {
        match to {
            DrainTo::Successor => {
                if let Some(s) = &self.handed {
                    // Idle connections move to the successor. The drain starts before anyone
                    // hears "ok": from then on, new connections reach the successor.
                    self.server.move_to(s.channel.clone());
                    self.drain.start();
                    fault::point_with_peer(Step::DrainStarted, s.pid() as u32);
                    return;
                }
            }
            DrainTo::Store => {
                // Under systemd with an fd store, idle keep-alive connections wait there for the
                // next process (a restart); a final stop releases the store, which closes them.
                if let Some(max) = crate::fdstore::connection_room() {
                    let stored_listeners = self
                        .listeners()
                        .iter()
                        .filter(|l| crate::fdstore::is_bound_listener(&l.name))
                        .count();
                    self.server
                        .store_on_stop(max.saturating_sub(stored_listeners as u64));
                }
                // Release the sockets now (unless systemd holds them), then drain.
                self.listeners = None;
            }
            DrainTo::Close => self.listeners = None,
        }
        self.drain.start();
    }

    /// The successor died after the handover: nobody would hold the sockets. Become the main
    /// process again and serve.
    fn take_back(&mut self, successor: i32, status: &str) -> Result<(), RunError> {
        error!(successor, %status, "the successor died after the handover; taking the service back");
        notify::send(&[
            NotifyState::MainPid(std::process::id()),
            NotifyState::Ready,
            NotifyState::Status(&format!(
                "successor {successor} died; serving again, pid {}",
                std::process::id()
            )),
        ]);
        self.handed = None;
        self.awaiting_ack = false;
        self.ack_timer = None;
        self.drain_wait = None;
        self.drain = Drain::new();
        let listeners = self.listeners.clone().unwrap_or_default();
        self.server = Server::spawn(&listeners, self.router.clone(), &self.drain, &self.opts.serve)
            .map_err(RunError::Serve)?;
        self.control.restart();
        self.watchdog = start_watchdog(&self.opts);
        Ok(())
    }
}

fn log_drain(open: usize, left: usize, deadline: Duration) {
    if left > 0 {
        warn!(
            left,
            deadline_s = deadline.as_secs_f64(),
            "drain deadline reached; closing the rest"
        );
    } else {
        info!(drained = open, "drained");
    }
}

fn start_watchdog(opts: &Options) -> Option<JoinHandle<()>> {
    let interval = notify::watchdog_interval()?;
    if opts.watchdog_stall {
        warn!("watchdog_stall is set: not pinging the watchdog (test only)");
        return None;
    }
    info!(interval_ms = interval.as_millis() as u64, "watchdog enabled");
    Some(tokio::spawn(notify::watchdog_ticker(interval)))
}
