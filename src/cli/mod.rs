//! The client commands for any binary built on heird, so that its unit has the same
//! `ExecReload=` and `ExecStop=` as heird's own:
//! - `reload`: ask the running service for a handoff over its control socket and wait for the
//!   outcome (exit 0, or 1 with the reason on stderr);
//! - `stop`: SIGTERM the main process and wait until it has drained and exited: the
//!   `ExecStop=` that systemd needs, since it SIGKILLs a main pid it did not fork itself.
//!
//! With clap (feature `clap`), embed [`ReloadArgs`] and [`StopArgs`] in your own subcommands and call
//! [`reload_command`] / [`stop_command`]; without, [`dispatch`] does it:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     if let Some(code) = heird::cli::dispatch(std::env::args_os()) {
//!         return code; // `myapp reload …` or `myapp stop …`
//!     }
//!     // … serve
//! #   std::process::ExitCode::SUCCESS
//! }
//! ```

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use std::process::ExitCode;

use crate::control;
pub use crate::wire::ControlAnswer;

mod dispatch;
use crate::wire::RELOAD_REQUEST;
pub use dispatch::{Dispatch, dispatch};

/// How long `reload` and `stop` wait by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `reload`'s arguments.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct ReloadArgs {
    /// Main pid of the service (defaults to $MAINPID). Used to find its control socket.
    #[cfg_attr(feature = "clap", arg(long))]
    pub pid: Option<u32>,
    /// Control socket of the service (defaults to $RUNTIME_DIRECTORY/control.sock).
    #[cfg_attr(feature = "clap", arg(long, value_name = "PATH"))]
    pub socket: Option<PathBuf>,
    /// Pid file naming the service (its `--pid-file`), instead of --pid.
    #[cfg_attr(
        feature = "clap",
        arg(long = "pid-file", value_name = "PATH", conflicts_with = "pid")
    )]
    pub pid_file: Option<PathBuf>,
    /// How long to wait for the outcome.
    #[cfg_attr(feature = "clap", arg(long, default_value = "60s", value_parser = parse_duration_arg))]
    pub timeout: Duration,
}

impl Default for ReloadArgs {
    fn default() -> Self {
        ReloadArgs {
            pid: None,
            socket: None,
            pid_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `stop`'s arguments.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct StopArgs {
    /// Pid to stop (defaults to $MAINPID).
    #[cfg_attr(feature = "clap", arg(long))]
    pub pid: Option<u32>,
    /// Pid file naming the service (its `--pid-file`), instead of --pid.
    #[cfg_attr(
        feature = "clap",
        arg(long = "pid-file", value_name = "PATH", conflicts_with = "pid")
    )]
    pub pid_file: Option<PathBuf>,
    /// How long to wait for the exit before giving up (systemd's TimeoutStopSec still applies).
    #[cfg_attr(feature = "clap", arg(long, default_value = "60s", value_parser = parse_duration_arg))]
    pub timeout: Duration,
}

impl Default for StopArgs {
    fn default() -> Self {
        StopArgs {
            pid: None,
            pid_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| e.to_string())
}
/// Why a client could not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// Each variant is documented by its message.
#[allow(missing_docs)]
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
    #[error(
        "no heird service of this user runs here: no live control socket in {dir}; pass --socket PATH or --pid PID, or run under systemd (RUNTIME_DIRECTORY)"
    )]
    NoneRunning { dir: PathBuf },
    #[error(
        "{} heird services of this user run here ({}); pass --socket PATH or --pid PID to pick one",
        .sockets.len(),
        .sockets.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous { sockets: Vec<PathBuf> },
    #[error("pid file {path}: {error} (is the service running?)")]
    PidFile { path: PathBuf, error: io::Error },
}

impl ClientError {
    /// The exit status for this error: 2 (a usage error) when the command line must say which
    /// service, 78 (EX_CONFIG) when the pid it named has no control socket, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NoTarget
            | ClientError::NoneRunning { .. }
            | ClientError::Ambiguous { .. }
            | ClientError::BadPid(_) => EX_USAGE,
            ClientError::NoSocket { .. } => EX_CONFIG,
            _ => 1,
        }
    }
}

/// The control socket to talk to: `explicit`, else `$RUNTIME_DIRECTORY/control.sock` (under
/// systemd, `ExecReload=` runs with the service's environment), else the socket that process
/// `pid` (or `$MAINPID`) holds, else (started from a shell, no pid given) the one live control
/// socket in our private directory (`$XDG_RUNTIME_DIR/heird` or `/tmp/heird-<uid>`): none there
/// is [`ClientError::NoneRunning`], several [`ClientError::Ambiguous`].
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
    let Some(pid) = main_pid(pid) else {
        return match control::live_sockets_in_private_dir() {
            Ok((dir, live)) => match <[PathBuf; 1]>::try_from(live) {
                Ok([one]) => Ok(one),
                Err(live) if live.is_empty() => Err(ClientError::NoneRunning { dir }),
                Err(sockets) => Err(ClientError::Ambiguous { sockets }),
            },
            // A private directory that is not ours is not looked into.
            Err(_) => Err(ClientError::NoTarget),
        };
    };
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

const EX_CONFIG: u8 = 78;

/// `pid`, else the pid that `pid_file` names.
fn pid_from_file(pid: Option<u32>, pid_file: Option<&Path>) -> Result<Option<u32>, ClientError> {
    match (pid, pid_file) {
        (Some(p), _) => Ok(Some(p)),
        (None, Some(path)) => crate::pidfile::read(path)
            .map(Some)
            .map_err(|error| ClientError::PidFile {
                path: path.to_path_buf(),
                error,
            }),
        (None, None) => Ok(None),
    }
}
/// A usage error (a bad or missing argument), as clap exits.
const EX_USAGE: u8 = 2;

/// Prints `error: <message>` and returns `code`.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// `reload`: exit 0 when the handoff succeeded; 1 with the reason on stderr when it failed;
/// 2 when the command line must say which service (none or several found); 78 when the pid it
/// names has no control socket.
pub fn reload_command(args: ReloadArgs) -> ExitCode {
    let pid = match pid_from_file(args.pid, args.pid_file.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), e),
    };
    let path = match find_socket(args.socket.clone(), pid) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(reload(&path, args.timeout)) {
        Ok(ControlAnswer::Ok { pid, generation }) => {
            println!("reloaded: pid={pid} generation={generation}");
            ExitCode::SUCCESS
        }
        Ok(ControlAnswer::Failed(reason) | ControlAnswer::Error(reason) | ControlAnswer::Retry(reason)) => {
            fail(1, format!("reload failed: {reason}"))
        }
        Err(e) => fail(1, e),
    }
}

/// `stop`: exit 0 once the process is gone (or when there is no main process: `$MAINPID` empty,
/// or unset under systemd, which leaves it unset once the main process has exited);
/// 1 when it did not exit within the timeout; 2 without a pid, or with a bad one.
pub fn stop_command(args: StopArgs) -> ExitCode {
    let pid = match pid_from_file(args.pid, args.pid_file.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), e),
    };
    let pid = match (pid, std::env::var("MAINPID")) {
        (Some(p), _) => p,
        (None, Ok(v)) if v.trim().is_empty() || v.trim() == "0" => {
            // ExecStop= with no main process left (it exited or crashed): nothing to stop.
            println!("no main process; nothing to stop");
            return ExitCode::SUCCESS;
        }
        (None, Err(_)) if std::env::var_os("INVOCATION_ID").is_some() => {
            // Run by systemd (ExecStop=) after the main process exited: systemd leaves MAINPID
            // unset then. Nothing to stop.
            println!("no main process; nothing to stop");
            return ExitCode::SUCCESS;
        }
        (None, _) => match main_pid(None) {
            Some(p) => p,
            None => return fail(EX_USAGE, "no pid: pass --pid or set $MAINPID"),
        },
    };
    let raw = match checked_pid(u64::from(pid)) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), e),
    };
    match stop_and_wait(raw, args.timeout) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => fail(1, format!("pid {pid} did not exit within {:?}", args.timeout)),
        Err(e) => fail(1, format!("stopping pid {pid}: {e}")),
    }
}
