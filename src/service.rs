//! The lifecycle of one process: acquire → serve → READY → (handoff | stop) → drain → exit.
//!
//! [`Service::prepare`] runs before the async runtime exists (it takes fds and edits the
//! environment); [`Service::run`] serves until the process should exit.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::control;
use crate::drain::Drain;
use crate::fault::{self, Step};
use crate::handoff::{self, Channel, HandoffError, Inherited, Successor};
use crate::listeners::{self, Acquire, ListenError, Listener};
use crate::notify::{self, NotifyState};
use crate::server::{self, ServeSettings, Server};

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
    Inherit(#[from] handoff::InheritError),
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

/// How a run ended; both mean exit status 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: drained and stopped.
    Stopped,
    /// Handed over to the successor with this pid, then drained.
    HandedOver { successor: i32 },
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
        let acquired = listeners::acquire(acquire).map_err(|e| fail(e.into()))?;
        if inherited.channel.is_some() {
            fault::point(Step::SuccessorTookFds);
        }
        if acquired.listeners.is_empty() {
            return Err(fail(StartError::NoListeners));
        }
        let exe = handoff::resolve_exe().map_err(|e| fail(StartError::Exe(e)))?;
        if crate::fdstore::available() {
            // Removals first: a socket bound anew may carry the name of the one it replaces.
            for name in &acquired.unstore {
                crate::fdstore::remove(name);
            }
            for &i in &acquired.store {
                crate::fdstore::store(&acquired.listeners[i]);
            }
        }
        if let Err(e) = crate::sys::raise_nofile_limit() {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
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
        let Service {
            listeners,
            inherited,
            exe,
            args,
            stored_connections,
            ..
        } = self;
        let generation = inherited.generation;
        let report = |e: RunError| {
            inherited.report_error(&e.to_string());
            e
        };
        let mut drain = Drain::new();
        let mut server = Server::spawn(&listeners, router.clone(), &drain, &opts.serve)
            .map_err(|e| report(RunError::Serve(e)))?;
        // Connections the previous process stored at a restart: serve them, then take them out
        // of the store (it holds a copy of each fd).
        if !stored_connections.is_empty() {
            let names = server.adopt_stored(stored_connections);
            for name in &names {
                crate::fdstore::remove_quietly(name);
            }
            info!(fds = names.len(), "took over connections from the fd store");
        }
        server.store_tls_tickets();
        let mut sigterm = signal(SignalKind::terminate()).map_err(|e| report(RunError::Signals(e)))?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(|e| report(RunError::Signals(e)))?;
        let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(|e| report(RunError::Signals(e)))?;
        let mut sighup = signal(SignalKind::hangup()).map_err(|e| report(RunError::Signals(e)))?;

        // The control socket: inherited from the predecessor, or bound now.
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<control::Request>(16);
        let mut control_path = None;
        let control_fd: Option<Arc<OwnedFd>> = match (inherited.control, &opts.control_socket) {
            (Some(fd), _) => Some(Arc::new(fd)),
            (None, Some(path)) => match control::bind(path) {
                Ok(fd) => {
                    control_path = Some(path.clone());
                    Some(Arc::new(fd))
                }
                Err(e) => {
                    warn!(error = %e, "no control socket: `heird reload` will not work");
                    None
                }
            },
            (None, None) => None,
        };
        let control_open = Drain::new();
        let serve_control = || match &control_fd {
            Some(fd) => match fd
                .try_clone()
                .and_then(|fd| control::serve(fd, ctl_tx.clone(), control_open.clone()))
            {
                Ok(t) => Some(t),
                Err(e) => {
                    warn!(error = %e, "cannot serve the control socket");
                    None
                }
            },
            None => None,
        };
        let mut control_task = serve_control();

        // Readiness: a successor tells its parent and waits to be made primary; a first
        // process tells systemd.
        let status = format!("serving, generation {generation}, pid {}", std::process::id());
        let channel = match inherited.channel {
            Some(fd) => Some(Channel::new(fd).map_err(RunError::Ready)?),
            None => None,
        };
        let mut primary = channel.is_none();
        let (primary_tx, mut primary_rx) = tokio::sync::oneshot::channel::<bool>();
        let mut primary_tx = Some(primary_tx);
        let mut channel_task: Option<JoinHandle<()>> = None;
        match channel {
            Some(ch) => {
                fault::point(Step::Serving);
                match handoff::announce_ready(&ch).await {
                    Ok(()) => info!(
                        generation,
                        listeners = listeners.len(),
                        "ready; waiting for the predecessor to hand over"
                    ),
                    // The predecessor is gone (its end of the channel is closed): the wait below
                    // sees EOF at once and this process carries on as the primary.
                    Err(e) => warn!(error = %e, "cannot tell the predecessor we are ready"),
                }
                fault::point(Step::ReadyWritten);
                let tx = primary_tx.take();
                channel_task = Some(tokio::spawn(successor_channel(ch, tx, server.clone())));
            }
            None => {
                notify::ready(&status);
                info!(generation, listeners = listeners.len(), "ready");
            }
        }
        let mut watchdog = if primary { start_watchdog(&opts) } else { None };

        type HandoffTask = JoinHandle<Result<Successor, HandoffError>>;
        let mut running: Option<HandoffTask> = None;
        let mut waiters: Vec<tokio::sync::oneshot::Sender<String>> = Vec::new();
        let cancel = Drain::new(); // started to cancel a running handoff
        let mut deferred = false; // a handoff asked for before we became primary

        let exit = 'life: loop {
            let mut handed: Option<Successor> = None;
            let exit = loop {
                let request: Option<Option<tokio::sync::oneshot::Sender<String>>> = tokio::select! {
                    _ = sigterm.recv() => break Exit::Stopped,
                    _ = sigint.recv() => break Exit::Stopped,
                    _ = sigusr2.recv() => Some(None),
                    _ = sighup.recv() => Some(None),
                    Some(req) = ctl_rx.recv() => Some(Some(req.reply)),
                    handed = &mut primary_rx, if !primary => {
                        primary = true;
                        match handed {
                            Ok(true) => info!(generation, "predecessor handed over; now primary"),
                            _ => warn!(generation, "predecessor went away before handing over; carrying on as primary"),
                        }
                        watchdog = start_watchdog(&opts);
                        if deferred {
                            deferred = false;
                            Some(None)
                        } else {
                            None
                        }
                    }
                    res = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                        running = None;
                        let res = res.unwrap_or_else(|e| Err(HandoffError::Spawn(std::io::Error::other(e))));
                        match res {
                            Ok(successor) => {
                                let pid = successor.pid;
                                let channel = hand_over(&successor, generation, &opts).await;
                                // Idle connections move to the successor. Stop accepting before
                                // anyone hears "ok": from then on, new connections reach the
                                // successor.
                                server.move_to(channel);
                                drain.start_for(crate::drain::DrainReason::Handoff);
                                fault::point_with_peer(Step::DrainStarted, pid as u32);
                                let answer = format!("ok pid={pid} generation={}", generation + 1);
                                for w in waiters.drain(..) {
                                    let _ = w.send(answer.clone());
                                }
                                handed = Some(successor);
                                break Exit::HandedOver { successor: pid };
                            }
                            Err(e) => {
                                error!(error = %e, "handoff failed; still serving");
                                notify::ready(&format!("handoff failed: {e}"));
                                for w in waiters.drain(..) {
                                    let _ = w.send(format!("failed {e}"));
                                }
                            }
                        }
                        None
                    }
                };
                let Some(reply) = request else { continue };
                if !primary {
                    // The predecessor is finishing the handover; run this request once it has.
                    info!("handoff requested before this process became primary; deferred");
                    waiters.extend(reply);
                    deferred = true;
                    continue;
                }
                if running.is_some() {
                    info!("handoff requested while one is running; coalesced with it");
                    waiters.extend(reply);
                    continue;
                }
                waiters.extend(reply);
                notify::reloading(&format!("handing over to generation {}", generation + 1));
                info!(generation, "handoff started");
                // TLS session-ticket keys for the successor (a memfd), so that tickets survive.
                let keys = server.tls_ticket_keys();
                let (l, c, exe, args, timeout, cancel) = (
                    listeners.clone(),
                    control_fd.clone(),
                    exe.clone(),
                    args.clone(),
                    opts.handoff_timeout,
                    cancel.clone(),
                );
                running = Some(tokio::spawn(async move {
                    let spawn = handoff::Spawn {
                        exe: &exe,
                        args: &args,
                        listeners: &l,
                        control: c.as_deref().map(|f| f.as_fd()),
                        tls_ticket_keys: keys.as_ref().map(|f| f.as_fd()),
                        generation,
                        timeout,
                    };
                    tokio::select! {
                        r = handoff::start(spawn) => r,
                        _ = cancel.started() => Err(HandoffError::Stopping),
                    }
                }));
            };

            // Stopping or handed over: no more control requests or watchdog pings here.
            if let Some(t) = control_task.take() {
                t.abort();
            }
            if let Some(w) = watchdog.take() {
                w.abort();
            }
            if exit == Exit::Stopped {
                if primary {
                    notify::stopping(&format!(
                        "stopping, draining {} connections",
                        drain.open_connections()
                    ));
                }
                info!(generation, "stopping");
                if let Some(task) = running.take() {
                    cancel.start();
                    cancel_handoff(task).await;
                }
                for w in waiters.drain(..) {
                    let _ = w.send(format!("failed {}", HandoffError::Stopping));
                }
                if let Some(path) = &control_path {
                    let _ = std::fs::remove_file(path);
                }
                // Release the sockets now (unless systemd holds them), then drain. Under systemd
                // with an fd store, idle keep-alive connections wait there for the next process
                // (a restart); a final stop releases the store, which closes them.
                if primary && let Some(max) = crate::fdstore::connection_room() {
                    // The stored listeners (one per self-bound socket) come first.
                    let stored_listeners = listeners
                        .iter()
                        .filter(|l| l.name.starts_with(listeners::STORE_PREFIX))
                        .count();
                    server.store_on_stop(max.saturating_sub(stored_listeners as u64));
                }
                drop(listeners);
                drain.start();
                let open = drain.open_connections();
                let left = drain.wait(opts.drain_timeout).await;
                log_drain(open, left, &opts);
                server::log_moves(&server);
                break 'life exit;
            }

            // Handed over: drain, but watch the successor. If it dies (killed, crashed) before
            // this process is gone, nobody would hold the sockets: take the service back instead
            // of exiting. A successor that exits cleanly (it stopped, or handed over in turn
            // during our drain) is no reason to.
            let successor = handed.expect("set with HandedOver");
            // Our own predecessor may still be moving connections to us (handoffs can come faster
            // than drains): stay until it has closed the channel, so that those connections are
            // passed on to our successor instead of dying with us.
            if let Some(t) = channel_task.as_mut() {
                let _ = tokio::time::timeout(opts.drain_timeout, t).await;
            }
            let open = drain.open_connections();
            let draining = drain.clone();
            let drained = draining.wait(opts.drain_timeout);
            tokio::pin!(drained);
            // The successor acknowledges `primary`; until then (or handoff_timeout) this process
            // stays, so that a successor dying right after the handover is noticed for sure.
            let mut watching = true;
            let mut awaiting_ack = true;
            let mut drained_done = false;
            let ack_deadline = tokio::time::sleep(opts.handoff_timeout);
            tokio::pin!(ack_deadline);
            let died: Option<String> = loop {
                tokio::select! {
                    left = &mut drained, if !drained_done => {
                        log_drain(open, left, &opts);
                        if left > 0 {
                            fault::point_with_peer(Step::DrainDeadline, successor.pid as u32);
                        }
                        drained_done = true;
                        if !awaiting_ack {
                            break exit_status(&successor, watching).await;
                        }
                    }
                    msg = successor.channel.recv(), if awaiting_ack => {
                        awaiting_ack = false;
                        if !matches!(&msg, Ok(Some(m)) if m.as_slice() == b"primary-ack") {
                            // Closed without an acknowledgement: it is exiting or gone.
                            let _ = tokio::time::timeout(Duration::from_secs(1), successor.pidfd.readable()).await;
                            if let Some(status) = exit_status(&successor, watching).await {
                                break Some(status);
                            }
                        }
                        if drained_done {
                            break exit_status(&successor, watching).await;
                        }
                    }
                    _ = &mut ack_deadline, if awaiting_ack && drained_done => {
                        warn!(successor = successor.pid, "no acknowledgement from the successor; exiting anyway");
                        break exit_status(&successor, watching).await;
                    }
                    _ = successor.pidfd.readable(), if watching => {
                        let (clean, status) = handoff::reap_exited(&successor).await;
                        if !clean {
                            break Some(status);
                        }
                        info!(successor = successor.pid, "the successor exited cleanly; finishing the drain");
                        watching = false;
                        awaiting_ack = false;
                        if drained_done {
                            break None;
                        }
                    }
                }
            };
            server::log_moves(&server);
            let Some(status) = died else {
                break 'life exit;
            };
            error!(
                successor = successor.pid,
                %status,
                "the successor died after the handover; taking the service back"
            );
            notify::send(&[
                NotifyState::MainPid(std::process::id()),
                NotifyState::Ready,
                NotifyState::Status(&format!(
                    "successor {} died; serving again, pid {}",
                    successor.pid,
                    std::process::id()
                )),
            ]);
            drop(successor);
            drain = Drain::new();
            server =
                Server::spawn(&listeners, router.clone(), &drain, &opts.serve).map_err(RunError::Serve)?;
            control_task = serve_control();
            watchdog = start_watchdog(&opts);
        };

        // Control requests that raced in after the loop ended: the successor (if any) will take
        // them, so ask the client to retry; then let every answer be written before exiting.
        ctl_rx.close();
        while let Ok(req) = ctl_rx.try_recv() {
            let _ = req.reply.send(match exit {
                Exit::HandedOver { successor } => format!("retry handed over to pid {successor}"),
                Exit::Stopped => format!("failed {}", HandoffError::Stopping),
            });
        }
        drop(ctl_rx);
        control_open.wait(Duration::from_secs(2)).await;
        if let Some(t) = channel_task {
            t.abort();
        }
        Ok(exit)
    }
}

fn log_drain(open: usize, left: usize, opts: &Options) {
    if left > 0 {
        warn!(
            left,
            deadline_s = opts.drain_timeout.as_secs_f64(),
            "drain deadline reached; closing the rest"
        );
    } else {
        info!(drained = open, "drained");
    }
}

/// `Some(status)` when the successor has died (exited uncleanly or was killed), reaped;
/// `None` while it runs or when it exited cleanly.
async fn exit_status(successor: &Successor, watching: bool) -> Option<String> {
    if !watching || !has_exited(successor) {
        return None;
    }
    let (clean, status) = handoff::reap_exited(successor).await;
    (!clean).then_some(status)
}

/// True when the successor has exited: its pidfd polls readable right now.
fn has_exited(successor: &Successor) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(successor.pidfd.get_ref().as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// MAINPID + READY, then the barrier, then tell the successor it is primary. After this the
/// process says nothing more to systemd. Returns the channel, which carries moved connections.
async fn hand_over(successor: &Successor, generation: u64, opts: &Options) -> Arc<Channel> {
    let pid = successor.pid;
    notify::handed_over(
        pid as u32,
        &format!("serving, generation {}, pid {pid}", generation + 1),
    );
    fault::point_with_peer(Step::MainPidSent, pid as u32);
    let timeout = opts.handoff_timeout;
    match tokio::task::spawn_blocking(move || notify::barrier(timeout)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "barrier failed; systemd may not have processed MAINPID yet"),
        Err(e) => warn!(error = %e, "barrier task failed"),
    }
    fault::point_with_peer(Step::BarrierDone, pid as u32);
    if let Err(e) = successor.channel.send(b"primary").await {
        warn!(pid, error = %e, "cannot tell the successor it is primary");
    }
    info!(
        successor = pid,
        generation = generation + 1,
        ready_ms = successor.ready_after.as_secs_f64() * 1e3,
        "handed over; draining"
    );
    successor.channel.clone()
}

/// The successor's side of the channel: `primary` makes this process the primary; `conn`
/// messages bring moved connections; EOF means the predecessor is gone.
async fn successor_channel(
    ch: Channel,
    mut primary_tx: Option<tokio::sync::oneshot::Sender<bool>>,
    server: Server,
) {
    loop {
        match ch.recv_with_fd().await {
            Ok(Some((msg, fd))) if server::is_moved_connection(&msg) => match fd {
                Some(fd) => {
                    if let Err(e) = server.adopt(&msg, fd) {
                        warn!(error = %e, "cannot serve a moved connection");
                    }
                }
                None => warn!("moved connection without its fd"),
            },
            Ok(Some((msg, _))) if msg.as_slice() == b"primary" => {
                if let Some(tx) = primary_tx.take() {
                    let _ = tx.send(true);
                }
                if let Err(e) = ch.send(b"primary-ack").await {
                    warn!(error = %e, "cannot acknowledge the handover");
                }
            }
            Ok(Some((msg, _))) => {
                warn!(message = %String::from_utf8_lossy(&msg[..msg.len().min(64)]), "unexpected message from the predecessor")
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "handoff channel failed");
                break;
            }
        }
    }
    if let Some(tx) = primary_tx.take() {
        let _ = tx.send(false);
    }
}

/// A stop arrived during a handoff: the task kills and reaps a successor that is not ready yet;
/// one that became ready in the meantime is told to stop (it never became primary).
async fn cancel_handoff(task: JoinHandle<Result<Successor, HandoffError>>) {
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(successor))) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(successor.pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            warn!(
                pid = successor.pid,
                "stopping: successor was ready but not handed over; sent SIGTERM"
            );
        }
        Ok(Ok(Err(e))) => info!(reason = %e, "handoff cancelled by stop"),
        Ok(Err(e)) => warn!(error = %e, "handoff task failed"),
        Err(_) => warn!("handoff did not cancel within 10 s"),
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

/// Sends SIGTERM to `pid` and waits until it has exited (`heird stop`, used as `ExecStop=`:
/// systemd 252/257 SIGKILL a main pid they did not fork at once, so the unit waits here
/// instead). Returns false when the process is still running after `timeout`.
pub fn stop_and_wait(pid: u32, timeout: Duration) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::{Signal, kill};
    let raw = pid as i32;
    let pidfd = match crate::sys::pidfd_open(raw) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
        Err(e) => return Err(e),
    };
    match kill(nix::unistd::Pid::from_raw(raw), Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::Error::ESRCH) => return Ok(true),
        Err(e) => return Err(e.into()),
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}
