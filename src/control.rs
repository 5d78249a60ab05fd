//! The control socket that `heird reload` uses to ask for a handoff and read its outcome.
//!
//! A Unix stream socket at `$RUNTIME_DIRECTORY/control.sock`, mode 0600, so that only the
//! service's user (and root) can connect; the peer's uid is checked as well. The listening fd
//! is passed to each successor, so the socket file never changes hands.
//!
//! Protocol, one line each way: the client sends `reload\n`; the server answers once the
//! handoff is over with `ok pid=<new> generation=<g>\n` or `failed <reason>\n`. Anything else
//! gets `error <reason>\n`. A client that says nothing within 2 s is dropped. A request that
//! reaches a process which has just handed over gets `retry <reason>\n`: the client asks
//! again and reaches the successor.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::drain::Drain;
use crate::wire::{ControlAnswer, RELOAD_REQUEST};

/// Why a request is told to retry: this process left its main loop.
const GONE: &str = "this process no longer takes requests";
use crate::listeners::bind_unix;

/// File name of the control socket inside `$RUNTIME_DIRECTORY` (one service per directory).
pub const SOCKET_NAME: &str = "control.sock";

/// Where this process binds its control socket when it inherited none:
/// `$RUNTIME_DIRECTORY/control.sock` under systemd; otherwise `control-<pid>.sock` in
/// `$XDG_RUNTIME_DIR/heird/`, else in `/tmp/heird-<uid>/`. The directories outside systemd are
/// created 0700 and refused when they exist with another owner or a wider mode.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) =
        std::env::var_os("RUNTIME_DIRECTORY").and_then(|v| runtime_dir_socket(v.as_encoded_bytes()))
    {
        return Some(p);
    }
    let dir = private_dir()
        .map_err(|e| warn!(error = %e, "no private directory for the control socket"))
        .ok()?;
    Some(dir.join(format!("control-{}.sock", std::process::id())))
}

fn runtime_dir_socket(value: &[u8]) -> Option<PathBuf> {
    let first = value.split(|b| *b == b':').next().filter(|d| !d.is_empty())?;
    let dir = std::str::from_utf8(first).ok()?;
    Some(Path::new(dir).join(SOCKET_NAME))
}

/// `$XDG_RUNTIME_DIR/heird`, else `/tmp/heird-<uid>`: created 0700, or checked to be a
/// directory of ours that nobody else can enter.
pub fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = private_dir_path();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
    check_private(&dir)?;
    Ok(dir)
}

/// `$XDG_RUNTIME_DIR/heird`, else `/tmp/heird-<uid>` (not created).
fn private_dir_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Path::new(&d).join("heird"),
        None => std::env::temp_dir().join(format!("heird-{}", nix::unistd::geteuid().as_raw())),
    }
}

/// Refuses `dir` unless it is a directory of ours that nobody else can enter.
fn check_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} exists but is not a private directory of uid {uid} (owner {}, mode {:o}); refusing it",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Finds the control socket of process `pid` (one of ours): the listening Unix socket among
/// its open fds whose file is named `control.sock` or `control-<pid>.sock`.
pub fn path_of_pid(pid: u32) -> io::Result<Option<PathBuf>> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            inodes.insert(ino.to_string());
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix"))?;
    Ok(table.lines().skip(1).find_map(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (inode, path) = (cols.get(6)?, cols.get(7)?);
        let name = Path::new(path).file_name()?.to_str()?;
        let ours = name == SOCKET_NAME || (name.starts_with("control-") && name.ends_with(".sock"));
        (ours && inodes.contains(*inode)).then(|| PathBuf::from(path))
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {error}")]
    Bind { path: PathBuf, error: io::Error },
    #[error("control socket {path}: {error}")]
    Listen {
        path: PathBuf,
        error: crate::listeners::ListenError,
    },
}

/// A reload request from a client; answer through `reply`.
#[derive(Debug)]
pub struct Request {
    pub reply: oneshot::Sender<String>,
}

/// Binds the control socket at `path` (mode 0600), replacing a stale file nobody listens on.
pub fn bind(path: &Path) -> Result<OwnedFd, ControlError> {
    let l = bind_unix(path, &path.display()).map_err(|error| ControlError::Listen {
        path: path.to_path_buf(),
        error,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        ControlError::Bind {
            path: path.to_path_buf(),
            error,
        }
    })?;
    Ok(l.into())
}

/// The control socket of a running process: bound (or inherited) at start, served until the
/// process hands over or stops, and passed to each successor so that its file never changes
/// hands.
#[derive(Debug)]
pub struct Control {
    fd: Option<Arc<OwnedFd>>,
    /// The socket's file, removed at a stop: the one we bound, or the one the inherited fd is
    /// bound to (a successor's stop is the service's last as much as the first process's).
    /// `None` when the file is not ours to remove (a supervisor holds it).
    path: Option<PathBuf>,
    tx: mpsc::Sender<Request>,
    /// Client connections not answered yet.
    open: Drain,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Control {
    /// Serves the inherited control fd, or binds `path`. Without either (or when binding
    /// fails, which is logged), `heird reload` cannot reach this process; signals still work.
    /// `owns_inherited`: an inherited socket's file is ours to remove at a stop (false when a
    /// supervisor passed it, and removes it at its own exit).
    pub fn open(
        inherited: Option<OwnedFd>,
        path: Option<&Path>,
        owns_inherited: bool,
        tx: mpsc::Sender<Request>,
    ) -> Control {
        let (fd, path) = match (inherited, path) {
            (Some(fd), _) => {
                let path = if owns_inherited { bound_path(&fd) } else { None };
                (Some(Arc::new(fd)), path)
            }
            (None, Some(path)) => match bind(path) {
                Ok(fd) => {
                    info!(path = %path.display(), "control socket");
                    (Some(Arc::new(fd)), Some(path.to_path_buf()))
                }
                Err(e) => {
                    warn!(error = %e, "no control socket: `heird reload` will not work");
                    (None, None)
                }
            },
            (None, None) => (None, None),
        };
        let mut c = Control {
            fd,
            path,
            tx,
            open: Drain::new(),
            task: None,
        };
        c.restart();
        c
    }

    /// The listening fd, to pass to a successor.
    pub fn fd(&self) -> Option<Arc<OwnedFd>> {
        self.fd.clone()
    }

    /// Stops accepting requests (a successor or nobody takes them from now on).
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Accepts requests (again).
    pub fn restart(&mut self) {
        self.stop();
        let Some(fd) = &self.fd else { return };
        match fd
            .try_clone()
            .and_then(|fd| serve(fd, self.tx.clone(), self.open.clone()))
        {
            Ok(t) => self.task = Some(t),
            Err(e) => warn!(error = %e, "cannot serve the control socket"),
        }
    }

    /// At exit: lets every answer be written (up to 2 s); at a stop, removes the socket file.
    pub async fn finish(&mut self, stopped: bool) {
        self.stop();
        self.open.wait(Duration::from_secs(2)).await;
        if stopped && let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The path a listening Unix socket is bound to (`None` for an abstract or unnamed one).
fn bound_path(fd: &OwnedFd) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let addr: nix::sys::socket::UnixAddr = nix::sys::socket::getsockname(fd.as_raw_fd()).ok()?;
    addr.path().map(Path::to_path_buf)
}

/// The live control sockets in our private directory (`control-<pid>.sock`, named after the
/// pid that bound them, which a handoff does not change): those a process listens on, from
/// `/proc/net/unix`, so a file left behind by a process that was killed does not count. Does
/// not create the directory.
pub fn live_sockets_in_private_dir() -> io::Result<(PathBuf, Vec<PathBuf>)> {
    let dir = private_dir_path();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((dir, vec![])),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    check_private(&dir)?;
    let listening = listening_paths(&std::fs::read_to_string("/proc/self/net/unix")?);
    let mut live: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("control-") && n.ends_with(".sock"))
        })
        .filter(|p| listening.contains(p))
        .collect();
    live.sort();
    Ok((dir, live))
}

/// The paths of listening Unix sockets in a `/proc/net/unix` table.
fn listening_paths(table: &str) -> std::collections::HashSet<PathBuf> {
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 is __SO_ACCEPTCON.
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            let path = cols.get(7)?;
            (flags & 0x0001_0000 != 0).then(|| PathBuf::from(path))
        })
        .collect()
}

/// Serves the control socket `fd` until the returned task is aborted; requests arrive on `tx`.
/// Each client connection is counted in `open` until its answer is written, so that the
/// process can wait for answers before it exits.
fn serve(fd: OwnedFd, tx: mpsc::Sender<Request>, open: Drain) -> io::Result<tokio::task::JoinHandle<()>> {
    let std = std::os::unix::net::UnixListener::from(fd);
    std.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let guard = open.track();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        handle(stream, tx).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn handle(mut stream: UnixStream, tx: mpsc::Sender<Request>) {
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(&stream, sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                pid = cred.pid(),
                "control connection from another user refused"
            );
            let _ = stream
                .write_all(format!("{}\n", ControlAnswer::Error("permission denied".into())).as_bytes())
                .await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot read control peer credentials");
            return;
        }
    }
    let (read, mut write) = stream.split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(128);
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
    let answer = match read {
        Ok(Ok(_)) if line.trim() == RELOAD_REQUEST => {
            let (reply, rx) = oneshot::channel();
            // A closed queue: this process left its main loop (handed over or stopping).
            if tx.send(Request { reply }).await.is_err() {
                ControlAnswer::Retry(GONE.into()).to_string()
            } else {
                rx.await
                    .unwrap_or_else(|_| ControlAnswer::Retry(GONE.into()).to_string())
            }
        }
        Ok(Ok(_)) => ControlAnswer::Error(format!(
            "unknown command {:?}",
            line.trim().chars().take(40).collect::<String>()
        ))
        .to_string(),
        Ok(Err(e)) => {
            debug!(error = %e, "control read failed");
            return;
        }
        Err(_) => ControlAnswer::Error("timeout".into()).to_string(),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_paths_from_proc_net_unix() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /tmp/heird-0/control-10.sock
0000000000000000: 00000002 00000000 00000000 0001 03 1002 /tmp/heird-0/control-11.sock
0000000000000000: 00000002 00000000 00010000 0001 01 1003
0000000000000000: 00000002 00000000 00010000 0005 01 1004 @abstract
";
        let live = listening_paths(table);
        assert!(live.contains(Path::new("/tmp/heird-0/control-10.sock")));
        assert!(
            !live.contains(Path::new("/tmp/heird-0/control-11.sock")),
            "connected, not listening"
        );
        assert_eq!(live.len(), 2, "{live:?}");
    }

    #[test]
    fn runtime_dir_first_entry() {
        assert_eq!(
            runtime_dir_socket(b"/run/heird:/run/other"),
            Some(PathBuf::from("/run/heird/control.sock"))
        );
        assert_eq!(runtime_dir_socket(b""), None);
    }
}
