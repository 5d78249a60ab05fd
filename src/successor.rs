//! Starting a successor: fork and exec our binary with the listening fds at 3.., the handoff
//! channel and the control socket after them, and `LISTEN_PID` set to the child's own pid; then
//! wait until it says `ready` (or fails, or the time is up).
//!
//! Every started child is held by a [`Child`], which kills and reaps it when dropped, so no
//! path (a failure, a stop during the handoff, a cancelled task) can leave a successor running
//! that never took over.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tracing::info;

use crate::channel::Channel;
pub use crate::child::Child;
use crate::inherit::{CONTROL_FD_VAR, GENERATION_VAR, HANDOFF_FD_VAR};
use crate::listeners::{self, Listener};
use crate::sys;
use crate::wire::ChannelMsg;

/// Why a handoff did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("binary {path} is gone: {error}")]
    BinaryGone { path: PathBuf, error: io::Error },
    #[error("cannot start the successor: {0}")]
    Spawn(io::Error),
    #[error("successor {pid} could not exec {path}: {error}")]
    ExecFailed {
        pid: i32,
        path: PathBuf,
        error: io::Error,
    },
    #[error("successor {pid} failed: {message} ({status})")]
    Reported {
        pid: i32,
        message: String,
        status: String,
    },
    #[error("successor {pid} exited before it was ready ({status})")]
    Exited { pid: i32, status: String },
    #[error("successor {pid} closed the readiness channel without saying ready ({status})")]
    Closed { pid: i32, status: String },
    #[error("successor {pid} said nothing within {timeout:?}; killed it ({status})")]
    Timeout {
        pid: i32,
        timeout: Duration,
        status: String,
    },
    #[error("successor {pid} sent an unexpected message {message:?}; killed it ({status})")]
    Garbage {
        pid: i32,
        message: String,
        status: String,
    },
    #[error("handoff channel: {0}")]
    Channel(io::Error),
    #[error("the service is stopping")]
    Stopping,
}

/// A started successor that said it is ready.
#[derive(Debug)]
pub struct Successor {
    pub child: Child,
    pub channel: Arc<Channel>,
    pub ready_after: Duration,
}

impl Successor {
    /// The successor's pid.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }
}

/// Everything needed to start a successor.
pub struct Spawn<'a> {
    pub exe: &'a Path,
    pub args: &'a [OsString],
    pub listeners: &'a [Listener],
    pub control: Option<BorrowedFd<'a>>,
    /// TLS session-ticket keys (a memfd), passed as `HEIRD_TLS_TICKET_KEYS_FD`.
    pub tls_ticket_keys: Option<BorrowedFd<'a>>,
    pub generation: u64,
    pub timeout: Duration,
}

/// The successor's environment: ours, minus what we set for it.
fn successor_env(s: &Spawn<'_>) -> Vec<CString> {
    let n = s.listeners.len();
    let (names, sources) = listeners::names_and_sources(s.listeners);
    let mut extra: Vec<(String, String)> = vec![
        ("LISTEN_FDS".into(), n.to_string()),
        ("LISTEN_FDNAMES".into(), names),
        (listeners::SOURCES_VAR.into(), sources),
        (GENERATION_VAR.into(), (s.generation + 1).to_string()),
        (HANDOFF_FD_VAR.into(), (3 + n).to_string()),
    ];
    if let Some(soft) = crate::sys::unit_nofile_soft() {
        extra.push((crate::sys::UNIT_NOFILE_VAR.into(), soft.to_string()));
    }
    if s.control.is_some() {
        extra.push((CONTROL_FD_VAR.into(), (3 + n + 1).to_string()));
    }
    if s.tls_ticket_keys.is_some() {
        let at = 3 + n + 1 + usize::from(s.control.is_some());
        extra.push((crate::tls::tickets::KEYS_FD_VAR.into(), at.to_string()));
    }
    // The metrics' shared counters come last.
    if crate::metrics::region::fd_for_successor().is_some() {
        let at = 3 + n + 1 + usize::from(s.control.is_some()) + usize::from(s.tls_ticket_keys.is_some());
        extra.push((crate::metrics::region::FD_VAR.into(), at.to_string()));
    }
    let replaced: Vec<&str> = listeners::LISTEN_VARS
        .iter()
        .copied()
        .chain([
            listeners::SOURCES_VAR,
            GENERATION_VAR,
            HANDOFF_FD_VAR,
            CONTROL_FD_VAR,
            crate::tls::tickets::KEYS_FD_VAR,
            crate::metrics::region::FD_VAR,
            crate::sys::UNIT_NOFILE_VAR,
            "WATCHDOG_PID",
        ])
        .collect();
    let pass_fault = crate::fault::handoff_attempt();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !replaced.iter().any(|r| k.as_bytes() == r.as_bytes()))
        .filter(|(k, _)| pass_fault || k.as_bytes() != b"HEIRD_FAULT")
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    env.extend(
        extra
            .into_iter()
            .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()),
    );
    env
}

/// Starts the successor and waits for `ready`. On any failure (and when this future is
/// dropped before it finishes) the successor is killed and reaped. When `cancelled` resolves
/// first (a stop), the successor is stopped gently (SIGTERM, up to `grace`) and reaped.
pub async fn start(
    s: Spawn<'_>,
    cancelled: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> Result<Successor, HandoffError> {
    let t0 = std::time::Instant::now();
    let (mut child, pid, ours) = spawn(&s)?;
    info!(pid, generation = s.generation + 1, exe = %s.exe.display(), "successor started");
    crate::fault::point_with_peer(crate::fault::Step::SuccessorSpawned, pid as u32);
    let channel = Channel::new(ours).map_err(HandoffError::Channel)?;
    let msg = first_message(&mut child, pid, &channel, cancelled, grace, s.timeout).await?;
    judge(&msg, child, pid, channel, s.exe, t0).await
}

/// Forks and execs the successor (see the module doc), held by a [`Child`] from the start;
/// with its pid and our end of the handoff channel.
fn spawn(s: &Spawn<'_>) -> Result<(Child, i32, OwnedFd), HandoffError> {
    std::fs::metadata(s.exe).map_err(|error| HandoffError::BinaryGone {
        path: s.exe.to_path_buf(),
        error,
    })?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| HandoffError::Spawn(e.into()))?;
    let env = successor_env(s);
    let mut own_pid = vec!["LISTEN_PID"];
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        own_pid.push("WATCHDOG_PID");
    }
    let path = CString::new(s.exe.as_os_str().as_bytes())
        .map_err(|_| HandoffError::Spawn(io::Error::other("binary path contains a NUL byte")))?;
    let mut argv = vec![path.clone()];
    argv.extend(s.args.iter().filter_map(|a| CString::new(a.as_bytes()).ok()));
    let pid = {
        let mut plan = sys::ExecPlan::new(&path, argv, env, &own_pid);
        let mut fds: Vec<BorrowedFd<'_>> = s.listeners.iter().map(|l| l.fd.as_fd()).collect();
        fds.push(theirs.as_fd());
        if let Some(c) = s.control {
            fds.push(c);
        }
        if let Some(k) = s.tls_ticket_keys {
            fds.push(k);
        }
        if let Some(m) = crate::metrics::region::fd_for_successor() {
            fds.push(m);
        }
        sys::spawn(&mut plan, &fds, theirs.as_fd()).map_err(HandoffError::Spawn)?
    };
    drop(theirs);
    match Child::new(pid) {
        Ok(c) => Ok((c, pid, ours)),
        Err(e) => {
            // No pidfd: kill and reap by pid, blocking (rare: fd exhaustion).
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            Err(HandoffError::Spawn(io::Error::other(format!(
                "pidfd_open({pid}): {e}"
            ))))
        }
    }
}

/// The successor's first message on the channel; an error when it exits without one, the
/// channel fails or closes, the time is up, or `cancelled` resolves first.
async fn first_message(
    child: &mut Child,
    pid: i32,
    channel: &Channel,
    cancelled: impl std::future::Future<Output = ()>,
    grace: Duration,
    timeout: Duration,
) -> Result<Vec<u8>, HandoffError> {
    let outcome = tokio::select! {
        // A message that is there wins over a timeout that expired at the same time (e.g. when
        // this process was stopped for a while).
        biased;
        msg = channel.recv() => Some(msg),
        _ = cancelled => {
            let status = child.stop(grace).await;
            info!(pid, %status, "successor stopped before it was ready");
            return Err(HandoffError::Stopping);
        }
        // It exited: it may have said why on the channel first (a config error, say).
        _ = child.exited() => match tokio::time::timeout(Duration::from_millis(200), channel.recv()).await {
            Ok(Ok(Some(msg))) => Some(Ok(Some(msg))),
            _ => None,
        },
        // Time is up; a last look at the channel first (a process that was stopped past the
        // timeout wakes with the message already waiting, before the reactor has seen it).
        _ = tokio::time::sleep(timeout) => match tokio::time::timeout(Duration::from_millis(100), channel.recv()).await {
            Ok(Ok(Some(msg))) => Some(Ok(Some(msg))),
            _ => {
                let status = child.kill().await;
                return Err(HandoffError::Timeout { pid, timeout, status });
            }
        },
    };
    match outcome {
        Some(Ok(Some(msg))) => Ok(msg),
        Some(Ok(None)) => {
            let _ = tokio::time::timeout(Duration::from_millis(500), child.exited()).await;
            let status = child.kill().await;
            Err(HandoffError::Closed { pid, status })
        }
        Some(Err(e)) => {
            let _ = child.kill().await;
            Err(HandoffError::Channel(e))
        }
        None => {
            let status = child.kill().await;
            Err(HandoffError::Exited { pid, status })
        }
    }
}

/// What the successor's first message says: `ready` (from it, not from another pid) makes it
/// a [`Successor`]; anything else is the handoff's error, with the successor killed and reaped.
async fn judge(
    msg: &[u8],
    mut child: Child,
    pid: i32,
    channel: Channel,
    exe: &Path,
    t0: std::time::Instant,
) -> Result<Successor, HandoffError> {
    match ChannelMsg::parse(msg) {
        Some(ChannelMsg::Ready { pid: said }) if said.is_none_or(|p| p as i32 == pid) => {
            let ready_after = t0.elapsed();
            info!(pid, ready_ms = ready_after.as_secs_f64() * 1e3, "successor ready");
            Ok(Successor {
                child,
                channel: Arc::new(channel),
                ready_after,
            })
        }
        Some(ChannelMsg::ExecFailed(errno)) => {
            let _ = child.kill().await;
            Err(HandoffError::ExecFailed {
                pid,
                path: exe.to_path_buf(),
                error: io::Error::from_raw_os_error(errno),
            })
        }
        Some(ChannelMsg::Error(message)) => {
            // It is exiting on its own; give it a moment, then make sure.
            let _ = tokio::time::timeout(Duration::from_secs(2), child.exited()).await;
            let status = child.kill().await;
            Err(HandoffError::Reported { pid, message, status })
        }
        _ => {
            let status = child.kill().await;
            Err(HandoffError::Garbage {
                pid,
                message: String::from_utf8_lossy(msg).chars().take(200).collect(),
                status,
            })
        }
    }
}

/// The successor's side: tells the parent we are ready.
pub async fn announce_ready(channel: &Channel) -> io::Result<()> {
    channel
        .send(&ChannelMsg::Ready {
            pid: Some(std::process::id()),
        })
        .await
}

/// The path to exec for a successor, resolved once at startup from `argv[0]` (not
/// `/proc/self/exe`): after a package upgrade replaced the file, the new file must run.
pub fn resolve_exe() -> io::Result<PathBuf> {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let p = PathBuf::from(&arg0);
    if arg0.as_bytes().contains(&b'/') {
        return if p.is_absolute() {
            Ok(p)
        } else {
            Ok(std::env::current_dir()?.join(p))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join(&p);
            if is_executable(&cand) {
                return if cand.is_absolute() {
                    Ok(cand)
                } else {
                    Ok(std::env::current_dir()?.join(cand))
                };
            }
        }
    }
    std::env::current_exe()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
