//! Processes: the fake notify socket, the reaper, /proc readings, starting heird.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};

pub(crate) struct NotifyMsg {
    pub(crate) at: Instant,
    pub(crate) pid: u32,
    pub(crate) text: String,
}

/// A fake `$NOTIFY_SOCKET`: records every datagram with its sender's pid and arrival time, and
/// closes fds passed with it at once (which completes `BARRIER=1`, as systemd does).
pub(crate) struct FakeNotify {
    pub(crate) path: PathBuf,
    pub(crate) log: Arc<Mutex<Vec<NotifyMsg>>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl FakeNotify {
    pub(crate) fn new(path: PathBuf) -> anyhow::Result<FakeNotify> {
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        setsockopt(&sock, sockopt::PassCred, &true)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(m) = recv_notify(&sock) {
                    l.lock().unwrap().push(m);
                }
            }
        });
        Ok(FakeNotify {
            path,
            log,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn cursor(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits for a message from `cursor` on that satisfies `pred`; moves the cursor past it.
    pub(crate) fn wait(
        &self,
        cursor: &mut usize,
        timeout: Duration,
        pred: impl Fn(&NotifyMsg) -> bool,
    ) -> Option<(Instant, u32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let log = self.log.lock().unwrap();
                while *cursor < log.len() {
                    let m = &log[*cursor];
                    *cursor += 1;
                    if pred(m) {
                        return Some((m.at, m.pid, m.text.clone()));
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Drop for FakeNotify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn recv_notify(sock: &UnixDatagram) -> Option<NotifyMsg> {
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, [std::os::fd::RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg =
        recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).ok()?;
    let at = Instant::now();
    let mut pid = 0;
    for c in msg.cmsgs().ok()? {
        match c {
            ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid() as u32,
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    let n = msg.bytes;
    Some(NotifyMsg {
        at,
        pid,
        text: String::from_utf8_lossy(&buf[..n]).to_string(),
    })
}

/// Reaps every child (we are a subreaper, so orphaned successors count) and records when each
/// exited. Only runs during the reload section: nothing else may `wait` meanwhile.
pub(crate) struct Reaper {
    pub(crate) exits: Arc<Mutex<HashMap<u32, Instant>>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl Reaper {
    pub(crate) fn start() -> Reaper {
        let exits = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (exits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid > 0 {
                    e.lock().unwrap().insert(pid as u32, Instant::now());
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Reaper {
            exits,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn exited(&self, pid: u32) -> Option<Instant> {
        self.exits.lock().unwrap().get(&pid).copied()
    }

    pub(crate) fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.exited(pid) {
                return Some(t);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcStatus {
    pub(crate) rss_kib: u64,
    pub(crate) anon_kib: u64,
    pub(crate) file_kib: u64,
    pub(crate) threads: u64,
}

pub(crate) fn proc_status(pid: u32) -> Option<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut st = ProcStatus::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let n = || {
            v.split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match k {
            "VmRSS" => {
                st.rss_kib = n();
                seen = true;
            }
            "RssAnon" => st.anon_kib = n(),
            "RssFile" => st.file_kib = n(),
            "Threads" => st.threads = n(),
            _ => {}
        }
    }
    seen.then_some(st)
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn heird_command(bin: &Path, addr: SocketAddr) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("RUST_LOG")
        .env_remove("HEIRD_CONFIG")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        // The fake notify socket is no fd store: say so, as systemd >= 254 does for
        // FileDescriptorStoreMax=0 (else heird would push connections into it at SIGTERM).
        .env("FDSTORE", "0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// Makes `fd` the child's fd 3 and serves it with `--fd 3` instead of binding (the listener is
/// inherited, as from a socket unit; heird takes it as is and never binds).
pub(crate) fn pass_as_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut fresh = Command::new(cmd.get_program());
    for a in args.iter().take_while(|a| a.to_str() != Some("--listen")) {
        fresh.arg(a);
    }
    fresh.arg("--fd").arg("3");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => fresh.env(k, v),
            None => fresh.env_remove(k),
        };
    }
    fresh.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing is allocated after the fork.
    unsafe {
        fresh.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears FD_CLOEXEC on the copy; when fd is already 3 it must be cleared here.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    *cmd = fresh;
}

/// One plain `GET path` on a fresh connection; true on a 200.
pub(crate) fn get_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

pub(crate) fn wait_serving(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !get_ok(addr, "/") {
        if Instant::now() >= deadline {
            bail!("{addr} did not answer GET / within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `key=value` from a tracing log line.
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Raises this process's soft `RLIMIT_NOFILE` to the hard limit (one fd per client socket).
pub(crate) fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
