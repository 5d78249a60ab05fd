//! The supervisor's own notify socket: workers send it what they would send systemd
//! (`READY=1`, `MAINPID=`, `BARRIER=1` with a pipe fd, …). A datagram socket in the private
//! directory (0700) that also holds the control socket.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

use super::machine::Line;

/// The largest datagram read; systemd's limit for a notify message is the same order.
const MAX_DATAGRAM: usize = 8192;

/// Our end of the workers' `NOTIFY_SOCKET`; the file is removed on drop.
pub struct NotifyIn {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifyIn {
    /// Binds `notify-<pid>-<nonce>.sock` in `dir`. The nonce keeps apart two supervisors
    /// that share a directory and a pid (PID 1 of two pid namespaces with one /tmp).
    pub fn bind(dir: &Path) -> io::Result<NotifyIn> {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!("notify-{}-{nonce:08x}.sock", std::process::id()));
        let std = StdDatagram::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std.set_nonblocking(true)?;
        // The sender's pid comes with each datagram: only the main worker speaks for the service.
        nix::sys::socket::setsockopt(&std, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(io::Error::from)?;
        Ok(NotifyIn {
            socket: UnixDatagram::from_std(std)?,
            path,
        })
    }

    /// The path workers get as `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until a datagram is there.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Every datagram waiting now, each as its sender's pid, its lines and the fd sent along,
    /// in order. The caller drops the fd (the barrier's pipe) once it has acted on every
    /// datagram before it, which is what `BARRIER=1` waits for.
    pub fn drain(&self) -> Vec<(Option<i32>, Vec<Line>, Option<OwnedFd>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let got = self.socket.try_io(tokio::io::Interest::READABLE, || {
                crate::sys::recv_with_fd_from(self.socket.as_fd(), &mut buf)
            });
            match got {
                Ok((n, from, fd)) => out.push((from, parse(&buf[..n]), fd)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "notify socket: receive failed");
                    return out;
                }
            }
        }
    }
}

impl Drop for NotifyIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A datagram's lines.
pub fn parse(datagram: &[u8]) -> Vec<Line> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter(|l| !l.is_empty())
        .map(Line::parse)
        .collect()
}
