//! The only module with `unsafe`: raw fds become `OwnedFd` here, the process environment
//! is edited here (before any thread exists), the successor is forked and exec'd here
//! (`spawn`), and the metrics' shared memory is mapped here (`shm`).
//!
//! Everything else in the crate works with `OwnedFd`/`BorrowedFd` and safe wrappers.
#![allow(unsafe_code)]

mod shm;
mod spawn;
pub use shm::SharedSlots;
pub use spawn::{ExecPlan, spawn};

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of a descriptor number inherited at exec (`LISTEN_FDS`, `--fd`), if open.
///
/// Returns `Ok(None)` when `fd` is not an open descriptor, and an error when this process
/// already took it. Only call it for descriptors that the process inherited and that no
/// `File`/socket wraps yet: that is what the `LISTEN_FDS` protocol and `--fd` promise, and the
/// registry below makes sure each number is turned into an `OwnedFd` at most once.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    static TAKEN: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("fd {fd} was already taken"),
        ));
    }
    // SAFETY: F_GETFD only inspects the descriptor table; any integer is a valid argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::EBADF) {
            Ok(None)
        } else {
            Err(err)
        };
    }
    taken.push(fd);
    // SAFETY: the fd is open (checked above), inherited, and taken only once (registry).
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Sets FD_CLOEXEC on `fd` if it is open, without taking ownership. Used for descriptors that
/// were passed to another process (`LISTEN_PID` not ours), so they do not leak into children.
pub fn set_cloexec_raw(fd: RawFd) {
    // SAFETY: F_GETFD/F_SETFD on an arbitrary integer either fail with EBADF or change only
    // the close-on-exec flag, which no Rust object relies on.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Removes environment variables, which is sound only while the process has one thread.
///
/// Call it before the tokio runtime starts. It checks `/proc/self/task` and refuses (returns
/// an error, changing nothing) when another thread exists.
pub fn remove_env(names: &[&str]) -> io::Result<()> {
    // Nothing to remove (no socket passed, no predecessor): no edit, so any thread count is
    // fine, and a plain bind can be prepared from inside a running runtime.
    if names.iter().all(|n| std::env::var_os(n).is_none()) {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot edit the environment with {threads} threads running: take the sockets before \
             the runtime starts (heird::main or heird::start do)"
        )));
    }
    for name in names {
        // SAFETY: the process has a single thread (checked above), so no other thread can
        // read the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    Ok(())
}

/// Opens a pidfd for `pid` (Linux ≥ 5.3). The pidfd becomes readable when the process exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Registers an owned descriptor with the tokio reactor.
pub fn async_fd(fd: OwnedFd, interest: tokio::io::Interest) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open for its whole life and always reports the same number, which
    // is exactly what `register_with_interest` requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// Marks every descriptor above stderr close-on-exec, so that nothing this process inherited
/// by accident (an fd its parent leaked) reaches a successor. Descriptors we pass on are
/// handed to the child by `spawn`, which clears the flag on the child's copies only.
pub fn cloexec_all_above_stderr() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets FD_CLOEXEC; it closes nothing.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        // Older kernels: walk /proc/self/fd instead.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<RawFd> = dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect();
            for fd in fds {
                set_cloexec_raw(fd);
            }
        }
    }
}

/// `sendmsg` of one datagram with an optional fd (SCM_RIGHTS), nonblocking, no SIGPIPE.
pub fn send_with_fd(sock: BorrowedFd<'_>, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let iov = [io::IoSlice::new(msg)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|r| ControlMessage::ScmRights(r))
        .into_iter()
        .collect();
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

/// `recvmsg` of one datagram; an fd that came with it becomes an `OwnedFd` (CLOEXEC).
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    recv_with_fd_from(sock, buf).map(|(n, _, fd)| (n, fd))
}

/// Like [`recv_with_fd`], also returning the sender's pid when the socket has `SO_PASSCRED`
/// set (the kernel attaches the sender's credentials then).
pub fn recv_with_fd_from(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<i32>, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, UnixCredentials, recvmsg};
    let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let n = msg.bytes;
    let mut got = None;
    let mut from = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    // SAFETY: the kernel installed these descriptors in our table for this
                    // message; nothing else refers to them.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
            ControlMessageOwned::ScmCredentials(cred) => from = Some(cred.pid()),
            _ => {}
        }
    }
    Ok((n, from, got))
}

/// Carries the unit's open-files soft limit to successors, which inherit a raised one.
pub const UNIT_NOFILE_VAR: &str = "HEIRD_UNIT_NOFILE";

static UNIT_NOFILE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Raises the soft limit of open files to the hard limit: every connection is an fd, and the
/// default soft limit (1024) is far below what a server needs. heird never uses select(2).
///
/// First records the soft limit it found (or, in a successor, the one in `HEIRD_UNIT_NOFILE`):
/// the limit systemd starts the unit's next process with, see [`unit_nofile_soft`].
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let unit = std::env::var(UNIT_NOFILE_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(soft);
    let _ = UNIT_NOFILE.set(unit);
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// The open-files soft limit systemd gave this unit (`LimitNOFILE=`), under which it starts the
/// next process with every stored fd; `None` before [`raise_nofile_limit`] ran.
pub fn unit_nofile_soft() -> Option<u64> {
    UNIT_NOFILE.get().copied()
}
