//! Forking and exec'ing a successor or a worker with its fds at 3.. (part of `sys`, the only
//! module with `unsafe`).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

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
