//! A stable PID 1 for containers (and for any supervisor that does not follow `MAINPID=`): a
//! small process that holds the sockets for the container's whole life and runs the serving
//! process, the worker, as its child. A handoff happens between workers, exactly as under
//! systemd: the supervisor plays systemd's part for them (their `NOTIFY_SOCKET`, `MAINPID=`
//! followed, `BARRIER=1` answered), so every worker runs heird's ordinary code.
//!
//! - `machine`: the supervisor's rules, a pure `step` (beside the worker's `lifecycle`).
//! - `worker`: starting a worker (our binary again, with the sockets at 3..).
//! - `notify_in`: the workers' notify socket.
//!
//! It also does what init owes a container: it reaps every child (orphans included: it is
//! PID 1, or a child subreaper otherwise), passes SIGTERM/SIGINT to the worker and exits with
//! its status, and restarts a worker that crashed. Our own `NOTIFY_SOCKET` (podman's
//! `--sdnotify=container`, or systemd) hears READY, RELOADING, STOPPING and STATUS, never a
//! `MAINPID=`: our pid is the service's for its whole life.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::acquire::{self, Acquire, Supervise};
use crate::inherit::Inherited;
use crate::listeners::Listener;
use crate::notify::{self, NotifyState};
use crate::{control, logging, successor};

mod machine;
mod notify_in;
mod worker;

use machine::{Action, Event, Machine, Sig};
use notify_in::NotifyIn;
pub use worker::SUPERVISED_VAR;

/// True when this process should supervise: asked for (or PID 1), and neither a worker
/// already nor a successor of one.
pub(crate) fn wanted(mode: Supervise, inherited: &Inherited) -> bool {
    if std::env::var_os(SUPERVISED_VAR).is_some() || inherited.channel.is_some() {
        return false;
    }
    match mode {
        Supervise::Auto => std::process::id() == 1,
        Supervise::Always => true,
        Supervise::Never => false,
    }
}

/// True in a worker (or a worker's successor): a supervisor holds the control socket's file
/// and the pid file, and the worker leaves both alone.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(SUPERVISED_VAR).is_some()
}

/// What the supervisor holds for its whole life.
struct Held {
    listeners: Vec<Listener>,
    control: Option<(OwnedFd, PathBuf)>,
    notify: NotifyIn,
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// Names the supervisor (whose pid never moves) until it exits.
    pid_file: Option<PathBuf>,
}

/// Runs the supervisor until the service stops; the exit code is the last worker's. Call
/// before any thread exists (it takes the sockets, which edits the environment).
pub(crate) fn run(acquire: &Acquire, log_level: &str) -> ExitCode {
    // A current-thread runtime starts no thread: the sockets are still taken single-threaded.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let held = {
        let _in_runtime = runtime.enter();
        match logging::with_stderr(log_level, || hold(acquire)) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(crate::options::EX_CONFIG);
            }
        }
    };
    logging::init(log_level);
    let code = runtime.block_on(supervise(&held));
    if let Some((_, path)) = &held.control {
        let _ = std::fs::remove_file(path);
    }
    if let Some(path) = &held.pid_file {
        crate::pidfile::remove_if_names(path, std::process::id());
    }
    ExitCode::from(code)
}

/// Takes the sockets, binds the control and notify sockets, and becomes a subreaper.
fn hold(acquire: &Acquire) -> Result<Held, String> {
    let acquired = acquire::acquire(acquire).map_err(|e| e.to_string())?;
    if acquired.listeners.is_empty() {
        return Err(
            "no listening socket: pass sockets with systemd, --fd, or give an address to bind".into(),
        );
    }
    if !acquired.connections.is_empty() || acquired.state.is_some() {
        warn!("the supervisor keeps no fd store: stored connections and state are closed");
    }
    // Orphans of our workers come to us when we are not PID 1 already.
    if std::process::id() != 1
        && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
    {
        return Err(format!("cannot become a child subreaper: {e}"));
    }
    let exe =
        successor::resolve_exe().map_err(|e| format!("cannot resolve the path of our own binary: {e}"))?;
    let control = control::default_path().and_then(|path| match control::bind(&path) {
        Ok(fd) => Some((fd, path)),
        Err(e) => {
            warn!(error = %e, "no control socket: `reload` must use signals");
            None
        }
    });
    let dir =
        control::private_dir().map_err(|e| format!("no private directory for the notify socket: {e}"))?;
    let notify = NotifyIn::bind(&dir).map_err(|e| format!("cannot bind the workers' notify socket: {e}"))?;
    crate::sys::cloexec_all_above_stderr();
    if let Some(path) = &acquire.pid_file {
        crate::pidfile::write(path, std::process::id());
    }
    Ok(Held {
        listeners: acquired.listeners,
        control,
        notify,
        exe,
        args: std::env::args_os().skip(1).collect(),
        pid_file: acquire.pid_file.clone(),
    })
}

/// The supervisor's loop: the world → [`Event`]s → [`Machine::step`] → actions.
async fn supervise(held: &Held) -> u8 {
    let t0 = Instant::now();
    let signals = Signals::new().and_then(|s| Ok((signal(SignalKind::child())?, s)));
    let (mut chld, mut signals) = match signals {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install the supervisor's signal handlers");
            return 1;
        }
    };
    info!(
        pid = std::process::id(),
        listeners = held.listeners.len(),
        "supervisor started"
    );
    let (mut machine, first) = Machine::start();
    let mut queue: Vec<Event> = Vec::new();
    let mut timers = Timers::default();
    if let Some(code) = perform(held, first, &mut queue, &mut timers) {
        return code;
    }
    loop {
        while !queue.is_empty() {
            for event in std::mem::take(&mut queue) {
                let actions = machine.step(event, t0.elapsed());
                if let Some(code) = perform(held, actions, &mut queue, &mut timers) {
                    return code;
                }
            }
            if machine.phase == machine::Phase::Stopping && reap(&mut queue) {
                queue.push(Event::NoChildren);
            }
        }
        tokio::select! {
            biased;
            _ = held.notify.readable() => {
                for (from, lines, fd) in held.notify.drain() {
                    let actions = machine.step(Event::Notified { from, lines }, t0.elapsed());
                    // The barrier's pipe closes only now that everything before it is done.
                    drop(fd);
                    if let Some(code) = perform(held, actions, &mut queue, &mut timers) {
                        return code;
                    }
                }
            }
            _ = chld.recv() => {
                // Datagrams a worker sent before it exited are read first.
                for (from, lines, fd) in held.notify.drain() {
                    queue.push(Event::Notified { from, lines });
                    drop(fd);
                }
                if reap(&mut queue) {
                    queue.push(Event::NoChildren);
                }
            }
            sig = signals.next() => queue.push(Event::Signal(sig)),
            _ = Timers::fire(&mut timers.backoff) => queue.push(Event::BackoffDone),
            _ = Timers::fire(&mut timers.grace) => queue.push(Event::GraceDone),
        }
    }
}

/// Performs `actions`; what they report goes to `queue`. Returns the exit code on `Exit`.
fn perform(held: &Held, actions: Vec<Action>, queue: &mut Vec<Event>, timers: &mut Timers) -> Option<u8> {
    for action in actions {
        match action {
            Action::Spawn => queue.push(spawn(held)),
            Action::Forward(pid, sig) => {
                let signal = match sig {
                    Sig::Hup => Signal::SIGHUP,
                    Sig::Usr2 => Signal::SIGUSR2,
                    Sig::Term => Signal::SIGTERM,
                    Sig::Int => Signal::SIGINT,
                };
                info!(pid, %signal, "passing the signal to the worker");
                if let Err(e) = kill(Pid::from_raw(pid), signal) {
                    warn!(pid, %signal, error = %e, "cannot signal the worker");
                }
            }
            Action::Relay(lines) => {
                let states: Vec<NotifyState<'_>> = lines.iter().map(|l| NotifyState::Custom(l)).collect();
                notify::send(&states);
            }
            Action::StopOthers => {
                for pid in our_children() {
                    info!(pid, "stopping a worker the crashed one had started");
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
            Action::Backoff(d) => timers.backoff = Some(Box::pin(tokio::time::sleep(d))),
            Action::Grace(d) => timers.grace = Some(Box::pin(tokio::time::sleep(d))),
            Action::Exit(code) => {
                info!(code, "supervisor exiting");
                return Some(code);
            }
        }
    }
    None
}

fn spawn(held: &Held) -> Event {
    let plan = worker::Plan {
        exe: &held.exe,
        args: &held.args,
        listeners: &held.listeners,
        control: held.control.as_ref().map(|(fd, _)| fd.as_fd()),
        notify: held.notify.path(),
    };
    match worker::spawn(&plan) {
        Ok(pid) => {
            info!(pid, exe = %held.exe.display(), "worker started");
            Event::Started(pid)
        }
        Err(e) => {
            error!(error = %e, "cannot start a worker");
            Event::SpawnFailed(e.to_string())
        }
    }
}

/// Our children now (from /proc): after the main worker crashed, only workers it had
/// started (a successor it had not handed over to) or was draining.
fn our_children() -> Vec<i32> {
    let me = std::process::id();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Reaps every child that has exited (orphans included); true when none is left at all.
fn reap(queue: &mut Vec<Event>) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, 0)) => {
                info!(pid = pid.as_raw(), "child exited");
                queue.push(Event::Exited {
                    pid: pid.as_raw(),
                    status: 0,
                });
            }
            Ok(WaitStatus::Exited(pid, code)) => {
                warn!(pid = pid.as_raw(), code, "child failed");
                queue.push(Event::Exited {
                    pid: pid.as_raw(),
                    status: code,
                });
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                warn!(pid = pid.as_raw(), signal = %sig, "child killed");
                queue.push(Event::Exited {
                    pid: pid.as_raw(),
                    status: 128 + sig as i32,
                });
            }
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return true,
            Err(e) => {
                warn!(error = %e, "waitpid failed");
                return false;
            }
        }
    }
}

/// The signals the supervisor passes on (SIGCHLD is apart: it is ours).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Term,
            _ = self.int.recv() => Sig::Int,
            _ = self.hup.recv() => Sig::Hup,
            _ = self.usr2.recv() => Sig::Usr2,
        }
    }
}

type Sleep = std::pin::Pin<Box<tokio::time::Sleep>>;

/// The machine's two timers; an unset one never fires.
#[derive(Default)]
struct Timers {
    backoff: Option<Sleep>,
    grace: Option<Sleep>,
}

impl Timers {
    async fn fire(timer: &mut Option<Sleep>) {
        match timer {
            Some(t) => {
                t.as_mut().await;
                *timer = None;
            }
            None => std::future::pending().await,
        }
    }
}
