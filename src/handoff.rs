//! The handoff: start a successor with our listening fds at 3.., wait until it says it is
//! ready (or fails), and reap it when it fails.
//!
//! Parent and successor talk over a `SOCK_SEQPACKET` socket pair created at spawn (the
//! "channel", fd `3 + n` in the successor, named by `HEIRD_HANDOFF_FD`). One message per
//! datagram:
//! - successor → parent: `ready <pid>`, or `error <text>` when it cannot start (for example a
//!   config error), or `exec-failed <errno>` from the forked child when exec fails;
//! - parent → successor: `primary` once systemd has processed `MAINPID=` (after the barrier);
//!   the successor answers `primary-ack`, and the parent does not exit before that answer (or
//!   the successor's death, or `handoff_timeout`), so a successor that dies at once is noticed.
//!   Seqpacket keeps message boundaries and can carry fds (`SCM_RIGHTS`), which a later step
//!   uses to move idle connections over the same channel.
//!
//! When the channel reaches EOF before `primary`, the parent is gone: the successor carries on
//! as the primary.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, send, socketpair};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::info;

use crate::listeners::{self, Listener};
use crate::sys;

/// Variables heird sets for its successor (and unsets when it starts).
pub const HANDOFF_FD_VAR: &str = "HEIRD_HANDOFF_FD";
pub const GENERATION_VAR: &str = "HEIRD_GENERATION";
pub const CONTROL_FD_VAR: &str = "HEIRD_CONTROL_FD";

/// Largest message on the channel (a moved connection carries its unparsed bytes).
pub const MAX_MSG: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("binary {path} is gone: {source}")]
    BinaryGone { path: PathBuf, source: io::Error },
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
    #[error("a handoff is already running")]
    Busy,
    #[error("the service is stopping")]
    Stopping,
}

/// One end of the handoff channel, usable from async code.
#[derive(Debug)]
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Wraps a connected seqpacket socket (made nonblocking here).
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let fl = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        Ok(Channel {
            fd: sys::async_fd(fd, Interest::READABLE | Interest::WRITABLE)?,
        })
    }

    /// Receives one message; `None` at EOF (the other process closed its end or exited).
    pub async fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.recv_with_fd().await?.map(|(m, _)| m))
    }

    /// Receives one message and the fd that came with it, if any; `None` at EOF.
    pub async fn recv_with_fd(&self) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MSG];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| sys::recv_with_fd(fd.get_ref().as_fd(), &mut buf)) {
                Ok(Ok((0, _))) => return Ok(None),
                Ok(Ok((n, fd))) => {
                    buf.truncate(n);
                    return Ok(Some((buf, fd)));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one message.
    pub async fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.send_with_fd(msg, None).await
    }

    /// Sends one message, with `fd` attached (SCM_RIGHTS) when given.
    pub async fn send_with_fd(&self, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        if msg.len() > MAX_MSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "handoff message too long",
            ));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|sock| sys::send_with_fd(sock.get_ref().as_fd(), msg, fd)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

/// What a successor inherits from its parent, read from the environment at start.
#[derive(Debug)]
pub struct Inherited {
    /// 1 for a process started by systemd or by hand; parent's + 1 for a successor.
    pub generation: u64,
    /// The channel to the parent, when this process is a successor.
    pub channel: Option<OwnedFd>,
    /// The control socket's listening fd, when the parent passed it.
    pub control: Option<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("{var}={value:?} is not a valid fd number")]
    BadFd { var: &'static str, value: String },
    #[error("{var}={value:?} is not a valid generation")]
    BadGeneration { var: &'static str, value: String },
    #[error("{var}={fd}: fd is not open")]
    NotOpen { var: &'static str, fd: RawFd },
    #[error("{var}={fd}: {source}")]
    Io {
        var: &'static str,
        fd: RawFd,
        source: io::Error,
    },
}

impl Inherited {
    /// Reads and unsets `HEIRD_GENERATION`, `HEIRD_HANDOFF_FD`, `HEIRD_CONTROL_FD`.
    /// Must run before any thread exists.
    pub fn from_env() -> Result<Inherited, InheritError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let gen_s = var(GENERATION_VAR);
        let chan_s = var(HANDOFF_FD_VAR);
        let ctl_s = var(CONTROL_FD_VAR);
        sys::remove_env(&[GENERATION_VAR, HANDOFF_FD_VAR, CONTROL_FD_VAR]).map_err(|source| {
            InheritError::Io {
                var: GENERATION_VAR,
                fd: -1,
                source,
            }
        })?;
        let generation = match gen_s {
            None => 1,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|g| *g >= 1)
                .ok_or(InheritError::BadGeneration {
                    var: GENERATION_VAR,
                    value: v,
                })?,
        };
        let take = |var: &'static str, value: Option<String>| -> Result<Option<OwnedFd>, InheritError> {
            let Some(v) = value else { return Ok(None) };
            let fd: RawFd = v
                .parse()
                .ok()
                .filter(|fd| *fd >= 3)
                .ok_or_else(|| InheritError::BadFd {
                    var,
                    value: v.clone(),
                })?;
            let owned = sys::take_inherited_fd(fd)
                .map_err(|source| InheritError::Io { var, fd, source })?
                .ok_or(InheritError::NotOpen { var, fd })?;
            use nix::fcntl::{FcntlArg, FdFlag, fcntl};
            fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| InheritError::Io {
                var,
                fd,
                source: e.into(),
            })?;
            Ok(Some(owned))
        };
        Ok(Inherited {
            generation,
            channel: take(HANDOFF_FD_VAR, chan_s)?,
            control: take(CONTROL_FD_VAR, ctl_s)?,
        })
    }

    /// Reports a startup failure to the parent (best effort, blocking, before any runtime).
    pub fn report_error(&self, message: &str) {
        if let Some(ch) = &self.channel {
            let msg = format!("error {message}");
            let bytes = &msg.as_bytes()[..msg.len().min(MAX_MSG)];
            let _ = send(ch.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL);
        }
    }
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

/// A started successor that said it is ready.
#[derive(Debug)]
pub struct Successor {
    pub pid: i32,
    pub channel: Arc<Channel>,
    pub ready_after: Duration,
    /// Readable once the successor has exited.
    pub pidfd: AsyncFd<OwnedFd>,
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

/// Starts the successor and waits for `ready`. On any failure the successor is killed (if
/// still running) and reaped before this returns.
pub async fn start(s: Spawn<'_>) -> Result<Successor, HandoffError> {
    let t0 = std::time::Instant::now();
    std::fs::metadata(s.exe).map_err(|source| HandoffError::BinaryGone {
        path: s.exe.to_path_buf(),
        source,
    })?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| HandoffError::Spawn(e.into()))?;

    let n = s.listeners.len();
    let (names, sources) = listeners::names_and_sources(s.listeners);
    let mut extra: Vec<(String, String)> = vec![
        ("LISTEN_FDS".into(), n.to_string()),
        ("LISTEN_FDNAMES".into(), names),
        (listeners::SOURCES_VAR.into(), sources),
        (GENERATION_VAR.into(), (s.generation + 1).to_string()),
        (HANDOFF_FD_VAR.into(), (3 + n).to_string()),
    ];
    if s.control.is_some() {
        extra.push((CONTROL_FD_VAR.into(), (3 + n + 1).to_string()));
    }
    if s.tls_ticket_keys.is_some() {
        let at = 3 + n + 1 + usize::from(s.control.is_some());
        extra.push((crate::tls::tickets::KEYS_FD_VAR.into(), at.to_string()));
    }
    let mut own_pid = vec!["LISTEN_PID"];
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        own_pid.push("WATCHDOG_PID");
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
        sys::spawn(&mut plan, &fds, theirs.as_fd()).map_err(HandoffError::Spawn)?
    };
    drop(theirs);
    info!(pid, generation = s.generation + 1, exe = %s.exe.display(), "successor started");
    crate::fault::point_with_peer(crate::fault::Step::SuccessorSpawned, pid as u32);

    let pidfd = match sys::pidfd_open(pid).and_then(|fd| sys::async_fd(fd, Interest::READABLE)) {
        Ok(fd) => fd,
        Err(e) => {
            let status = kill_and_reap_blocking(pid);
            return Err(HandoffError::Spawn(io::Error::other(format!(
                "pidfd_open({pid}): {e} ({status})"
            ))));
        }
    };
    let channel = Channel::new(ours).map_err(HandoffError::Channel)?;

    let outcome = tokio::select! {
        // A message that is there wins over a timeout that expired at the same time (e.g. when
        // this process was stopped for a while).
        biased;
        msg = channel.recv() => Some(msg),
        // It exited: it may have said why on the channel first (a config error, say).
        _ = pidfd.readable() => match tokio::time::timeout(Duration::from_millis(200), channel.recv()).await {
            Ok(Ok(Some(msg))) => Some(Ok(Some(msg))),
            _ => None,
        },
        // Time is up; a last look at the channel first (a process that was stopped past the
        // timeout wakes with the message already waiting, before the reactor has seen it).
        _ = tokio::time::sleep(s.timeout) => match tokio::time::timeout(Duration::from_millis(100), channel.recv()).await {
            Ok(Ok(Some(msg))) => Some(Ok(Some(msg))),
            _ => {
                let status = kill_and_reap(pid, &pidfd).await;
                return Err(HandoffError::Timeout { pid, timeout: s.timeout, status });
            }
        },
    };
    match outcome {
        Some(Ok(Some(msg))) => {
            let text = String::from_utf8_lossy(&msg).trim_end().to_string();
            if text == format!("ready {pid}") || text == "ready" {
                let ready_after = t0.elapsed();
                info!(pid, ready_ms = ready_after.as_secs_f64() * 1e3, "successor ready");
                return Ok(Successor {
                    pid,
                    channel: Arc::new(channel),
                    ready_after,
                    pidfd,
                });
            }
            if let Some(errno) = text.strip_prefix("exec-failed ") {
                let error = io::Error::from_raw_os_error(errno.trim().parse().unwrap_or(libc::ENOEXEC));
                let _ = kill_and_reap(pid, &pidfd).await;
                return Err(HandoffError::ExecFailed {
                    pid,
                    path: s.exe.to_path_buf(),
                    error,
                });
            }
            if let Some(message) = text.strip_prefix("error ") {
                // It is exiting on its own; give it a moment, then make sure.
                let _ = tokio::time::timeout(Duration::from_secs(2), pidfd.readable()).await;
                let status = kill_and_reap(pid, &pidfd).await;
                return Err(HandoffError::Reported {
                    pid,
                    message: message.to_string(),
                    status,
                });
            }
            let status = kill_and_reap(pid, &pidfd).await;
            Err(HandoffError::Garbage {
                pid,
                message: text.chars().take(200).collect(),
                status,
            })
        }
        Some(Ok(None)) => {
            let _ = tokio::time::timeout(Duration::from_millis(500), pidfd.readable()).await;
            let status = kill_and_reap(pid, &pidfd).await;
            Err(HandoffError::Closed { pid, status })
        }
        Some(Err(e)) => {
            let _ = kill_and_reap(pid, &pidfd).await;
            Err(HandoffError::Channel(e))
        }
        None => {
            let status = kill_and_reap(pid, &pidfd).await;
            Err(HandoffError::Exited { pid, status })
        }
    }
}

/// SIGKILLs `pid` if it still runs, waits for it to exit, reaps it; returns its status text.
async fn kill_and_reap(pid: i32, pidfd: &AsyncFd<OwnedFd>) -> String {
    if let Some(status) = try_reap(pid) {
        return status;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), pidfd.readable()).await;
    try_reap(pid).unwrap_or_else(|| kill_and_reap_blocking(pid))
}

fn try_reap(pid: i32) -> Option<String> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(st) => Some(describe(st)),
        Err(e) => Some(format!("waitpid: {e}")),
    }
}

fn kill_and_reap_blocking(pid: i32) -> String {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    match waitpid(Pid::from_raw(pid), None) {
        Ok(st) => describe(st),
        Err(e) => format!("waitpid: {e}"),
    }
}

fn describe(st: WaitStatus) -> String {
    match st {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "killed by {}{}",
                sig.as_str(),
                if core { ", core dumped" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}

/// The successor's side: tells the parent we are ready.
pub async fn announce_ready(channel: &Channel) -> io::Result<()> {
    channel
        .send(format!("ready {}", std::process::id()).as_bytes())
        .await
}

/// Reaps a successor that exited after the handover (it is still our child). Returns whether
/// it exited cleanly (status 0: it stopped or handed over in turn, as it should) and a
/// description of its status.
pub async fn reap_exited(successor: &Successor) -> (bool, String) {
    let status = kill_and_reap(successor.pid, &successor.pidfd).await;
    (status == "exit status 0", status)
}
