//! What heird tells systemd through `$NOTIFY_SOCKET` (via the `sd-notify` crate): READY,
//! RELOADING + MONOTONIC_USEC, STOPPING, STATUS, MAINPID, WATCHDOG, and `BARRIER=1`, which
//! waits until systemd has processed every message sent before it.
//!
//! Without `$NOTIFY_SOCKET` every call is a no-op. Send errors are logged, never fatal:
//! a service must not die because the manager went away.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
pub use sd_notify::NotifyState;
use tracing::{debug, warn};

/// True when a notify socket is configured.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// Sends `states` in one datagram; logs a failure.
pub fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "sd_notify failed");
    } else {
        debug!(?states, "sd_notify sent");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` (required by systemd ≥ 253).
pub fn reloading(status: &str) {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
        Err(e) => {
            warn!(error = %e, "cannot read CLOCK_MONOTONIC");
            send(&[NotifyState::Reloading, NotifyState::Status(status)]);
        }
    }
}

/// `STOPPING=1` with a status line. Only the primary process may send this.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `MAINPID=`, `READY=1` and a status, in one datagram.
pub fn handed_over(pid: u32, status: &str) {
    send(&[
        NotifyState::MainPid(pid),
        NotifyState::Ready,
        NotifyState::Status(status),
    ]);
}

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("cannot create the barrier pipe: {0}")]
    Pipe(nix::Error),
    #[error("cannot send BARRIER=1: {0}")]
    Send(std::io::Error),
    #[error("systemd did not process BARRIER=1 within {0:?}")]
    Timeout(Duration),
    #[error("waiting for the barrier: {0}")]
    Poll(nix::Error),
}

/// Sends `BARRIER=1` with the write end of a pipe and waits until systemd closes it, which it
/// does once every earlier message is processed. Blocking: call from `spawn_blocking`.
/// Returns at once without a notify socket.
pub fn barrier(timeout: Duration) -> Result<(), BarrierError> {
    if !enabled() {
        return Ok(());
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(BarrierError::Pipe)?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[write.as_fd()])
        .map_err(BarrierError::Send)?;
    drop(write);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(BarrierError::Timeout(timeout));
        }
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {
                let hup = fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
                if hup {
                    return Ok(());
                }
                // Data on the pipe cannot come from systemd; drain and keep waiting.
                let mut buf = [0u8; 64];
                let _ = nix::unistd::read(&read, &mut buf);
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(BarrierError::Poll(e)),
        }
    }
}

/// The watchdog interval for this process, when systemd asked for pings
/// (`WATCHDOG_USEC` set and `WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Pings `WATCHDOG=1` at half the interval until the task is aborted.
pub async fn watchdog_ticker(interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

static WATCHDOG_STALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Test switch: never ping the watchdog, to prove that systemd notices (heird's
/// `watchdog_stall = true`).
pub fn set_watchdog_stall(stall: bool) {
    WATCHDOG_STALL.store(stall, std::sync::atomic::Ordering::SeqCst);
}

/// Starts pinging the watchdog when systemd asked for it.
pub fn start_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    if WATCHDOG_STALL.load(std::sync::atomic::Ordering::SeqCst) {
        warn!("watchdog_stall is set: not pinging the watchdog (test only)");
        return None;
    }
    tracing::info!(interval_ms = interval.as_millis() as u64, "watchdog enabled");
    Some(tokio::spawn(watchdog_ticker(interval)))
}
