//! The client side, for any binary built on heird: `reload` (ask the running service for a
//! handoff over its control socket and wait for the outcome) and `stop` (SIGTERM the main
//! process and wait until it has drained and exited: the `ExecStop=` that systemd needs, since
//! it SIGKILLs a main pid it did not fork itself at once).

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::control;
use crate::wire::{ControlAnswer, RELOAD_REQUEST};

/// Why a client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control socket: pass --socket PATH or --pid PID, or run under systemd (RUNTIME_DIRECTORY)")]
    NoTarget,
    #[error("pid {pid} has no control socket (is it a heird process of this user?)")]
    NoSocket { pid: u32 },
    #[error("cannot read the open files of pid {pid}: {error}")]
    Proc { pid: u32, error: io::Error },
    #[error("pid {0} is out of range")]
    BadPid(u64),
    #[error("cannot connect to the control socket {path}: {error}")]
    Connect { path: PathBuf, error: io::Error },
    #[error("control socket {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("no answer from the control socket {path} within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("the service closed the control connection without an answer")]
    NoAnswer,
}

/// The control socket to talk to: `explicit`, else `$RUNTIME_DIRECTORY/control.sock` (under
/// systemd, `ExecReload=` runs with the service's environment), else the socket that process
/// `pid` (or `$MAINPID`) holds.
pub fn find_socket(explicit: Option<PathBuf>, pid: Option<u32>) -> Result<PathBuf, ClientError> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        let first = dir
            .as_encoded_bytes()
            .split(|b| *b == b':')
            .next()
            .unwrap_or_default();
        return Ok(Path::new(std::str::from_utf8(first).unwrap_or_default()).join(control::SOCKET_NAME));
    }
    let pid = main_pid(pid).ok_or(ClientError::NoTarget)?;
    match control::path_of_pid(pid) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(ClientError::NoSocket { pid }),
        Err(error) => Err(ClientError::Proc { pid, error }),
    }
}

/// `pid`, else `$MAINPID`; `None` when neither names a process (systemd sets `MAINPID` to an
/// empty value when the service has no main process).
pub fn main_pid(pid: Option<u32>) -> Option<u32> {
    pid.or_else(|| std::env::var("MAINPID").ok()?.trim().parse().ok())
        .filter(|p| *p > 0)
}

/// Asks for a handoff and returns the outcome. A `retry` answer (the request reached a process
/// that had just handed over) is asked again, until `timeout`: the successor answers.
pub async fn reload(path: &Path, timeout: Duration) -> Result<ControlAnswer, ClientError> {
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::Timeout {
        path: path.to_path_buf(),
        timeout,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::time::timeout(left, ask(path))
            .await
            .map_err(|_| timed_out())??;
        match answer {
            ControlAnswer::Retry(_) if Instant::now() + Duration::from_millis(50) < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ControlAnswer::Retry(_) => return Err(timed_out()),
            other => return Ok(other),
        }
    }
}

async fn ask(path: &Path) -> Result<ControlAnswer, ClientError> {
    let io = |error| ClientError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|error| ClientError::Connect {
            path: path.to_path_buf(),
            error,
        })?;
    s.write_all(format!("{RELOAD_REQUEST}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut line = String::new();
    BufReader::new(s)
        .take(64 * 1024)
        .read_line(&mut line)
        .await
        .map_err(io)?;
    if line.is_empty() {
        return Err(ClientError::NoAnswer);
    }
    Ok(ControlAnswer::parse(line.trim_end()))
}

/// A pid from the command line as the kernel's type; refuses what would not name one process
/// (`kill(-1, …)` would signal every process we may signal).
pub fn checked_pid(pid: u64) -> Result<i32, ClientError> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ClientError::BadPid(pid))
}

/// Sends SIGTERM to `pid` and waits until it has exited (`heird stop`, used as `ExecStop=`:
/// systemd 252/257 SIGKILL a main pid they did not fork at once, so the unit waits here
/// instead). Returns false when the process is still running after `timeout`.
pub fn stop_and_wait(pid: i32, timeout: Duration) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::{Signal, kill};
    let raw = pid;
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
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
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
