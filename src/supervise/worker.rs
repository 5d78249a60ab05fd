//! Starting a worker: our own binary, re-executed with the supervisor's sockets at 3.. (as
//! systemd's socket activation passes them), the control socket after them, and our notify
//! socket as its `NOTIFY_SOCKET`.

use std::ffi::{CString, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::fcntl::OFlag;

use crate::inherit::{CONTROL_FD_VAR, GENERATION_VAR, HANDOFF_FD_VAR};
use crate::listeners::{self, LISTEN_VARS, Listener, SOURCES_VAR};
use crate::sys;

/// Set in a worker's environment (to the supervisor's pid): the process is supervised already
/// and serves instead of supervising again. Its successors inherit it.
pub const SUPERVISED_VAR: &str = "HEIRD_SUPERVISED";

/// What every worker is started with.
pub struct Plan<'a> {
    pub exe: &'a Path,
    pub args: &'a [OsString],
    pub listeners: &'a [Listener],
    pub control: Option<BorrowedFd<'a>>,
    /// Our notify socket's path.
    pub notify: &'a Path,
}

/// The worker's environment: ours, minus what we set for it.
fn worker_env(p: &Plan<'_>) -> Vec<CString> {
    let n = p.listeners.len();
    // Named and marked as a successor's are: the worker takes them as it would from a
    // predecessor (a bound socket stays `bound`, one from systemd stays `systemd`).
    let (names, sources) = listeners::names_and_sources(p.listeners);
    let mut extra: Vec<(String, OsString)> = vec![
        ("LISTEN_FDS".into(), n.to_string().into()),
        ("LISTEN_FDNAMES".into(), names.into()),
        (SOURCES_VAR.into(), sources.into()),
        ("NOTIFY_SOCKET".into(), p.notify.as_os_str().to_owned()),
        // The supervisor keeps no fd store: a worker closes what it would have stored.
        ("FDSTORE".into(), "0".into()),
        (SUPERVISED_VAR.into(), std::process::id().to_string().into()),
    ];
    if p.control.is_some() {
        extra.push((CONTROL_FD_VAR.into(), (3 + n).to_string().into()));
    }
    // The metrics' shared counters, which the supervisor holds for every worker.
    if crate::metrics::region::fd_for_successor().is_some() {
        let at = 3 + n + usize::from(p.control.is_some());
        extra.push((crate::metrics::region::FD_VAR.into(), at.to_string().into()));
    }
    let replaced: Vec<&str> = LISTEN_VARS
        .iter()
        .copied()
        .chain([
            SOURCES_VAR,
            GENERATION_VAR,
            HANDOFF_FD_VAR,
            CONTROL_FD_VAR,
            crate::tls::tickets::KEYS_FD_VAR,
            crate::metrics::region::FD_VAR,
            "NOTIFY_SOCKET",
            "FDSTORE",
            "WATCHDOG_PID",
            SUPERVISED_VAR,
        ])
        .collect();
    std::env::vars_os()
        .filter(|(k, _)| !replaced.iter().any(|r| k.as_bytes() == r.as_bytes()))
        .chain(extra.into_iter().map(|(k, v)| (OsString::from(k), v)))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect()
}

/// Forks and execs a worker; returns its pid once the exec happened (or its error).
pub fn spawn(p: &Plan<'_>) -> io::Result<i32> {
    let path = CString::new(p.exe.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("binary path contains a NUL byte"))?;
    let mut argv = vec![path.clone()];
    argv.extend(p.args.iter().filter_map(|a| CString::new(a.as_bytes()).ok()));
    let mut own_pid = vec!["LISTEN_PID"];
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        own_pid.push("WATCHDOG_PID");
    }
    let mut plan = sys::ExecPlan::new(&path, argv, worker_env(p), &own_pid);
    let mut fds: Vec<BorrowedFd<'_>> = p.listeners.iter().map(|l| l.fd.as_fd()).collect();
    if let Some(c) = p.control {
        fds.push(c);
    }
    if let Some(m) = crate::metrics::region::fd_for_successor() {
        fds.push(m);
    }
    // The exec report: not among the passed fds, so exec closes it (CLOEXEC) and we read EOF;
    // a failed exec writes `exec-failed <errno>` to it first.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let pid = sys::spawn(&mut plan, &fds, write.as_fd())?;
    drop(write);
    let mut report = String::new();
    std::fs::File::from(read).read_to_string(&mut report)?;
    match report.strip_prefix("exec-failed ") {
        None => Ok(pid),
        Some(errno) => {
            // The child has exited (127); the reaper collects it.
            let errno = errno.trim().parse().unwrap_or(0);
            Err(io::Error::new(
                io::Error::from_raw_os_error(errno).kind(),
                format!(
                    "cannot exec {}: {}",
                    p.exe.display(),
                    io::Error::from_raw_os_error(errno)
                ),
            ))
        }
    }
}
