//! systemd's file descriptor store: sockets heird binds itself are kept there (`FDSTORE=1` +
//! `FDNAME=`), so that a `systemctl restart` or a crash does not close them, and come back in
//! `LISTEN_FDS` at the next start (see [`crate::listeners`] for how they are taken back).
//! Sockets from a socket unit are never stored: systemd holds those anyway.
//!
//! The store is used when `$NOTIFY_SOCKET` is set and `$FDSTORE` (systemd ≥ 254 sets it to
//! `FileDescriptorStoreMax=`) is not 0. systemd 252 does not set `$FDSTORE`: there heird simply
//! sends, and systemd drops what `FileDescriptorStoreMax=` does not allow.

use std::os::fd::AsFd;

use tracing::{info, warn};

use crate::listeners::Listener;
use crate::notify::{self, NotifyState};

/// How many fds the store takes (`$FDSTORE`), when keep-alive connections may be stored at a
/// stop: only when `$FDSTORE` says the store has room (systemd ≥ 254 sets it; the shipped unit
/// sets it for 252 with `Environment=FDSTORE=128`). A connection sent to a store that does not
/// keep it would be closed under the client, so without that promise a stop closes connections
/// gently instead.
pub fn connection_room() -> Option<u64> {
    if !notify::enabled() {
        return None;
    }
    std::env::var("FDSTORE")
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|max| *max > 0)
}

/// True when stored fds can reach systemd.
pub fn available() -> bool {
    notify::enabled()
        && std::env::var("FDSTORE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_none_or(|max| max > 0)
}

/// Pushes `listener` into the fd store under its name.
pub fn store(listener: &Listener) {
    let states = [NotifyState::FdStore, NotifyState::FdName(&listener.name)];
    match sd_notify::notify_with_fds(&states, &[listener.fd.as_fd()]) {
        Ok(()) => info!(name = %listener.name, address = %listener.address, "listener kept in the fd store"),
        Err(e) => warn!(name = %listener.name, error = %e, "cannot store the listener in the fd store"),
    }
}

/// Removes the stored fds named `name` (an address the config no longer lists).
pub fn remove(name: &str) {
    notify::send(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]);
    info!(name, "listener removed from the fd store");
}

/// Removes the stored fds named `name`, logging only at debug level (used per connection).
pub fn remove_quietly(name: &str) {
    notify::send(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]);
}
