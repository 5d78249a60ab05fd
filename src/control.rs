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
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::drain::Drain;
use crate::listeners::bind_unix;

/// File name of the control socket inside the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The control socket path for this process, from `$RUNTIME_DIRECTORY` (its first entry).
pub fn default_path() -> Option<PathBuf> {
    runtime_dir_socket(std::env::var_os("RUNTIME_DIRECTORY")?.as_encoded_bytes())
}

fn runtime_dir_socket(value: &[u8]) -> Option<PathBuf> {
    let first = value.split(|b| *b == b':').next().filter(|d| !d.is_empty())?;
    let dir = std::str::from_utf8(first).ok()?;
    Some(Path::new(dir).join(SOCKET_NAME))
}

/// Finds the control socket of process `pid` from its environment (`/proc/PID/environ`).
pub fn path_of_pid(pid: u32) -> io::Result<Option<PathBuf>> {
    let env = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(env
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"RUNTIME_DIRECTORY="))
        .and_then(runtime_dir_socket))
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: crate::listeners::ListenError,
    },
    #[error("cannot connect to the control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no answer from the control socket {path} within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("the service closed the control connection without an answer")]
    NoAnswer,
}

/// A reload request from a client; answer through `reply`.
#[derive(Debug)]
pub struct Request {
    pub reply: oneshot::Sender<String>,
}

/// Binds the control socket at `path` (mode 0600), replacing a stale file nobody listens on.
pub fn bind(path: &Path) -> Result<OwnedFd, ControlError> {
    let l = bind_unix(path, &path.display()).map_err(|source| ControlError::Listen {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Bind {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(l.into())
}

/// Serves the control socket `fd` until the returned task is aborted; requests arrive on `tx`.
/// Each client connection is counted in `open` until its answer is written, so that the
/// process can wait for answers before it exits.
pub fn serve(fd: OwnedFd, tx: mpsc::Sender<Request>, open: Drain) -> io::Result<tokio::task::JoinHandle<()>> {
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
            let _ = stream.write_all(b"error permission denied\n").await;
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
        Ok(Ok(_)) if line.trim() == "reload" => {
            let (reply, rx) = oneshot::channel();
            // A closed queue: this process left its main loop (handed over or stopping).
            if tx.send(Request { reply }).await.is_err() {
                "retry this process no longer takes requests".to_string()
            } else {
                rx.await
                    .unwrap_or_else(|_| "retry this process no longer takes requests".to_string())
            }
        }
        Ok(Ok(_)) => format!(
            "error unknown command {:?}",
            line.trim().chars().take(40).collect::<String>()
        ),
        Ok(Err(e)) => {
            debug!(error = %e, "control read failed");
            return;
        }
        Err(_) => "error timeout".to_string(),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

use tokio::io::AsyncReadExt as _;

/// Client side of `heird reload`: asks for a handoff and returns the server's answer line.
pub async fn request_reload(path: &Path, timeout: Duration) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let run = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        s.write_all(b"reload\n").await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(s)
            .take(64 * 1024)
            .read_line(&mut line)
            .await
            .map_err(io)?;
        if line.is_empty() {
            return Err(ControlError::NoAnswer);
        }
        Ok(line.trim_end().to_string())
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| ControlError::Timeout {
            path: path.to_path_buf(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_first_entry() {
        assert_eq!(
            runtime_dir_socket(b"/run/heird:/run/other"),
            Some(PathBuf::from("/run/heird/control.sock"))
        );
        assert_eq!(runtime_dir_socket(b""), None);
    }
}
