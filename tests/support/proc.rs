//! Spawning the real `heird` binary with real sockets, a fake notify socket, and helpers to
//! talk HTTP to it and inspect its processes.
#![allow(dead_code)]
// Fds received over the fake notify socket become `OwnedFd`s, and a spawn sets up its child's
// fds between fork and exec: test code, beside the library's one `unsafe` module (`sys`).
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, UnixCredentials, recvmsg, setsockopt, sockopt,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_heird");

/// A fake `$NOTIFY_SOCKET`: a datagram socket at a path whose reader thread records every
/// message with the sender's pid (SO_PASSCRED) and closes fds sent with it at once (which
/// completes `BARRIER=1`, as systemd does).
pub struct FakeNotify {
    pub path: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<(u32, String)>>>,
    /// Like systemd's fd store: fds sent with `FDSTORE=1`, by `FDNAME=`, until removed.
    pub store: std::sync::Arc<std::sync::Mutex<Vec<(String, OwnedFd)>>>,
    cursor: usize,
    /// Messages consumed so far by `wait_for`/`drain_for`, in arrival order.
    pub seen: Vec<(u32, String)>,
}

impl FakeNotify {
    pub fn new(dir: &Path) -> FakeNotify {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        setsockopt(&sock, sockopt::PassCred, &true).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let weak = std::sync::Arc::downgrade(&log);
        let store2 = store.clone();
        std::thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            loop {
                let Some(log) = weak.upgrade() else { return };
                if let Some((pid, msg, fds)) = recv(&sock) {
                    let name = msg
                        .lines()
                        .find_map(|l| l.strip_prefix("FDNAME="))
                        .map(str::to_string);
                    let mut st = store2.lock().unwrap();
                    match name {
                        Some(n) if msg.lines().any(|l| l == "FDSTORE=1") => {
                            st.extend(fds.into_iter().map(|fd| (n.clone(), fd)));
                        }
                        Some(n) if msg.lines().any(|l| l == "FDSTOREREMOVE=1") => st.retain(|(k, _)| *k != n),
                        _ => {} // other fds (BARRIER=1) are closed at once, as systemd does
                    }
                    drop(st);
                    log.lock().unwrap().push((pid, msg));
                }
            }
        });
        FakeNotify {
            path,
            log,
            store,
            cursor: 0,
            seen: Vec::new(),
        }
    }

    /// Consumes messages until `pred` matches one (returns it) or the timeout passes.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(u32, &str) -> bool) -> Option<(u32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = self.log.lock().unwrap().get(self.cursor).cloned();
            match next {
                Some((pid, msg)) => {
                    self.cursor += 1;
                    self.seen.push((pid, msg.clone()));
                    if pred(pid, &msg) {
                        return Some((pid, msg));
                    }
                }
                None if Instant::now() >= deadline => return None,
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Consumes whatever arrives within `d`.
    pub fn drain_for(&mut self, d: Duration) {
        let _ = self.wait_for(d, |_, _| false);
    }
}

fn recv(sock: &std::os::unix::net::UnixDatagram) -> Option<(u32, String, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let mut pid = 0;
    let mut owned = Vec::new();
    for c in msg.cmsgs().ok()? {
        match c {
            ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid() as u32,
            ControlMessageOwned::ScmRights(fds) => {
                use std::os::fd::FromRawFd;
                // SAFETY: the kernel just installed these fds for us; nothing else owns them.
                owned.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            _ => {}
        }
    }
    let n = msg.bytes;
    Some((pid, String::from_utf8_lossy(&buf[..n]).to_string(), owned))
}

/// Every heird a test starts carries the test's directory in this variable (successors inherit
/// it), so that all of its generations can be found and killed when the test ends.
pub const TEST_DIR_VAR: &str = "HEIRD_TEST_DIR";

/// A running heird process (the first one the test spawned); killed on drop.
pub struct Heird {
    pub child: Child,
    pub stderr_path: PathBuf,
    pub cmdline: String,
    /// The test's directory, which every generation has as `$RUNTIME_DIRECTORY`.
    pub dir: PathBuf,
}

impl Heird {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the exit with a timeout.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Describes the process for failure messages.
    pub fn describe(&self) -> String {
        format!("command: {}\n--- stderr ---\n{}", self.cmdline, self.stderr())
    }
}

impl Drop for Heird {
    fn drop(&mut self) {
        // Kill every heird of this test: successors are reparented away from our tree once
        // their parent exits, but they all carry the test's directory in their environment.
        let mut pids = descendants(self.pid());
        if let Ok(all) = std::fs::read_dir("/proc") {
            let dir = self.dir.to_string_lossy().to_string();
            pids.extend(
                all.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|p| *p != std::process::id())
                    .filter(|p| env_of(*p, TEST_DIR_VAR).as_deref() == Some(dir.as_str())),
            );
        }
        for pid in pids.into_iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start heird.
pub struct Spawn {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Fds placed at 3.. in the child.
    pub fds: Vec<RawFd>,
    /// Set LISTEN_PID to the child's own pid (via `sh -c 'LISTEN_PID=$$ exec ...'`).
    pub listen_pid_self: bool,
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// Start without `$RUNTIME_DIRECTORY` (as outside systemd).
    pub no_runtime_directory: bool,
}

impl Spawn {
    pub fn new(dir: &Path, args: &[&str]) -> Spawn {
        Spawn {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            fds: Vec::new(),
            listen_pid_self: false,
            bin: PathBuf::from(BIN),
            dir: dir.to_path_buf(),
            no_runtime_directory: false,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Spawn {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn start(self) -> Heird {
        let stderr_path = self.dir.join(format!("heird-{}.stderr", unique()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = if self.listen_pid_self {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
                .arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        cmd.args(&self.args)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("RUST_LOG")
            .env(TEST_DIR_VAR, &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if self.no_runtime_directory {
            cmd.env_remove("RUNTIME_DIRECTORY");
        } else {
            cmd.env("RUNTIME_DIRECTORY", &self.dir);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let fds = self.fds.clone();
        if !fds.is_empty() {
            // SAFETY: only dup2/fcntl between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let base = 100;
                    for (i, fd) in fds.iter().enumerate() {
                        if libc::dup2(*fd, base + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for i in 0..fds.len() {
                        if libc::dup2(base + i as i32, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(base + i as i32);
                    }
                    Ok(())
                });
            }
        }
        let cmdline = format!(
            "{} {} (env {:?}, fds {:?})",
            self.bin.display(),
            self.args.join(" "),
            self.env,
            self.fds
        );
        // A binary copied by a concurrent test may be "text file busy" for a moment (a fork in
        // another thread briefly holds the file open for writing): retry.
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot spawn {cmdline}: {e}"),
            }
        };
        Heird {
            child,
            stderr_path,
            cmdline,
            dir: self.dir.clone(),
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A plain HTTP/1.1 GET on a fresh connection; returns (status, headers+body text).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out))
}

/// GET over a unix socket.
pub fn get_unix(path: &Path, url: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(s, "GET {url} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out))
}

/// The body of a response text.
pub fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// `/info` as JSON.
pub fn info(addr: SocketAddr) -> serde_json::Value {
    let (st, r) = get(addr, "/info").unwrap();
    assert_eq!(st, 200, "{r}");
    serde_json::from_str(body(&r)).unwrap()
}

/// Polls until GET / answers 200, or panics with `h`'s stderr.
pub fn wait_serving(addr: SocketAddr, h: &Heird) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(get(addr, "/healthz"), Ok((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("heird never served on {addr}\n{}", h.describe());
}

/// A listening TCP socket on 127.0.0.1 with an ephemeral port.
pub fn tcp_listener() -> (OwnedFd, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l.into(), a)
}

/// A free port (bound then released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// All descendants of `pid` (children first, then theirs), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for c in children(p) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Process state letter (R, S, Z, ...) or None when gone.
pub fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

/// All heird processes on the machine whose environment or cmdline mentions `marker`.
pub fn heird_pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("heird") && cmd.contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Waits until `pid` has exited (or is a zombie) within `d`.
pub fn wait_gone(pid: u32, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        match state(pid) {
            None | Some('Z') => return true,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    false
}

/// The fd table of `pid`: fd number → link target.
pub fn fd_table(pid: u32) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let fd = e.file_name().to_string_lossy().parse().ok()?;
                    let t = std::fs::read_link(e.path()).ok()?;
                    Some((fd, t.to_string_lossy().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One environment variable of `pid`.
pub fn env_of(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{key}=")).map(|v| v.to_string())
    })
}

/// Runs `heird reload --socket DIR/control.sock` and returns (success, stdout+stderr).
pub fn reload(dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["reload", "--timeout", "20s", "--socket"])
        .arg(dir.join("control.sock"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Waits until `/info` on `addr` reports a pid other than `old`; returns the new pid.
pub fn wait_new_pid(addr: SocketAddr, old: u32, d: Duration) -> Option<u32> {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if let Ok((200, r)) = get(addr, "/info")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(body(&r))
        {
            let p = v["pid"].as_u64().unwrap_or(0) as u32;
            if p != old && p != 0 {
                return Some(p);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A heird started for a test, with a config file and a fake notify socket; optionally from a
/// private copy of the binary (so that a test can replace or remove it).
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub bin: PathBuf,
    pub cfg: PathBuf,
    pub notify: FakeNotify,
    pub h: Heird,
}

pub fn start_heird(config: &str, own_binary: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bin = if own_binary {
        let b = dir.path().join("heird");
        std::fs::copy(BIN, &b).unwrap();
        b
    } else {
        PathBuf::from(BIN)
    };
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, config).unwrap();
    let notify = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut sp = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ],
    );
    sp.bin = bin.clone();
    let h = sp.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).start();
    wait_serving(addr, &h);
    Setup {
        dir,
        addr,
        bin,
        cfg,
        notify,
        h,
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body from a kept-alive connection;
/// returns (head, body). Panics if the connection closes first.
pub fn read_response(r: &mut BufReader<TcpStream>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed; got so far: {head:?}");
        if line == "\r\n" {
            break;
        }
        head += &line;
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// Starts the load client (`keepalive` + `newconn` clients on `path`) and waits until `warm`
/// requests have succeeded, so that what follows happens under load.
pub fn warm_load(
    addr: SocketAddr,
    path: &str,
    keepalive: usize,
    newconn: usize,
    warm: u64,
) -> super::load::LoadHandle {
    let mut cfg = super::load::LoadConfig::new(addr);
    cfg.path = path.into();
    cfg.keepalive_clients = keepalive;
    cfg.newconn_clients = newconn;
    let load = super::load::start(cfg);
    assert!(
        load.wait_until(Duration::from_secs(5), |st| st.ok > warm),
        "the load never warmed up"
    );
    load
}

/// Waits for `cond` until `d` passes; true when it held.
pub fn wait_until(d: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// The inode of the server's end of the TCP connection `server` ↔ `client` (IPv4), from
/// `/proc/net/tcp`.
pub fn server_side_inode(server: SocketAddr, client: SocketAddr) -> Option<String> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => String::new(),
    };
    let (l, r) = (hex(server), hex(client));
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(1) == Some(&l.as_str()) && cols.get(2) == Some(&r.as_str()))
                .then(|| cols[9].to_string())
        })
}

/// True once process `pid` holds the server's end of the connection from `client`.
pub fn accepted_by(pid: u32, server: SocketAddr, client: SocketAddr) -> bool {
    let Some(inode) = server_side_inode(server, client) else {
        return false;
    };
    fd_table(pid)
        .iter()
        .any(|(_, t)| *t == format!("socket:[{inode}]"))
}

/// Sends `GET path` (`Connection: close`) on a new connection and returns once process `pid`
/// has accepted it, so that the request is that process's; the thread returns what [`get`]
/// returns.
pub fn get_accepted_by(
    addr: SocketAddr,
    path: &str,
    pid: u32,
) -> std::thread::JoinHandle<std::io::Result<(u16, String)>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    let local = s.local_addr().unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || accepted_by(pid, addr, local)),
        "pid {pid} did not accept the connection for {path}"
    );
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, out))
    })
}

/// The receive queue of the server's end of `server` ↔ `client` (IPv4): bytes the client sent
/// that the process holding that end has not read yet; `None` while there is no such
/// connection (from `/proc/net/tcp`).
pub fn server_side_unread(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => String::new(),
    };
    let (l, r) = (hex(server), hex(client));
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(1) != Some(&l.as_str()) || cols.get(2) != Some(&r.as_str()) {
                return None;
            }
            let (_, rx) = cols.get(4)?.split_once(':')?;
            u64::from_str_radix(rx, 16).ok()
        })
}

/// True once process `pid` holds the server's end of the connection from `client` and has read
/// everything sent on it so far.
pub fn read_by(pid: u32, server: SocketAddr, client: SocketAddr) -> bool {
    accepted_by(pid, server, client) && server_side_unread(server, client) == Some(0)
}

/// The client ends (IPv4) of the established TCP connections to `server` (from
/// `/proc/net/tcp`), for a connection that another program (curl) opened.
pub fn clients_of(server: SocketAddr) -> Vec<SocketAddr> {
    let SocketAddr::V4(v4) = server else {
        return Vec::new();
    };
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port());
    let parse = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((ip, port)))
    };
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(2) == Some(&want.as_str()) && cols.get(3) == Some(&"01")).then(|| parse(cols[1]))?
        })
        .collect()
}

/// Sends `GET path` (`Connection: close`) on a new connection and returns once process `pid`
/// has accepted it and read the whole request, so that the request is in that process's
/// handler (in flight), not waiting in a socket buffer; the thread returns what [`get`]
/// returns.
pub fn get_read_by(
    addr: SocketAddr,
    path: &str,
    pid: u32,
) -> std::thread::JoinHandle<std::io::Result<(u16, String)>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    let local = s.local_addr().unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || read_by(pid, addr, local)),
        "pid {pid} did not accept and read the request for {path} (unread: {:?})",
        server_side_unread(addr, local)
    );
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, out))
    })
}

/// Runs a client command of `bin` (`reload`, `stop`) as outside systemd (no
/// `RUNTIME_DIRECTORY`, no `MAINPID`); returns its exit code and stdout + stderr.
pub fn client_command(bin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("MAINPID")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
