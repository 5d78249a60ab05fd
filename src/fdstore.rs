//! systemd's file descriptor store, and every name heird stores under.
//!
//! - Sockets heird binds itself are kept there (`FDSTORE=1` + `FDNAME=bound-…`), so that a
//!   `systemctl restart` or a crash does not close them; they come back in `LISTEN_FDS` at the
//!   next start (see [`crate::acquire`]). Sockets from a socket unit are never stored: systemd
//!   holds those anyway.
//! - At a stop, idle keep-alive connections are kept there for the next process
//!   (`conn-<tcp|unix>-<moves>-<id>`), with the bytes read from each but not parsed yet in a
//!   memfd beside it (`cbuf-<id>`).
//! - At a stop, resumable WebSockets (`crate::ws`): the socket as `wsconn-<id>`, and its path,
//!   handler state and unread bytes (the encoded `ws` channel message) in a memfd `wsmsg-<id>`.
//! - The metrics' shared counters, in a memfd (`heird-metrics`), from the start when the app
//!   serves metrics (`crate::Service::metrics`); a successor inherits them, so they are stored
//!   once. Counted like the TLS ticket keys against `$FDSTORE`.
//! - At a stop, the app's state, in a memfd (`heird-state`). It goes in before any connection
//!   and its slot is kept free for it ([`keep_state_at_stop`], [`connection_room`]); when the
//!   store has no room for it, that is logged as an error and it is not sent.
//!
//! The store is used when `$NOTIFY_SOCKET` is set and `$FDSTORE` (systemd ≥ 254 sets it to
//! `FileDescriptorStoreMax=`) is not 0. systemd 252 does not set `$FDSTORE`: there heird simply
//! sends, and systemd drops what `FileDescriptorStoreMax=` does not allow.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::{error, info, warn};

use crate::notify::{self, NotifyState};
use crate::wire::ConnKind;

/// Prefix of the names under which heird keeps the sockets it bound. Socket-unit fds never
/// carry it (and are never stored).
pub const BOUND_PREFIX: &str = "bound-";
/// Prefix of stored connections: `conn-<tcp|unix>-<moves>-<id>`.
pub const CONN_PREFIX: &str = "conn-";
/// Prefix of a stored connection's unparsed bytes (a memfd): `cbuf-<id>`, the same `<id>`.
pub const CONN_BUF_PREFIX: &str = "cbuf-";

/// Prefix of a stored resumable WebSocket's socket: `wsconn-<id>`.
pub const WS_CONN_PREFIX: &str = "wsconn-";
/// Prefix of a stored WebSocket's message (a memfd holding the encoded `ws` channel message:
/// path, state, unread bytes): `wsmsg-<id>`, the same `<id>`.
pub const WS_MSG_PREFIX: &str = "wsmsg-";

/// The app's state (a memfd), kept at a stop for the next process (see
/// `crate::Service::save_state`).
pub const STATE_NAME: &str = "heird-state";

/// heird's metrics (a memfd of shared counters, `crate::metrics`), kept so that counters go on
/// after a restart.
pub const METRICS_NAME: &str = "heird-metrics";

/// TLS session-ticket keys (a memfd), kept so that tickets resume after a restart or a crash.
pub const TLS_TICKETS_NAME: &str = "tls-ticket-keys";

/// True for the name of a listener heird bound and stored.
pub fn is_bound_listener(name: &str) -> bool {
    name.starts_with(BOUND_PREFIX)
}

/// True for fd-store names of stored connections and their bytes.
pub fn is_stored_connection(name: &str) -> bool {
    name.starts_with(CONN_PREFIX)
        || name.starts_with(CONN_BUF_PREFIX)
        || name.starts_with(WS_CONN_PREFIX)
        || name.starts_with(WS_MSG_PREFIX)
        || name == TLS_TICKETS_NAME
}

/// The store name of a WebSocket's socket.
pub fn ws_conn_name(id: &str) -> String {
    format!("{WS_CONN_PREFIX}{id}")
}

/// The store name of a WebSocket's message.
pub fn ws_msg_name(id: &str) -> String {
    format!("{WS_MSG_PREFIX}{id}")
}

/// `wsconn-1234-7` → "1234-7".
pub fn parse_ws_conn_name(name: &str) -> Option<&str> {
    name.strip_prefix(WS_CONN_PREFIX)
}

/// `wsmsg-1234-7` → "1234-7".
pub fn parse_ws_msg_name(name: &str) -> Option<&str> {
    name.strip_prefix(WS_MSG_PREFIX)
}

/// The store name of a connection: `conn-<kind>-<moves>-<id>`, or, with the client's address
/// from its PROXY header, `conn-<kind>-<moves>@<client>-<id>` (the address with `_` for `:`,
/// which fd names cannot hold: `conn-tcp-1@[2001_db8__7]_443-1234-7`). An older version reads
/// the latter as no connection name and closes it, rather than serve it with the wrong peer.
pub fn conn_name(kind: ConnKind, moves: u32, client: Option<SocketAddr>, id: &str) -> String {
    let client = client
        .map(|c| format!("@{c}").replace(':', "_"))
        .unwrap_or_default();
    format!("{CONN_PREFIX}{}-{moves}{client}-{id}", kind.as_str())
}

/// The store name of a connection's unparsed bytes.
pub fn conn_buf_name(id: &str) -> String {
    format!("{CONN_BUF_PREFIX}{id}")
}

/// `conn-tcp-2-1234-7` → (tcp, 2 moves, no client, "1234-7"); see [`conn_name`].
pub fn parse_conn_name(name: &str) -> Option<(ConnKind, u32, Option<SocketAddr>, &str)> {
    let rest = name.strip_prefix(CONN_PREFIX)?;
    let (kind, rest) = rest.split_once('-')?;
    let (moves, id) = rest.split_once('-')?;
    let (moves, client) = match moves.split_once('@') {
        None => (moves, None),
        Some((m, c)) => (m, Some(c.replace('_', ":").parse().ok()?)),
    };
    Some((ConnKind::parse(kind)?, moves.parse().ok()?, client, id))
}

/// `cbuf-1234-7` → "1234-7".
pub fn parse_conn_buf_name(name: &str) -> Option<&str> {
    name.strip_prefix(CONN_BUF_PREFIX)
}

/// [`STATE_BESIDE`] while the app keeps no state.
const NO_STATE: u64 = u64::MAX;
/// How many fds heird keeps in the store beside the listeners when the app's state goes in at a
/// stop (see [`keep_state_at_stop`]); [`NO_STATE`] when the app keeps none. Process-wide, as the
/// store (`$NOTIFY_SOCKET`, `$FDSTORE`) is.
static STATE_BESIDE: AtomicU64 = AtomicU64::new(NO_STATE);
/// Set by [`connection_room`] when the state does not fit: [`store_bytes`] then refuses it
/// (systemd would drop it without a word to us).
static STATE_NO_ROOM: AtomicBool = AtomicBool::new(false);

/// The app gives the next process state (`crate::Service::save_state`): at a stop it goes into
/// the store as [`STATE_NAME`], before any connection, so it takes a slot that
/// [`connection_room`] keeps free for it, after the listeners and `beside` other fds heird
/// keeps there (the TLS session-ticket keys).
pub fn keep_state_at_stop(beside: u64) {
    STATE_BESIDE.store(beside.min(NO_STATE - 1), Ordering::SeqCst);
}

/// How many connections may be stored at a stop, or `None` when none may: only when `$FDSTORE`
/// says the store has room (systemd ≥ 254 sets it; the shipped unit sets it for 252 with
/// `Environment=FDSTORE=128`). A connection sent to a store that does not keep it would be
/// closed under the client, so without that promise a stop closes connections gently instead.
/// `stored_listeners` are already in the store; `other_listeners` (socket units') come with it.
///
/// The room is also kept below what the next process can be started with, because systemd
/// passes it every stored fd at exec: under the unit's `LimitNOFILE=` soft limit (the start
/// fails with `202/FDS` otherwise, [`exec_room`]), and at most `max_passed` in all (the most
/// fds the next heird takes, `listeners::MAX_LISTEN_FDS`: it refuses more, exit 78). Without
/// that cap a store raised to 5 000 or 10 000 took the service down: every start after the
/// restart failed (bench/many-store.sh).
///
/// The app's state, when it keeps one ([`keep_state_at_stop`]), takes precedence: its slot is
/// not given to a connection, and when the store cannot hold it (`FileDescriptorStoreMax=` too
/// small, or 0), that is logged as an error.
pub fn connection_room(stored_listeners: u64, other_listeners: u64, max_passed: u32) -> Option<u64> {
    if !notify::enabled() {
        return None;
    }
    let beside = Some(STATE_BESIDE.load(Ordering::SeqCst)).filter(|b| *b != NO_STATE);
    let max = std::env::var("FDSTORE").ok()?.trim().parse::<u64>().ok()?;
    if max == 0 {
        if beside.is_some() {
            error!("no fd store (FileDescriptorStoreMax=0): the app's state is not kept across this stop");
        }
        return None;
    }
    // The state's slot, in the store and among the fds passed to the next process.
    let state = u64::from(beside.is_some());
    if let Some(beside) = beside {
        let need = stored_listeners + beside + 1;
        STATE_NO_ROOM.store(max < need, Ordering::SeqCst);
        if max < need {
            error!(
                fdstore = max,
                listeners = stored_listeners,
                beside,
                "the fd store has no room for the app's state: it is not kept across this stop \
                 (FileDescriptorStoreMax= must be at least {need})"
            );
        }
    }
    let by_store = max.saturating_sub(stored_listeners + state);
    let soft = crate::sys::unit_nofile_soft();
    let by_exec = soft
        .map_or(u64::MAX, exec_room)
        .min(u64::from(max_passed))
        .saturating_sub(stored_listeners + other_listeners + state);
    if by_exec < by_store {
        warn!(
            fdstore = max,
            limit_nofile_soft = soft,
            room = by_exec,
            "the next process could not be started with that many stored fds; storing fewer \
             connections (at most {max_passed} fds pass, and LimitNOFILE= must be at least \
             twice their number plus 64)"
        );
    }
    Some(by_store.min(by_exec))
}

/// How many stored fds systemd can start the next process with under an open-files soft limit
/// of `soft`. Measured on systemd 252 (bench/many-store.sh): 5 001 stored fds failed with
/// `LimitNOFILE=6025` ("Failed to adjust passed file descriptors: Too many open files"), and
/// 8 958 got past that step with 21 026: while moving them to 3, 4, ... the child holds both
/// copies of some.
/// Half the limit, less a margin for stdio and the like, is what is kept.
pub fn exec_room(soft: u64) -> u64 {
    soft.saturating_sub(64) / 2
}

/// True when stored fds can reach systemd.
pub fn available() -> bool {
    notify::enabled()
        && std::env::var("FDSTORE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_none_or(|max| max > 0)
}

/// Pushes a listener's fd into the store under `name`; logs the outcome.
pub fn store_listener(name: &str, address: &str, fd: BorrowedFd<'_>) {
    let states = [NotifyState::FdStore, NotifyState::FdName(name)];
    match sd_notify::notify_with_fds(&states, &[fd]) {
        Ok(()) => info!(name, address, "listener kept in the fd store"),
        Err(e) => warn!(name, error = %e, "cannot store the listener in the fd store"),
    }
}

/// Pushes `fd` into the store under `name` (a connection or its bytes); returns the error.
pub fn store(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd])
}

/// Keeps `bytes` in the store under `name`, in a memfd (never on disk). The app's state
/// ([`STATE_NAME`]) is refused when [`connection_room`] found no room for it.
pub fn store_bytes(name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if name == STATE_NAME && STATE_NO_ROOM.load(Ordering::SeqCst) {
        return Err(std::io::Error::other(
            "the fd store is full (FileDescriptorStoreMax= leaves no slot for it)",
        ));
    }
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::os::fd::AsFd;
    let fd = memfd_create(c"heird-bytes", MFdFlags::MFD_CLOEXEC).map_err(std::io::Error::from)?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, bytes)?;
    store(name, f.as_fd())
}

/// Reads a stored memfd from its start, at most `limit` bytes.
pub fn read_bytes(fd: std::os::fd::OwnedFd, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::from(fd);
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut v = Vec::new();
    f.take(limit).read_to_end(&mut v)?;
    Ok(v)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_room_keeps_half_the_limit() {
        assert_eq!(exec_room(1024), 480);
        assert_eq!(exec_room(20_064), 10_000);
        assert_eq!(exec_room(10), 0);
    }

    #[test]
    fn names_round_trip() {
        let n = conn_name(ConnKind::Tcp, 2, None, "1234-7");
        assert_eq!(n, "conn-tcp-2-1234-7");
        assert_eq!(parse_conn_name(&n), Some((ConnKind::Tcp, 2, None, "1234-7")));
        // With the client's address from a PROXY header: no ':' in the name.
        for client in ["192.0.2.7:41000", "[2001:db8::7]:443", "[::ffff:127.0.0.7]:1"] {
            let c: SocketAddr = client.parse().unwrap();
            let n = conn_name(ConnKind::Unix, 1, Some(c), "9-3");
            assert!(!n.contains(':') && n.starts_with("conn-unix-1@"), "{n}");
            assert_eq!(parse_conn_name(&n), Some((ConnKind::Unix, 1, Some(c), "9-3")));
        }
        assert_eq!(parse_conn_name("conn-tcp-1@nowhere-9-3"), None);
        assert_eq!(
            parse_conn_name("conn-unix-0-1-0"),
            Some((ConnKind::Unix, 0, None, "1-0"))
        );
        assert_eq!(parse_conn_name("bound-tcp-127.0.0.1_80"), None);
        assert_eq!(parse_conn_name("conn-udp-1-1"), None);
        assert_eq!(parse_conn_buf_name(&conn_buf_name("9-1")), Some("9-1"));
        assert!(is_stored_connection("cbuf-1-2") && is_stored_connection("conn-tcp-0-1-2"));
        assert!(!is_stored_connection("bound-tcp-x") && is_bound_listener("bound-tcp-x"));
        assert_eq!(parse_ws_conn_name(&ws_conn_name("9-1")), Some("9-1"));
        assert_eq!(parse_ws_msg_name(&ws_msg_name("9-1")), Some("9-1"));
        assert!(is_stored_connection(&ws_conn_name("1-2")) && is_stored_connection(&ws_msg_name("1-2")));
        assert_eq!(parse_conn_name(&ws_conn_name("1-2")), None);
    }
}
