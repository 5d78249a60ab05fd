//! A child process of ours (a successor), held so that no path can forget it: killed and
//! reaped when the handle is dropped, unless [`Child::release`]d once it took over.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use crate::sys;

/// A child process of ours, killed (SIGKILL) and reaped when dropped unless released.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    /// Readable once the child has exited.
    pidfd: AsyncFd<OwnedFd>,
    /// Kill on drop (until the child took over, or was reaped).
    armed: bool,
    reaped: bool,
}

impl Child {
    pub(crate) fn new(pid: i32) -> io::Result<Child> {
        let pidfd = sys::pidfd_open(pid).and_then(|fd| sys::async_fd(fd, Interest::READABLE))?;
        Ok(Child {
            pid,
            pidfd,
            armed: true,
            reaped: false,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves once the child has exited (it is not reaped yet).
    pub async fn exited(&self) {
        let _ = self.pidfd.readable().await;
    }

    /// True when the child has exited: its pidfd polls readable right now.
    pub fn has_exited(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.pidfd.get_ref().as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
    }

    /// The child took over: it outlives us; dropping this handle no longer kills it.
    pub fn release(&mut self) {
        self.armed = false;
    }

    /// Reaps a child that has exited (waiting for it first); returns whether it exited with
    /// status 0, and its status.
    pub async fn reap(&mut self) -> (bool, String) {
        self.exited().await;
        let status = self.try_reap().unwrap_or_else(|| "still running".into());
        (status == "exit status 0", status)
    }

    /// SIGKILLs the child if it still runs, waits for it, reaps it; returns its status.
    pub async fn kill(&mut self) -> String {
        if let Some(status) = self.try_reap() {
            return status;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.exited()).await;
        self.try_reap().unwrap_or_else(|| self.kill_blocking())
    }

    /// SIGTERM, then up to `grace` for the child to drain and exit, then SIGKILL; reaps it.
    /// For a successor that may already serve connections but never took over.
    pub async fn stop(&mut self, grace: Duration) -> String {
        if let Some(status) = self.try_reap() {
            return status;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            warn!(
                pid = self.pid,
                grace_s = grace.as_secs_f64(),
                "successor did not stop in time; killing it"
            );
        }
        self.kill().await
    }

    fn try_reap(&mut self) -> Option<String> {
        if self.reaped {
            return Some("reaped".into());
        }
        let st = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(st) => describe(st),
            Err(e) => format!("waitpid: {e}"),
        };
        self.reaped = true;
        self.armed = false;
        Some(st)
    }

    fn kill_blocking(&mut self) -> String {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let st = match waitpid(Pid::from_raw(self.pid), None) {
            Ok(st) => describe(st),
            Err(e) => format!("waitpid: {e}"),
        };
        self.reaped = true;
        self.armed = false;
        st
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.armed && !self.reaped {
            let status = self.kill_blocking();
            warn!(pid = self.pid, %status, "successor that never took over killed");
        }
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
