//! The only module with `unsafe`: raw fds become `OwnedFd` here, the process environment
//! is edited here (before any thread exists), and the successor is forked and exec'd here.
//!
//! Everything else in the crate works with `OwnedFd`/`BorrowedFd` and safe wrappers.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
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

/// Everything the child needs between `fork` and `execve`, prepared before the fork so that
/// the child allocates nothing and takes no lock.
pub struct ExecPlan {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Each entry owns its bytes; `envp_ptrs` points into them. Entries that the child patches
    /// (`LISTEN_PID=`, `WATCHDOG_PID=`) have a digit field of [`PID_FIELD`] bytes.
    env: Vec<Vec<u8>>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Index into `env` of each entry whose value the child sets to its own pid.
    pid_slots: Vec<(usize, usize)>,
}

/// Width of the digit field reserved for a pid in a patched environment entry.
const PID_FIELD: usize = 20;

impl ExecPlan {
    /// `env` holds `KEY=VALUE` entries; `own_pid_vars` names variables (e.g. `LISTEN_PID`) that
    /// the child sets to its own pid after the fork.
    pub fn new(path: &CStr, argv: Vec<CString>, env: Vec<CString>, own_pid_vars: &[&str]) -> Self {
        let mut entries: Vec<Vec<u8>> = env.into_iter().map(CString::into_bytes).collect();
        let mut pid_slots = Vec::new();
        for var in own_pid_vars {
            let mut entry = format!("{var}=").into_bytes();
            let start = entry.len();
            entry.extend_from_slice(&[0u8; PID_FIELD + 1]);
            pid_slots.push((entries.len(), start));
            entries.push(entry);
        }
        // Ensure each entry is NUL-terminated (pid slots already are, by their zero padding).
        for (i, e) in entries.iter_mut().enumerate() {
            if !pid_slots.iter().any(|(idx, _)| *idx == i) {
                e.push(0);
            }
        }
        let envp_ptrs = entries
            .iter()
            .map(|e| e.as_ptr() as *const libc::c_char)
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        ExecPlan {
            path: path.to_owned(),
            _argv: argv,
            argv_ptrs,
            env: entries,
            envp_ptrs,
            pid_slots,
        }
    }
}

/// Forks and execs `plan`, with `fds[i]` at descriptor `3 + i` in the child (close-on-exec
/// cleared there), and every other descriptor of ours closed by exec (they are all CLOEXEC).
/// When the exec fails, the child writes `exec-failed <errno>` to `report` (which must also be
/// one of `fds`, i.e. inherited) and exits 127.
///
/// Returns the child's pid.
///
/// Why LISTEN_PID is patched in the child rather than fixed up in the successor: the value must
/// equal the pid of whatever process the exec starts, before any code of the new image reads the
/// environment, so that strict `sd_listen_fds()` checks (in heird or in a wrapper the binary
/// path points to) accept it. Only the child knows its pid before exec, and writing decimal
/// digits into a buffer prepared before the fork is async-signal-safe.
pub fn spawn(plan: &mut ExecPlan, fds: &[BorrowedFd<'_>], report: BorrowedFd<'_>) -> io::Result<i32> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let report = report.as_raw_fd();
    let report_target = raw
        .iter()
        .position(|f| *f == report)
        .map(|i| 3 + i as RawFd)
        .unwrap_or(-1);
    let first_free = 3 + raw.len() as RawFd;
    // Raw pointers to the pid digit fields, computed before the fork.
    let slots: Vec<*mut u8> = plan
        .pid_slots
        .iter()
        .map(|(idx, start)| {
            // SAFETY: `start` is within the entry (the entry has PID_FIELD+1 bytes after it).
            unsafe { plan.env[*idx].as_mut_ptr().add(*start) }
        })
        .collect();
    let mut temps: Vec<RawFd> = vec![-1; raw.len()];
    // The empty signal mask the child execs with (as std's `Command` does): tokio and our own
    // threads may block signals, and a blocked SIGTERM would survive exec into the successor.
    // SAFETY: sigemptyset only writes the set it is given, a local that lives past the fork.
    let mut empty_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigemptyset(&mut empty_mask) };

    // Every signal is blocked across the fork, so that none reaches the child while it still
    // has this process's handlers: a SIGTERM meant for the child (a stop cancelling it) would
    // run tokio's handler there, write into this process's signal pipe, and be lost, leaving
    // the child to exec and run on. Blocked, it waits until the child has reset its handlers.
    // SAFETY: sigfillset only writes the set it is given, a local.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: as above; `saved` receives this thread's mask, restored right after the fork.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_sigmask changes only this thread's mask; both sets are valid locals.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved) };
    let last_signal = libc::SIGRTMAX();
    // SAFETY: after fork in a multi-threaded process the child may only call async-signal-safe
    // functions. The child branch below calls only getpid, sigprocmask, signal, fcntl, dup2,
    // execve, write and _exit, and touches only memory prepared above (no allocation, no lock).
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: restores the mask saved above, in the parent (or after a failed fork).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // ---- child ----
    // SAFETY: see above; every pointer used here was prepared before the fork.
    unsafe {
        let me = libc::getpid();
        // Every handler and ignored signal back to the default (Rust ignores SIGPIPE, and an
        // ignored signal stays ignored across exec), then the empty mask: a signal that came
        // while all were blocked now acts as it would on the program exec'd, and the successor
        // starts as any program started by systemd would.
        for sig in 1..=last_signal {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, &empty_mask, std::ptr::null_mut());
        for slot in &slots {
            write_decimal(*slot, me as u64);
        }
        // First move every source above the target range (CLOEXEC copies), so that a source
        // sitting on another entry's target number is not overwritten by an earlier dup2.
        for (i, fd) in raw.iter().enumerate() {
            let t = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first_free);
            if t < 0 {
                child_fail(report, report_target);
            }
            temps[i] = t;
        }
        for (i, t) in temps.iter().enumerate() {
            // dup2 to a different number clears FD_CLOEXEC on the target: it is inherited.
            if libc::dup2(*t, 3 + i as RawFd) < 0 {
                child_fail(report, report_target);
            }
        }
        libc::execve(
            plan.path.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        child_fail(report, report_target);
    }
}

/// Writes `n` as NUL-terminated decimal into `dst` (which has PID_FIELD+1 bytes).
///
/// # Safety
/// `dst` must point to at least PID_FIELD+1 writable bytes.
unsafe fn write_decimal(dst: *mut u8, mut n: u64) {
    let mut digits = [0u8; PID_FIELD];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 || len == PID_FIELD {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: i < len ≤ PID_FIELD, within the caller's buffer.
        unsafe { *dst.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: len ≤ PID_FIELD, so the terminator is within PID_FIELD+1 bytes.
    unsafe { *dst.add(len) = 0 };
}

/// Child-side failure after fork: report `exec-failed <errno>` on the readiness channel and exit.
///
/// # Safety
/// Only async-signal-safe calls; to be called in the forked child only.
unsafe fn child_fail(report: RawFd, report_target: RawFd) -> ! {
    // SAFETY: errno location is thread-local and valid; write/_exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = *b"exec-failed                    ";
        let mut digits = [0u8; PID_FIELD + 1];
        write_decimal(digits.as_mut_ptr(), errno.max(0) as u64);
        let mut n = 12;
        for d in digits.iter().take_while(|d| **d != 0) {
            msg[n] = *d;
            n += 1;
        }
        let fd = if report_target >= 0 && libc::fcntl(report_target, libc::F_GETFD) >= 0 {
            report_target
        } else {
            report
        };
        libc::write(fd, msg.as_ptr() as *const libc::c_void, n);
        libc::_exit(127);
    }
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

/// A memfd (or any file) mapped `MAP_SHARED` read-write as `u64` slots: every process that maps
/// the same file sees the same atomics (`crate::metrics`). Unmapped on drop.
#[derive(Debug)]
pub struct SharedSlots {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`, which is `Sync`; the pointer is
// owned by this value and valid until it is dropped.
unsafe impl Send for SharedSlots {}
// SAFETY: as above: shared access is atomic only.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// Maps the first `slots * 8` bytes of `fd` (the file must be at least that long).
    pub fn map(fd: BorrowedFd<'_>, slots: usize) -> io::Result<SharedSlots> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let bytes = std::num::NonZeroUsize::new(slots * 8).ok_or_else(|| io::Error::other("no slots"))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so it aliases no Rust
        // object; the length is the file's (checked by the caller), so every byte is backed.
        let ptr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(SharedSlots {
            ptr: ptr.cast(),
            len: slots,
        })
    }

    /// The slots. Page-aligned (so 8-byte aligned) and `len * 8` bytes long; other processes
    /// change them concurrently, which atomics allow.
    pub fn slots(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `len * 8` bytes, readable and writable, page-aligned, and lives
        // as long as `self`; `AtomicU64` has the size and alignment of `u64` and any bit
        // pattern is a valid value.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this length, and the slices `slots` lent
        // out borrow `self`, so none outlives it.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len * 8) };
    }
}
