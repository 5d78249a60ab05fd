//! `bench-heird`: the benchmark behind `bench/run.sh` (see `bench/README.md`). It measures, in
//! one run, and prints as one set of tables:
//!
//! 1. **Reload under load**: the load client of `tests/support/load.rs` (C keep-alive + K
//!    new-connection clients on `/sleep?duration=10ms`) for T seconds with a handoff every S
//!    seconds, once with heird's handoff (SIGUSR2) and once with a naive stop-then-start on the
//!    same port (SIGTERM, wait for the exit, start a new process) as the baseline, and once
//!    with a socket-activated stop-then-start (the driver holds the listening socket and gives
//!    it to each new process as fd 3, as systemd's socket units do: nothing is refused, but
//!    every keep-alive connection is closed).
//! 2. **Throughput**: `wrk` against heird's `/` and against `bench-plain-axum` (and optionally a
//!    Go net/http hello), interleaved, server and client pinned to separate cores.
//! 3. **Footprint**: idle RSS, binary size (as built and stripped), exec → `READY=1`.
//!
//! Everything runs against a private copy of the heird binary, so a concurrent
//! `cargo build --release` does not change what is measured halfway through.
//!
//! The pictures (SVG, drawn here from the raw samples) go to `--plots DIR`: latency over time
//! with each restart marked, per reload mode, and CPU per request side by side.
//!
//! With `--write FILE` the tables and the raw numbers are written as markdown into FILE, in a
//! block of their own per mode (`default`, `long`), so one file holds both modes.

#[path = "../tests/support/load.rs"]
mod load;
#[path = "support/svg.rs"]
mod svg;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Parser)]
#[command(
    name = "bench-heird",
    about = "heird's reload, throughput and footprint benchmark"
)]
struct Cli {
    /// The heird binary to measure (copied to a private directory first).
    #[arg(long, default_value = "target/release/heird")]
    bin: PathBuf,
    /// The plain axum baseline server (examples/bench-plain-axum.rs).
    #[arg(long, default_value = "target/release/examples/bench-plain-axum")]
    axum_bin: PathBuf,
    /// heird serving the router of bench-plain-axum (examples/bench-heird-hello.rs): the
    /// like-for-like comparison; skipped when the file is missing.
    #[arg(long, default_value = "target/release/examples/bench-heird-hello")]
    hello_bin: PathBuf,
    /// Set TCP_NODELAY in the axum baseline too, as heird does (like for like).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    axum_nodelay: bool,
    /// Optional Go net/http hello server (takes the address as its only argument).
    #[arg(long)]
    go_bin: Option<PathBuf>,
    /// Long mode: at least 100 handoffs per reload run (T = 100 × S + 10 s unless --duration is
    /// given) and 9 throughput rounds (unless --rounds is given).
    #[arg(long)]
    long: bool,
    /// Sections to run, comma-separated: reload, throughput, footprint, many (idle
    /// connections moved in one handoff; not in the default set).
    #[arg(long, default_value = "reload,throughput,footprint", value_delimiter = ',')]
    sections: Vec<String>,

    /// Reload: keep-alive clients (C).
    #[arg(short = 'c', long, default_value_t = 32)]
    keepalive: usize,
    /// Reload: new-connection clients (K).
    #[arg(short = 'k', long, default_value_t = 8)]
    newconn: usize,
    /// Reload: length of each run (T); default 20s, or enough for 100+ handoffs with --long.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Reload: time between handoffs (S).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Reload: request target.
    #[arg(long, default_value = "/sleep?duration=10ms")]
    path: String,
    /// Reload: per-request timeout of the load client.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Reload: the window after each handoff signal compared with the steady windows.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    window: Duration,

    /// Throughput: rounds per server (default 5, 9 with --long).
    #[arg(long)]
    rounds: Option<usize>,
    /// Throughput: length of one wrk run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    tp_duration: Duration,
    /// Throughput: wrk connections.
    #[arg(long, default_value_t = 32)]
    wrk_connections: usize,
    /// Throughput: wrk threads.
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// Throughput: core the servers are pinned to.
    #[arg(long, default_value = "1")]
    server_cpu: String,
    /// Throughput: also load heird's `/healthz` (heird without the demo app's pid header).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    healthz: bool,
    /// Throughput: core wrk is pinned to.
    #[arg(long, default_value = "0")]
    client_cpu: String,
    /// Many: idle keep-alive connections moved in one handoff.
    #[arg(long, default_value_t = 10_000)]
    many_conns: usize,
    /// Footprint: number of starts timed (exec → READY=1).
    #[arg(long, default_value_t = 20)]
    starts: usize,

    /// Keep the work directory (heird's logs, the binary copy) and print its path.
    #[arg(long)]
    keep_work: bool,
    /// Write the results as markdown into this file (this mode's block is replaced).
    #[arg(long)]
    write: Option<PathBuf>,
    /// The command line to record in the results (bench/run.sh passes its own).
    #[arg(long)]
    command: Option<String>,
    /// Directory for the pictures (SVG); default: the directory of `--write`, else
    /// target/bench-plots.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Also draw instructions per request from this file (lines `SERIES PROTO INSTRUCTIONS`,
    /// as bench/callgrind.sh writes them; several files with commas).
    #[arg(long, value_delimiter = ',')]
    instructions: Vec<PathBuf>,
    /// Reload modes to run, comma-separated: handoff, naive, socket.
    #[arg(long, default_value = "handoff,naive,socket", value_delimiter = ',')]
    modes: Vec<String>,
}

impl Cli {
    fn mode(&self) -> &'static str {
        if self.long { "long" } else { "default" }
    }
    fn reload_duration(&self) -> Duration {
        self.duration.unwrap_or(if self.long {
            self.every * 100 + Duration::from_secs(10)
        } else {
            Duration::from_secs(20)
        })
    }
    fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.long { 9 } else { 5 })
    }
    fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }
    fn plots_dir(&self) -> PathBuf {
        match (&self.plots, &self.write) {
            (Some(d), _) => d.clone(),
            (None, Some(w)) => w
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            (None, None) => PathBuf::from("target/bench-plots"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-heird: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // Successors of heird outlive their parents; as a subreaper we get them back and reap them.
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut work = tempfile::Builder::new().prefix("bench-heird.").tempdir()?;
    if cli.keep_work {
        work.disable_cleanup(true);
        eprintln!("bench: work directory {} (kept)", work.path().display());
    }
    let bin = work.path().join("heird");
    std::fs::copy(&cli.bin, &bin).with_context(|| format!("cannot copy {}", cli.bin.display()))?;
    let started = SystemTime::now();
    let revision = revision();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut reload = Vec::new();
    if cli.section("reload") {
        let modes = [Mode::Handoff, Mode::Naive, Mode::Socket]
            .into_iter()
            .filter(|m| cli.modes.iter().any(|n| n == m.key()));
        for mode in modes {
            eprintln!(
                "bench: reload, {}: {} s, a restart every {} s ...",
                mode.name(),
                cli.reload_duration().as_secs_f64(),
                cli.every.as_secs_f64()
            );
            let r = run_reload(cli, &bin, work.path(), mode)?;
            eprintln!("{}", r.one_line());
            reload.push(r);
        }
    }
    let throughput = if cli.section("throughput") {
        eprintln!("bench: throughput, {} rounds ...", cli.rounds());
        Some(run_throughput(cli, &bin)?)
    } else {
        None
    };
    let footprint = if cli.section("footprint") {
        eprintln!("bench: footprint, {} starts ...", cli.starts);
        Some(run_footprint(cli, &bin, work.path())?)
    } else {
        None
    };

    if cli.section("many") {
        eprintln!(
            "bench: {} idle connections moved in one handoff ...",
            cli.many_conns
        );
        let m = run_many(cli, &bin, work.path())?;
        println!("{}", m.table(cli.many_conns));
    }

    let report = Report {
        cli,
        started,
        load_before,
        revision,
        load_after: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        reload,
        throughput,
        footprint,
    };
    let tables = report.tables();
    println!("{tables}");
    for (file, svg) in report.plots() {
        let dir = cli.plots_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench: drew {}", path.display());
    }
    if let Some(path) = &cli.write {
        write_block(path, cli.mode(), &report.markdown())?;
        eprintln!("bench: wrote {} (block {:?})", path.display(), cli.mode());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Processes: fake notify socket, reaper, /proc readings.

struct NotifyMsg {
    at: Instant,
    pid: u32,
    text: String,
}

/// A fake `$NOTIFY_SOCKET`: records every datagram with its sender's pid and arrival time, and
/// closes fds passed with it at once (which completes `BARRIER=1`, as systemd does).
struct FakeNotify {
    path: PathBuf,
    log: Arc<Mutex<Vec<NotifyMsg>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNotify {
    fn new(path: PathBuf) -> anyhow::Result<FakeNotify> {
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

    fn cursor(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits for a message from `cursor` on that satisfies `pred`; moves the cursor past it.
    fn wait(
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

fn recv_notify(sock: &UnixDatagram) -> Option<NotifyMsg> {
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
struct Reaper {
    exits: Arc<Mutex<HashMap<u32, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    fn start() -> Reaper {
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

    fn exited(&self, pid: u32) -> Option<Instant> {
        self.exits.lock().unwrap().get(&pid).copied()
    }

    fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<Instant> {
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
struct ProcStatus {
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Option<ProcStatus> {
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
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn heird_command(bin: &Path, addr: SocketAddr) -> Command {
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
fn pass_as_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
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
fn get_ok(addr: SocketAddr, path: &str) -> bool {
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

fn wait_serving(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !get_ok(addr, "/") {
        if Instant::now() >= deadline {
            bail!("{addr} did not answer GET / within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn strip_ansi(s: &str) -> String {
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
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

// ---------------------------------------------------------------------------------------------
// Statistics helpers.

/// Nearest-rank percentile of an ascending slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// p50 / p99 / max of latencies in µs.
#[derive(Debug, Clone, Copy)]
struct Lat {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Lat {
    fn of(us: Vec<f64>) -> Lat {
        let s = sorted(us);
        Lat {
            n: s.len(),
            p50: pct(&s, 50.0),
            p99: pct(&s, 99.0),
            max: pct(&s, 100.0),
        }
    }
    fn cell(&self) -> String {
        format!("{} / {} / {}", ms_us(self.p50), ms_us(self.p99), ms_us(self.max))
    }
}

fn ms_us(us: f64) -> String {
    if us.is_nan() {
        "–".into()
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

fn f1(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.1}")
    }
}

fn f2(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.2}")
    }
}

/// "median / max" of a set of ms values, with n.
fn med_max(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let s = sorted(v.to_vec());
    format!("{} / {}", f1(median(&s)), f1(pct(&s, 100.0)))
}

// ---------------------------------------------------------------------------------------------
// 1. Reload under load.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Handoff,
    Naive,
    /// Stop-then-start with a listening socket the driver holds and passes as fd 3 (systemd's
    /// socket activation, `Restart=` of a `.service` with a `.socket`).
    Socket,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Handoff => "heird handoff (SIGUSR2)",
            Mode::Naive => "naive stop-then-start",
            Mode::Socket => "socket-activated stop-then-start",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Mode::Handoff => "handoff",
            Mode::Naive => "naive",
            Mode::Socket => "socket",
        }
    }
}

/// One restart. Times are ms since the load started.
#[derive(Debug, Clone)]
struct Restart {
    signal: f64,
    /// The successor is ready: `MAINPID=`+`READY=1` from the old process (handoff), `READY=1` of
    /// the new process (naive).
    ready: Option<f64>,
    old_exit: Option<f64>,
    old: u32,
    new: Option<u32>,
    /// heird's own `successor ready ... ready_ms=` (fork → ready message), handoff only.
    log_ready_ms: Option<f64>,
    /// Completion of the first OK response from the new pid (ms clock of the samples).
    first_response: Option<f64>,
    /// Highest latency of the OK responses completed in the window after this signal (µs).
    window_max_us: f64,
    failure: Option<String>,
}

struct ReloadResult {
    mode: Mode,
    stats: load::Stats, // without samples
    elapsed_s: f64,
    restarts: Vec<Restart>,
    steady: Lat,
    after: Lat,
    all: Lat,
    rss_main_kib: Vec<u64>,
    rss_sum_max_kib: u64,
    leftovers: Vec<u32>,
    /// (ms since start at completion, latency µs) of every OK response, for the pictures.
    samples: Vec<(u64, u64)>,
    failure_times: Vec<u64>,
    reconnect_times: Vec<u64>,
}

impl ReloadResult {
    fn ok_restarts(&self) -> usize {
        self.restarts.iter().filter(|r| r.failure.is_none()).count()
    }
    fn signal_to_ready(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .filter_map(|r| Some(r.ready? - r.signal))
            .collect()
    }
    fn signal_to_first(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .filter_map(|r| Some(r.first_response? - r.signal))
            .collect()
    }
    fn log_ready(&self) -> Vec<f64> {
        self.restarts.iter().filter_map(|r| r.log_ready_ms).collect()
    }
    fn signal_to_old_exit(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .filter_map(|r| Some(r.old_exit? - r.signal))
            .collect()
    }
    fn p99_ratio(&self) -> f64 {
        self.after.p99 / self.steady.p99
    }
    fn reconnects_per_restart(&self) -> f64 {
        self.stats.reconnects as f64 / self.restarts.len().max(1) as f64
    }
    fn one_line(&self) -> String {
        format!(
            "bench:   {}: {} restarts ({} ok), {} ok requests, {} failed, {} reconnects, p99 steady {} ms / after {} ms",
            self.mode.name(),
            self.restarts.len(),
            self.ok_restarts(),
            self.stats.ok,
            self.stats.failed(),
            self.stats.reconnects,
            ms_us(self.steady.p99),
            ms_us(self.after.p99)
        )
    }
}

fn run_reload(cli: &Cli, bin: &Path, work: &Path, mode: Mode) -> anyhow::Result<ReloadResult> {
    let dir = work.join(format!("reload-{}", mode.key()));
    std::fs::create_dir_all(&dir)?;
    let notify = FakeNotify::new(dir.join("notify.sock"))?;
    let reaper = Reaper::start();
    // Socket mode: the listening socket lives here, as in systemd's socket unit.
    let held = if mode == Mode::Socket {
        Some(TcpListener::bind("127.0.0.1:0")?)
    } else {
        None
    };
    let addr: SocketAddr = match &held {
        Some(l) => l.local_addr()?,
        None => ([127, 0, 0, 1], free_port()?).into(),
    };
    let log_path = dir.join("heird.log");
    let log = File::create(&log_path)?;
    let spawn = || -> anyhow::Result<u32> {
        let mut cmd = heird_command(bin, addr);
        if let Some(l) = &held {
            pass_as_fd3(&mut cmd, l.as_raw_fd());
        }
        let child = cmd
            .env("NOTIFY_SOCKET", &notify.path)
            .env("RUNTIME_DIRECTORY", &dir)
            .stderr(log.try_clone()?)
            .spawn()
            .context("cannot start heird")?;
        // The reaper waits for it; dropping a Child neither kills nor waits.
        Ok(child.id())
    };
    let mut cursor = notify.cursor();
    let first = spawn()?;
    notify
        .wait(&mut cursor, Duration::from_secs(10), |m| {
            m.pid == first && m.text.lines().any(|l| l == "READY=1")
        })
        .ok_or_else(|| {
            anyhow!(
                "heird (pid {first}) sent no READY=1 within 10 s; see {}",
                log_path.display()
            )
        })?;

    let main = Arc::new(AtomicU32::new(first));
    let known = Arc::new(Mutex::new(vec![first]));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (main, known, sampling) = (main.clone(), known.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut rss = Vec::new();
            let mut sum_max = 0;
            while sampling.load(Ordering::SeqCst) {
                if let Some(st) = proc_status(main.load(Ordering::SeqCst)) {
                    rss.push(st.rss_kib);
                }
                let pids = known.lock().unwrap().clone();
                let sum: u64 = pids
                    .iter()
                    .filter_map(|p| proc_status(*p))
                    .map(|s| s.rss_kib)
                    .sum();
                sum_max = sum_max.max(sum);
                std::thread::sleep(Duration::from_millis(50));
            }
            (rss, sum_max)
        })
    };

    let duration = cli.reload_duration();
    let handle = load::start(load::LoadConfig {
        addr,
        path: cli.path.clone(),
        keepalive_clients: cli.keepalive,
        newconn_clients: cli.newconn,
        request_timeout: cli.timeout,
        tls: None,
    });
    let t0 = Instant::now() - handle.elapsed();
    let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;

    let mut restarts = Vec::new();
    for k in 1u32.. {
        let at = cli.every * k;
        if at + cli.window > duration {
            break;
        }
        let now = t0.elapsed();
        if at > now {
            std::thread::sleep(at - now);
        }
        let old = main.load(Ordering::SeqCst);
        let mut r = Restart {
            signal: 0.0,
            ready: None,
            old_exit: None,
            old,
            new: None,
            log_ready_ms: None,
            first_response: None,
            window_max_us: 0.0,
            failure: None,
        };
        let mut cursor = notify.cursor();
        match mode {
            Mode::Handoff => {
                r.signal = ms(Instant::now());
                signal(old, libc::SIGUSR2);
                let got = notify.wait(&mut cursor, Duration::from_secs(40), |m| {
                    m.pid == old
                        && (m.text.lines().any(|l| l.starts_with("MAINPID="))
                            || m.text.contains("handoff failed"))
                });
                match got {
                    Some((at, _, text)) => {
                        let new = text
                            .lines()
                            .find_map(|l| l.strip_prefix("MAINPID="))
                            .and_then(|p| p.parse::<u32>().ok());
                        match new {
                            Some(new) => {
                                r.ready = Some(ms(at));
                                r.new = Some(new);
                                known.lock().unwrap().push(new);
                                main.store(new, Ordering::SeqCst);
                            }
                            None => r.failure = Some(text.replace('\n', " ")),
                        }
                    }
                    None => r.failure = Some("no MAINPID=/handoff failed within 40 s".into()),
                }
            }
            Mode::Naive | Mode::Socket => {
                r.signal = ms(Instant::now());
                signal(old, libc::SIGTERM);
                let Some(exit) = reaper.wait_exit(old, Duration::from_secs(40)) else {
                    bail!("naive: pid {old} did not exit within 40 s of SIGTERM");
                };
                r.old_exit = Some(ms(exit));
                let new = spawn()?;
                known.lock().unwrap().push(new);
                main.store(new, Ordering::SeqCst);
                r.new = Some(new);
                match notify.wait(&mut cursor, Duration::from_secs(10), |m| {
                    m.pid == new && m.text.lines().any(|l| l == "READY=1")
                }) {
                    Some((at, _, _)) => r.ready = Some(ms(at)),
                    None => r.failure = Some(format!("pid {new} sent no READY=1 within 10 s")),
                }
            }
        }
        restarts.push(r);
    }
    let left = duration.saturating_sub(t0.elapsed());
    std::thread::sleep(left);
    let mut stats = handle.stop();
    let elapsed_s = t0.elapsed().as_secs_f64();
    sampling.store(false, Ordering::SeqCst);
    let (rss_main_kib, rss_sum_max_kib) = sampler.join().map_err(|_| anyhow!("sampler panicked"))?;

    // Stop the last one and wait for every process of the run to be gone.
    signal(main.load(Ordering::SeqCst), libc::SIGTERM);
    let mut leftovers = Vec::new();
    let pids = known.lock().unwrap().clone();
    for pid in &pids {
        if reaper.wait_exit(*pid, Duration::from_secs(40)).is_none() {
            leftovers.push(*pid);
            signal(*pid, libc::SIGKILL);
        }
    }
    for r in &mut restarts {
        if r.old_exit.is_none() {
            r.old_exit = reaper.exited(r.old).map(ms);
        }
    }
    drop(reaper);

    // heird's own fork → ready figure, per successor pid.
    let text = strip_ansi(&std::fs::read_to_string(&log_path).unwrap_or_default());
    let mut log_ready: HashMap<u32, f64> = HashMap::new();
    for line in text.lines().filter(|l| l.contains("successor ready")) {
        if let (Some(pid), Some(ms)) = (field(line, "pid"), field(line, "ready_ms"))
            && let (Ok(pid), Ok(ms)) = (pid.parse(), ms.parse())
        {
            log_ready.insert(pid, ms);
        }
    }

    // First response per pid, and the latency windows.
    let mut first_by_pid: HashMap<u32, u64> = HashMap::new();
    for &(at, _, pid) in &stats.samples {
        let e = first_by_pid.entry(pid).or_insert(at);
        *e = (*e).min(at);
    }
    for r in &mut restarts {
        if let Some(new) = r.new {
            r.log_ready_ms = log_ready.get(&new).copied();
            r.first_response = first_by_pid.get(&new).map(|&t| t as f64);
        }
    }
    let window_ms = cli.window.as_secs_f64() * 1e3;
    let warmup_ms = 1000.0;
    let starts: Vec<f64> = restarts.iter().map(|r| r.signal).collect();
    let (mut steady, mut after, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for &(at, us, _) in &stats.samples {
        let t = at as f64;
        let us = us as f64;
        all.push(us);
        // The last signal at or before t (ms of the samples are truncated: compare at ms).
        let idx = starts.partition_point(|&s| s.floor() <= t);
        let in_after = idx > 0 && t < starts[idx - 1] + window_ms;
        if in_after {
            let w = &mut restarts[idx - 1].window_max_us;
            *w = w.max(us);
            after.push(us);
        } else if t >= warmup_ms {
            steady.push(us);
        }
    }
    let samples = std::mem::take(&mut stats.samples)
        .into_iter()
        .map(|(at, us, _)| (at, us))
        .collect();
    let failure_times = std::mem::take(&mut stats.failure_times);
    let reconnect_times = std::mem::take(&mut stats.reconnect_times);
    Ok(ReloadResult {
        samples,
        failure_times,
        reconnect_times,
        mode,
        stats,
        elapsed_s,
        restarts,
        steady: Lat::of(steady),
        after: Lat::of(after),
        all: Lat::of(all),
        rss_main_kib,
        rss_sum_max_kib,
        leftovers,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Throughput.

struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    idle: Option<ProcStatus>,
    after: Option<ProcStatus>,
    affinity: String,
}

struct WrkRun {
    round: usize,
    server: &'static str,
    rps: f64,
    requests: u64,
    p50: String,
    p99: String,
    errors: String,
    server_cpu: f64,
    /// Server CPU time per request (µs): less sensitive than req/s to what else the machine runs.
    cpu_us_per_req: f64,
}

/// name, address, RSS idle, RSS after the runs, `Cpus_allowed_list`.
type ServerInfo = (String, SocketAddr, Option<ProcStatus>, Option<ProcStatus>, String);

struct Throughput {
    runs: Vec<WrkRun>,
    targets: Vec<&'static str>,
    servers: Vec<ServerInfo>,
    wrk_version: String,
}

impl Throughput {
    fn rps(&self, server: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.server == server)
            .map(|r| r.rps)
            .collect()
    }
    fn cpu_per_req(&self, server: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.server == server)
            .map(|r| r.cpu_us_per_req)
            .collect()
    }
    /// Per-round ratios server/axum.
    fn ratios(&self, server: &str) -> Vec<f64> {
        let rounds = self.runs.iter().map(|r| r.round).max().map_or(0, |m| m + 1);
        (0..rounds)
            .filter_map(|round| {
                let get = |s: &str| {
                    self.runs
                        .iter()
                        .find(|r| r.round == round && r.server == s)
                        .map(|r| r.rps)
                };
                Some(get(server)? / get("axum")?)
            })
            .collect()
    }
}

fn start_pinned(name: &'static str, cpu: &str, cmd: Command, addr: SocketAddr) -> anyhow::Result<Server> {
    // taskset execs the server, so the child's pid is the server's.
    let mut pinned = Command::new("taskset");
    pinned
        .arg("-c")
        .arg(cpu)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => pinned.env(k, v),
            None => pinned.env_remove(k),
        };
    }
    pinned
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = pinned
        .spawn()
        .with_context(|| format!("cannot start {name} (taskset)"))?;
    let server = Server {
        name,
        addr,
        child,
        idle: None,
        after: None,
        affinity: String::new(),
    };
    wait_serving(addr, Duration::from_secs(10)).with_context(|| format!("{name} is not serving"))?;
    Ok(server)
}

fn affinity(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default()
}

fn run_wrk(
    cli: &Cli,
    round: usize,
    (name, server, path): (&'static str, &Server, &str),
    duration: Duration,
) -> anyhow::Result<WrkRun> {
    let pid = server.child.id();
    let ticks0 = cpu_ticks(pid).unwrap_or(0);
    let t0 = Instant::now();
    let out = Command::new("taskset")
        .arg("-c")
        .arg(&cli.client_cpu)
        .arg("wrk")
        .arg(format!("-t{}", cli.wrk_threads))
        .arg(format!("-c{}", cli.wrk_connections))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg(format!("http://{}{path}", server.addr))
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let wall = t0.elapsed().as_secs_f64();
    let ticks1 = cpu_ticks(pid).unwrap_or(0);
    let cpu_s = ticks1.saturating_sub(ticks0) as f64 / clock_ticks();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output: {text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let dist = |p: &str| {
        text.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(p)).then(|| w.next().unwrap_or("").to_string())
            })
            .unwrap_or_default()
    };
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| l.trim().to_string())
        .collect();
    Ok(WrkRun {
        round,
        server: name,
        rps,
        requests,
        p50: dist("50%"),
        p99: dist("99%"),
        errors: if errors.is_empty() {
            "none".into()
        } else {
            errors.join("; ")
        },
        server_cpu: cpu_s / wall,
        cpu_us_per_req: if requests > 0 {
            cpu_s * 1e6 / requests as f64
        } else {
            f64::NAN
        },
    })
}

fn start_servers(cli: &Cli, bin: &Path) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::new();
    let heird_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    servers.push(start_pinned(
        "heird",
        &cli.server_cpu,
        heird_command(bin, heird_addr),
        heird_addr,
    )?);
    let axum_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut axum = Command::new(&cli.axum_bin);
    axum.arg(axum_addr.to_string());
    if cli.axum_nodelay {
        axum.arg("--nodelay");
    }
    servers.push(start_pinned("axum", &cli.server_cpu, axum, axum_addr)?);
    if cli.hello_bin.exists() {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = heird_command(&cli.hello_bin, addr);
        // Not `heird serve`: the hello app takes only the address.
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        cmd = Command::new(&cli.hello_bin);
        cmd.arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        servers.push(start_pinned("heird hello", &cli.server_cpu, cmd, addr)?);
    }
    if let Some(go) = &cli.go_bin {
        let go_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = Command::new(go);
        cmd.arg(go_addr.to_string());
        servers.push(start_pinned("go", &cli.server_cpu, cmd, go_addr)?);
    }
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut servers {
        s.idle = proc_status(s.child.id());
        s.affinity = affinity(s.child.id());
    }
    Ok(servers)
}

fn stop_servers(servers: Vec<Server>) -> Vec<ServerInfo> {
    let mut out = Vec::new();
    for mut s in servers {
        s.after = proc_status(s.child.id());
        signal(s.child.id(), libc::SIGTERM);
        let _ = s.child.wait();
        out.push((s.name.to_string(), s.addr, s.idle, s.after, s.affinity));
    }
    out
}

fn run_throughput(cli: &Cli, bin: &Path) -> anyhow::Result<Throughput> {
    let mut runs = Vec::new();
    let mut first: Option<Vec<ServerInfo>> = None;
    let mut last = Vec::new();
    let mut targets: Vec<(&'static str, usize, &'static str)> = Vec::new();
    for round in 0..cli.rounds() {
        // Fresh server processes every round, so that one process that happens to be slow
        // (memory layout, where its pages landed) does not bias every round.
        let servers = start_servers(cli, bin)?;
        // What wrk loads: each server's `/`, and heird's `/healthz` too (a static "ok" without
        // the demo app's `x-heird-pid` header: heird's connection layer alone).
        targets = vec![("heird", 0, "/")];
        if cli.healthz {
            targets.push(("heird /healthz", 0, "/healthz"));
        }
        targets.extend((1..servers.len()).map(|i| (servers[i].name, i, "/")));
        // Warm-up, not recorded.
        for &(name, i, path) in &targets {
            run_wrk(cli, round, (name, &servers[i], path), Duration::from_secs(1))?;
        }
        // ABBA order: even rounds heird first, odd rounds axum first (a drift of the machine's
        // speed then biases neither).
        let mut order = targets.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for (name, i, path) in order {
            let r = run_wrk(cli, round, (name, &servers[i], path), cli.tp_duration)?;
            eprintln!(
                "bench:   round {} {}: {:.0} req/s (server cpu {:.0}%)",
                round + 1,
                r.server,
                r.rps,
                r.server_cpu * 100.0
            );
            runs.push(r);
        }
        last = stop_servers(servers);
        if first.is_none() {
            first = Some(last.clone());
        }
    }
    // Idle RSS from the first round's processes, "after" from the last round's.
    let out: Vec<ServerInfo> = match first {
        Some(first) => first
            .into_iter()
            .zip(last)
            .map(|(f, l)| (f.0, f.1, f.2, l.3, f.4))
            .collect(),
        None => Vec::new(),
    };
    let wrk_version = Command::new("wrk")
        .arg("-v")
        .output()
        .map(|o| {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            all.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default();
    Ok(Throughput {
        runs,
        targets: targets.iter().map(|t| t.0).collect(),
        servers: out,
        wrk_version,
    })
}

// ---------------------------------------------------------------------------------------------
// 4. Many idle connections moved in one handoff.

struct Many {
    opened: usize,
    open_s: f64,
    idle_rss_kib: u64,
    old_rss_with_kib: u64,
    signal_to_mainpid_ms: Option<f64>,
    signal_to_old_exit_ms: Option<f64>,
    moved_log: String,
    new_rss_with_kib: u64,
    new_fds: usize,
    answered_by_new: usize,
    moved_once: usize,
}

impl Many {
    fn table(&self, wanted: usize) -> String {
        let per =
            |with: u64| (with.saturating_sub(self.idle_rss_kib)) as f64 * 1024.0 / self.opened.max(1) as f64;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### 4. {wanted} idle keep-alive connections moved in one handoff\n\
             \n\
             | | |\n\
             |---|---|\n\
             | connections opened (each served one request first) | {} in {:.1} s |\n\
             | signal → `MAINPID=` of the successor (ms) | {} |\n\
             | signal → old process exited: all moved (ms) | {} |\n\
             | old process's count | {} |\n\
             | answered by the successor afterwards / with `connection_moves` = 1 | {} / {} |\n\
             | successor fds with the moved connections | {} |\n\
             | RSS: idle before / old with them / successor with them (MiB) | {} / {} / {} |\n\
             | memory per connection: old / successor (bytes, RSS above idle ÷ connections) | {:.0} / {:.0} |\n\
             ",
            self.opened,
            self.open_s,
            self.signal_to_mainpid_ms.map_or("–".into(), f1),
            self.signal_to_old_exit_ms.map_or("–".into(), f1),
            self.moved_log,
            self.answered_by_new,
            self.moved_once,
            self.new_fds,
            kib_mib(self.idle_rss_kib as f64),
            kib_mib(self.old_rss_with_kib as f64),
            kib_mib(self.new_rss_with_kib as f64),
            per(self.old_rss_with_kib),
            per(self.new_rss_with_kib),
        );
        out
    }
}

fn run_many(cli: &Cli, bin: &Path, work: &Path) -> anyhow::Result<Many> {
    // One fd per client socket here; heird raises its own limit.
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
    let dir = work.join("many");
    std::fs::create_dir_all(&dir)?;
    let notify = FakeNotify::new(dir.join("notify.sock"))?;
    let reaper = Reaper::start();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let log_path = dir.join("heird.log");
    let mut cursor = notify.cursor();
    let child = heird_command(bin, addr)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RUNTIME_DIRECTORY", &dir)
        .stderr(File::create(&log_path)?)
        .spawn()
        .context("cannot start heird")?;
    let old = child.id();
    notify
        .wait(&mut cursor, Duration::from_secs(10), |m| {
            m.pid == old && m.text.lines().any(|l| l == "READY=1")
        })
        .ok_or_else(|| anyhow!("heird sent no READY=1; see {}", log_path.display()))?;
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss_kib = proc_status(old).map_or(0, |s| s.rss_kib);

    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(cli.many_conns);
    let mut buf = [0u8; 4096];
    for i in 0..cli.many_conns {
        let mut c = match TcpStream::connect(addr) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bench:   connection {i}: {e}; going on with {i}");
                break;
            }
        };
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")?;
        let mut got = Vec::new();
        while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok")) {
            let n = c.read(&mut buf)?;
            if n == 0 {
                bail!("connection {i} closed before its response");
            }
            got.extend_from_slice(&buf[..n]);
        }
        conns.push(c);
    }
    let open_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let old_rss_with_kib = proc_status(old).map_or(0, |s| s.rss_kib);

    let mut cursor = notify.cursor();
    let t_signal = Instant::now();
    signal(old, libc::SIGUSR2);
    let got = notify.wait(&mut cursor, Duration::from_secs(60), |m| {
        m.pid == old && m.text.lines().any(|l| l.starts_with("MAINPID="))
    });
    let (signal_to_mainpid_ms, new) = match got {
        Some((at, _, text)) => (
            Some(at.duration_since(t_signal).as_secs_f64() * 1e3),
            text.lines()
                .find_map(|l| l.strip_prefix("MAINPID="))
                .and_then(|p| p.parse::<u32>().ok()),
        ),
        None => (None, None),
    };
    let signal_to_old_exit_ms = reaper
        .wait_exit(old, Duration::from_secs(120))
        .map(|t| t.saturating_duration_since(t_signal).as_secs_f64() * 1e3);
    std::thread::sleep(Duration::from_millis(300));
    let new = new.ok_or_else(|| anyhow!("no MAINPID= after the handoff; see {}", log_path.display()))?;
    let new_rss_with_kib = proc_status(new).map_or(0, |s| s.rss_kib);
    let new_fds = std::fs::read_dir(format!("/proc/{new}/fd")).map_or(0, |d| d.count());
    let text = strip_ansi(&std::fs::read_to_string(&log_path).unwrap_or_default());
    let moved_log = text
        .lines()
        .find(|l| l.contains("connections moved"))
        .map(|l| {
            format!(
                "moved={} not_moved={}",
                field(l, "moved").unwrap_or("?"),
                field(l, "not_moved").unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "no log line".into());

    // Every connection is still there, now served by the successor.
    let (mut answered_by_new, mut moved_once) = (0, 0);
    for c in conns.iter_mut() {
        if c.write_all(b"GET /info HTTP/1.1\r\nHost: b\r\n\r\n").is_err() {
            continue;
        }
        let mut got = Vec::new();
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"}") || got.ends_with(b"}\n") {
                break;
            }
        }
        let t = String::from_utf8_lossy(&got);
        answered_by_new += t.contains(&format!("\"pid\":{new}")) as usize;
        moved_once += t.contains("\"connection_moves\":1") as usize;
    }
    let opened = conns.len();
    drop(conns);
    signal(new, libc::SIGTERM);
    let _ = reaper.wait_exit(new, Duration::from_secs(60));
    let _ = child;
    Ok(Many {
        opened,
        open_s,
        idle_rss_kib,
        old_rss_with_kib,
        signal_to_mainpid_ms,
        signal_to_old_exit_ms,
        moved_log,
        new_rss_with_kib,
        new_fds,
        answered_by_new,
        moved_once,
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Footprint.

struct Footprint {
    exec_ready_ms: Vec<f64>,
    idle: Vec<ProcStatus>,
    size: u64,
    stripped: u64,
    profile_strip: String,
}

fn run_footprint(cli: &Cli, bin: &Path, work: &Path) -> anyhow::Result<Footprint> {
    let dir = work.join("footprint");
    std::fs::create_dir_all(&dir)?;
    let notify = FakeNotify::new(dir.join("notify.sock"))?;
    let mut exec_ready_ms = Vec::new();
    let mut idle = Vec::new();
    for i in 0..cli.starts {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cursor = notify.cursor();
        let mut cmd = heird_command(bin, addr);
        cmd.env("NOTIFY_SOCKET", &notify.path).stderr(Stdio::null());
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("cannot start heird")?;
        let pid = child.id();
        let ready = notify.wait(&mut cursor, Duration::from_secs(10), |m| {
            m.pid == pid && m.text.lines().any(|l| l == "READY=1")
        });
        match ready {
            Some((at, _, _)) => exec_ready_ms.push(at.duration_since(t0).as_secs_f64() * 1e3),
            None => eprintln!("bench:   start {i}: no READY=1 within 10 s"),
        }
        // Idle RSS: settled, never served a request.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(st) = proc_status(pid) {
            idle.push(st);
        }
        signal(pid, libc::SIGTERM);
        let _ = child.wait();
    }
    let size = std::fs::metadata(bin)?.len();
    let stripped_path = work.join("heird.stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(bin)
        .status()
        .context("cannot run strip")?;
    if !status.success() {
        bail!("strip failed: {status}");
    }
    let stripped = std::fs::metadata(&stripped_path)?.len();
    let profile_strip = std::fs::read_to_string("Cargo.toml")
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| {
            let v = t.get("profile")?.get("release")?.get("strip")?;
            Some(v.to_string())
        })
        .unwrap_or_else(|| "not set".into());
    Ok(Footprint {
        exec_ready_ms,
        idle,
        size,
        stripped,
        profile_strip,
    })
}

// ---------------------------------------------------------------------------------------------
// Report.

struct Report<'a> {
    cli: &'a Cli,
    started: SystemTime,
    revision: String,
    load_before: String,
    load_after: String,
    reload: Vec<ReloadResult>,
    throughput: Option<Throughput>,
    footprint: Option<Footprint>,
}

fn kib_mib(kib: f64) -> String {
    if kib.is_nan() {
        "–".into()
    } else {
        format!("{:.1}", kib / 1024.0)
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

impl Report<'_> {
    fn reload_cfg(&self) -> String {
        let c = self.cli;
        format!(
            "C={} keep-alive + K={} new-connection clients on `{}`, T={} s, a restart every S={} s, \
             \"after\" = the {} s after each signal, steady = the rest (first 1 s skipped)",
            c.keepalive,
            c.newconn,
            c.path,
            c.reload_duration().as_secs_f64(),
            c.every.as_secs_f64(),
            c.window.as_secs_f64()
        )
    }

    fn reload_table(&self, out: &mut String) {
        if self.reload.is_empty() {
            return;
        }
        let _ = writeln!(out, "### 1. Reload under load\n\n{}\n", self.reload_cfg());
        let _ = write!(out, "| |");
        for r in &self.reload {
            let _ = write!(out, " {} |", r.mode.name());
        }
        let _ = write!(out, "\n|---|");
        for _ in &self.reload {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
        type Row = (&'static str, fn(&ReloadResult) -> String);
        let rows: Vec<Row> = vec![
            ("restarts (ok)", |r| {
                format!("{} ({})", r.restarts.len(), r.ok_restarts())
            }),
            ("requests OK (req/s)", |r| {
                format!("{} ({:.0})", r.stats.ok, r.stats.ok as f64 / r.elapsed_s)
            }),
            ("**failed**", |r| format!("**{}**", r.stats.failed())),
            ("  refused / reset / closed before response", |r| {
                format!(
                    "{} / {} / {}",
                    r.stats.refused, r.stats.reset, r.stats.closed_before_response
                )
            }),
            ("  timeout / non-200 / other", |r| {
                format!("{} / {} / {}", r.stats.timeout, r.stats.non_200, r.stats.other)
            }),
            ("**reconnects** total (per restart)", |r| {
                format!("**{}** ({:.1})", r.stats.reconnects, r.reconnects_per_restart())
            }),
            ("`Connection: close` seen by keep-alive clients", |r| {
                r.stats.connection_close_seen.to_string()
            }),
            ("latency steady p50 / p99 / max (ms)", |r| r.steady.cell()),
            ("latency 1 s after restart p50 / p99 / max (ms)", |r| {
                r.after.cell()
            }),
            ("p99 after / p99 steady", |r| f2(r.p99_ratio())),
            ("signal → successor ready (ms, median / max)", |r| {
                med_max(&r.signal_to_ready())
            }),
            (
                "successor fork → ready, heird's `ready_ms` (median / max)",
                |r| med_max(&r.log_ready()),
            ),
            ("signal → first response from new pid (ms, median / max)", |r| {
                med_max(&r.signal_to_first())
            }),
            ("signal → old process exited (ms, median / max)", |r| {
                med_max(&r.signal_to_old_exit())
            }),
            ("RSS of the serving process (MiB, median / max)", |r| {
                let v: Vec<f64> = r.rss_main_kib.iter().map(|&k| k as f64).collect();
                let s = sorted(v.clone());
                format!("{} / {}", kib_mib(median(&v)), kib_mib(pct(&s, 100.0)))
            }),
            ("RSS of all heird processes, peak (MiB)", |r| {
                kib_mib(r.rss_sum_max_kib as f64)
            }),
        ];
        for (name, f) in rows {
            let _ = write!(out, "| {name} |");
            for r in &self.reload {
                let _ = write!(out, " {} |", f(r));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }

    fn throughput_table(&self, out: &mut String) {
        let Some(t) = &self.throughput else { return };
        let c = self.cli;
        let _ = writeln!(
            out,
            "### 2. Throughput (hello world, `GET /`)\n\n{} `-t{} -c{} -d{}s` pinned to core {}, servers \
             pinned to core {} (`taskset -c`), {} rounds in ABBA order, fresh server processes and a 1 s \
             warm-up each round, each ratio taken within its round. \
             `heird /healthz` is the same heird process answering a static `ok` without the demo app's \
             `x-heird-pid` header. Server CPU is the server's utime+stime over the run; per request it \
             depends less than req/s on what else the machine runs.\n",
            t.wrk_version,
            c.wrk_threads,
            c.wrk_connections,
            c.tp_duration.as_secs(),
            c.client_cpu,
            c.server_cpu,
            c.rounds()
        );
        let names: Vec<&str> = t.targets.clone();
        let _ = write!(out, "| round |");
        for n in &names {
            let _ = write!(out, " {n} req/s (server CPU) |");
        }
        for n in names.iter().filter(|n| **n != "axum") {
            let _ = write!(out, " {n} ÷ axum |");
        }
        let _ = write!(out, "\n|---|");
        for _ in 0..names.len() * 2 - 1 {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
        let rounds = c.rounds();
        for round in 0..rounds {
            let _ = write!(out, "| {} |", round + 1);
            for n in &names {
                match t.runs.iter().find(|r| r.round == round && r.server == *n) {
                    Some(r) => {
                        let _ = write!(out, " {:.0} ({:.0}%) |", r.rps, r.server_cpu * 100.0);
                    }
                    None => {
                        let _ = write!(out, " – |");
                    }
                }
            }
            for n in names.iter().filter(|n| **n != "axum") {
                let ratio = t.ratios(n).get(round).copied().unwrap_or(f64::NAN);
                let _ = write!(out, " {} |", format_ratio(ratio));
            }
            let _ = writeln!(out);
        }
        let _ = write!(out, "| **median** |");
        for n in &names {
            let _ = write!(out, " {:.0} |", median(&t.rps(n)));
        }
        for n in names.iter().filter(|n| **n != "axum") {
            let _ = write!(out, " **{}** |", format_ratio(median(&t.ratios(n))));
        }
        let _ = write!(out, "\n| server CPU per request, median (µs) |");
        for n in &names {
            let _ = write!(out, " {} |", f2(median(&t.cpu_per_req(n))));
        }
        for n in names.iter().filter(|n| **n != "axum") {
            let ratio = median(&t.cpu_per_req(n)) / median(&t.cpu_per_req("axum"));
            let _ = write!(out, " {}× the CPU |", f2(ratio));
        }
        let _ = writeln!(out, "\n");
    }

    fn footprint_table(&self, out: &mut String) {
        let Some(f) = &self.footprint else { return };
        let rss: Vec<f64> = f.idle.iter().map(|s| s.rss_kib as f64).collect();
        let anon: Vec<f64> = f.idle.iter().map(|s| s.anon_kib as f64).collect();
        let file: Vec<f64> = f.idle.iter().map(|s| s.file_kib as f64).collect();
        let threads: Vec<f64> = f.idle.iter().map(|s| s.threads as f64).collect();
        let er = sorted(f.exec_ready_ms.clone());
        let _ = writeln!(out, "### 3. Footprint\n");
        let _ = writeln!(out, "| | heird |\n|---|---|");
        let _ = writeln!(
            out,
            "| idle RSS, median of {} starts (MiB) | {} (anon {}, file {}; {} threads) |",
            f.idle.len(),
            kib_mib(median(&rss)),
            kib_mib(median(&anon)),
            kib_mib(median(&file)),
            median(&threads)
        );
        if let Some(t) = &self.throughput {
            for (name, _, idle, after, _) in &t.servers {
                let _ = writeln!(
                    out,
                    "| RSS of {name} pinned to one core: idle / after the wrk runs (MiB) | {} / {} |",
                    idle.map_or("–".into(), |s| kib_mib(s.rss_kib as f64)),
                    after.map_or("–".into(), |s| kib_mib(s.rss_kib as f64))
                );
            }
        }
        let _ = writeln!(
            out,
            "| binary as built (MiB; release profile `strip` = {}) | {:.2} |",
            f.profile_strip,
            f.size as f64 / MIB
        );
        let _ = writeln!(
            out,
            "| binary stripped with `strip` (MiB) | {:.2} |",
            f.stripped as f64 / MIB
        );
        let _ = writeln!(
            out,
            "| exec → READY=1, fresh start (ms, median / p90 / max of {}) | {} / {} / {} |",
            er.len(),
            f2(median(&er)),
            f2(pct(&er, 90.0)),
            f2(pct(&er, 100.0))
        );
        let _ = writeln!(out);
    }

    fn targets_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Targets (issue 6)\n\n| target | figure | |\n|---|---|---|"
        );
        if let Some(h) = self.reload.iter().find(|r| r.mode == Mode::Handoff) {
            let n = h.ok_restarts();
            let failed = h.stats.failed();
            let v = if n < 100 {
                format!(
                    "{} (only {n} handoffs: run `--long` for 100+)",
                    verdict(failed == 0)
                )
            } else {
                verdict(failed == 0).to_string()
            };
            let _ = writeln!(
                out,
                "| 0 failed requests over 100+ handoffs | {failed} failed over {n} handoffs ({} reconnects) | {v} |",
                h.stats.reconnects
            );
            let ratio = h.p99_ratio();
            let _ = writeln!(
                out,
                "| p99 in the 1 s after a handoff ≤ 1.05 × steady p99 | {} ms vs {} ms = {}× | {} |",
                ms_us(h.after.p99),
                ms_us(h.steady.p99),
                f2(ratio),
                verdict(ratio <= 1.05)
            );
            let lr = sorted(h.log_ready());
            let m = median(&lr);
            let _ = writeln!(
                out,
                "| exec → successor ready < 5 ms | fork → ready {} ms median, {} ms max, under load (signal → ready seen on the notify socket {} ms median) | {} |",
                f2(m),
                f2(pct(&lr, 100.0)),
                f2(median(&h.signal_to_ready())),
                verdict(m < 5.0)
            );
        }
        if let Some(t) = &self.throughput {
            let r = median(&t.ratios("heird"));
            let _ = writeln!(
                out,
                "| throughput ≥ 0.97 × plain axum | {}× (median of {} same-round ratios) | {} |",
                format_ratio(r),
                t.ratios("heird").len(),
                verdict(r >= 0.97)
            );
        }
        if let Some(f) = &self.footprint {
            let rss = median(&f.idle.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>());
            let _ = writeln!(
                out,
                "| idle RSS < 8 MiB | {} MiB | {} |",
                kib_mib(rss),
                verdict(rss < 8.0 * 1024.0)
            );
            let _ = writeln!(
                out,
                "| stripped binary < 4 MiB | {:.2} MiB (as built: {:.2} MiB) | {} |",
                f.stripped as f64 / MIB,
                f.size as f64 / MIB,
                verdict((f.stripped as f64) < 4.0 * MIB)
            );
        }
        let _ = writeln!(out);
    }

    fn tables(&self) -> String {
        let mut out = String::new();
        self.reload_table(&mut out);
        self.throughput_table(&mut out);
        self.footprint_table(&mut out);
        self.targets_table(&mut out);
        out
    }

    fn machine(&self) -> String {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|x| x.1.trim())
            })
            .unwrap_or("unknown")
            .to_string();
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse::<f64>().ok())
            .map_or("?".into(), |k| format!("{:.0} GiB", k / 1024.0 / 1024.0));
        let rustc = Command::new("rustc")
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        format!(
            "nproc {nproc}, {model}, {mem} RAM, Linux {}, {rustc}",
            kernel.trim()
        )
    }
}

/// The git revision of the work tree (taken when the run starts).
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "Cargo.toml",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} + uncommitted changes in src/ or Cargo.toml")
    } else {
        head
    }
}

impl Report<'_> {
    fn raw(&self, out: &mut String) {
        let _ = writeln!(out, "<details><summary>Raw numbers</summary>\n");
        for r in &self.reload {
            let s = &r.stats;
            let _ = writeln!(
                out,
                "**{}** — {:.2} s; ok {}, refused {}, reset {}, closed_before_response {}, timeout {}, \
                 non_200 {}, other {}, reconnects {}, connection_close_seen {}; all OK latencies p50/p99/max \
                 {} ms over {} samples (steady {}, after {}); processes left at the end: {:?}\n",
                r.mode.name(),
                r.elapsed_s,
                s.ok,
                s.refused,
                s.reset,
                s.closed_before_response,
                s.timeout,
                s.non_200,
                s.other,
                s.reconnects,
                s.connection_close_seen,
                r.all.cell(),
                r.all.n,
                r.steady.n,
                r.after.n,
                r.leftovers
            );
            if !s.errors.is_empty() {
                let _ = writeln!(out, "First failures:\n\n```");
                for e in &s.errors {
                    let _ = writeln!(out, "{e}");
                }
                let _ = writeln!(out, "```\n");
            }
            let _ = writeln!(
                out,
                "| # | signal at (ms) | → ready | fork → ready (heird) | → first new-pid response | → old exited | max latency in the window after | old → new pid | failure |\n|---|---|---|---|---|---|---|---|---|"
            );
            let opt = |v: Option<f64>, base: f64| v.map_or("–".into(), |v| format!("{:.1}", v - base));
            for (i, h) in r.restarts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {} | {} | {} | {} | {} | {} → {} | {} |",
                    i + 1,
                    h.signal,
                    opt(h.ready, h.signal),
                    h.log_ready_ms.map_or("–".into(), |v| format!("{v:.2}")),
                    opt(h.first_response, h.signal),
                    opt(h.old_exit, h.signal),
                    ms_us(h.window_max_us),
                    h.old,
                    h.new.map_or("–".into(), |p| p.to_string()),
                    h.failure.as_deref().unwrap_or("")
                );
            }
            let rss: Vec<String> = r.rss_main_kib.iter().step_by(10).map(|k| k.to_string()).collect();
            let _ = writeln!(
                out,
                "\nRSS of the serving process every 0.5 s (KiB): {}\n",
                rss.join(" ")
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                out,
                "wrk runs:\n\n| round | server | req/s | requests | p50 | p99 | server CPU | CPU µs/req | errors |\n|---|---|---|---|---|---|---|---|---|"
            );
            for r in &t.runs {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {} | {} | {} | {:.0}% | {:.2} | {} |",
                    r.round + 1,
                    r.server,
                    r.rps,
                    r.requests,
                    r.p50,
                    r.p99,
                    r.server_cpu * 100.0,
                    r.cpu_us_per_req,
                    r.errors
                );
            }
            let _ = writeln!(out);
            for (name, addr, _, _, aff) in &t.servers {
                let _ = writeln!(out, "- {name} on {addr}, Cpus_allowed_list {aff}");
            }
            let _ = writeln!(out);
        }
        if let Some(f) = &self.footprint {
            let er: Vec<String> = f.exec_ready_ms.iter().map(|v| format!("{v:.2}")).collect();
            let rss: Vec<String> = f.idle.iter().map(|s| s.rss_kib.to_string()).collect();
            let _ = writeln!(out, "exec → READY=1 per start (ms): {}\n", er.join(" "));
            let _ = writeln!(out, "idle VmRSS per start (KiB): {}\n", rss.join(" "));
            let _ = writeln!(
                out,
                "binary: {} bytes as built, {} bytes stripped\n",
                f.size, f.stripped
            );
        }
        let _ = writeln!(out, "</details>\n");
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let title = if self.cli.long {
            "Long mode"
        } else {
            "Default mode"
        };
        let _ = writeln!(out, "## {title}\n");
        let _ = writeln!(
            out,
            "- date: {} (UTC)\n- machine: {}\n- heird revision: {}\n- load average before / after: {} / {}\n- command: `{}`\n",
            humantime::format_rfc3339_seconds(self.started),
            self.machine(),
            self.revision,
            self.load_before
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            self.load_after
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            self.cli
                .command
                .clone()
                .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "))
        );
        out.push_str(&self.tables());
        self.raw(&mut out);
        out
    }
}

impl Report<'_> {
    /// The pictures: (file name, SVG).
    fn plots(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.reload.is_empty() {
            let signals: Vec<Vec<f64>> = self
                .reload
                .iter()
                .map(|r| r.restarts.iter().map(|x| x.signal).collect())
                .collect();
            let titles: Vec<String> = self
                .reload
                .iter()
                .map(|r| {
                    format!(
                        "{}: {} restarts, {} failed, {} reconnects, p99 steady {} ms / 1 s after {} ms",
                        r.mode.name(),
                        r.restarts.len(),
                        r.stats.failed(),
                        r.stats.reconnects,
                        ms_us(r.steady.p99),
                        ms_us(r.after.p99)
                    )
                })
                .collect();
            let panels: Vec<svg::LatencyPanel<'_>> = self
                .reload
                .iter()
                .enumerate()
                .map(|(i, r)| svg::LatencyPanel {
                    title: &titles[i],
                    samples: &r.samples,
                    restarts: &signals[i],
                    failures: &r.failure_times,
                    reconnects: &r.reconnect_times,
                    length_ms: r.elapsed_s * 1e3,
                })
                .collect();
            let c = self.cli;
            out.push((
                "reload-latency.svg".to_string(),
                svg::latency_over_time(
                    "Latency over time, a restart every dashed line",
                    &format!(
                        "C={} keep-alive + K={} new-connection clients on {}; heird {}; load {}",
                        c.keepalive,
                        c.newconn,
                        c.path,
                        self.revision,
                        self.load_before
                            .split_whitespace()
                            .take(3)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    &panels,
                    100,
                ),
            ));
        }
        if let Some(t) = &self.throughput {
            let groups: Vec<svg::BarGroup<'_>> = t
                .targets
                .iter()
                .map(|n| {
                    let v = t.cpu_per_req(n);
                    svg::BarGroup {
                        label: n,
                        bars: vec![(median(&v), v)],
                    }
                })
                .collect();
            out.push((
                "cpu-per-request.svg".to_string(),
                svg::bars(
                    "Server CPU per request, HTTP/1.1 keep-alive hello world (wrk)",
                    &format!(
                        "utime+stime / requests; bar = median, dots = rounds; server pinned to one core; heird {}; load {}",
                        self.revision,
                        self.load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                    ),
                    "µs",
                    &["server CPU per request (µs)"],
                    &groups,
                ),
            ));
        }
        if !self.cli.instructions.is_empty() {
            // SERIES PROTO VALUE lines; a series keeps the order it first appears in.
            let mut series: Vec<String> = Vec::new();
            let mut protos: Vec<String> = Vec::new();
            let mut vals: HashMap<(String, String), Vec<f64>> = HashMap::new();
            for f in &self.cli.instructions {
                for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    let [name, proto, v] = w[..] else { continue };
                    let Ok(v) = v.parse::<f64>() else { continue };
                    if !series.iter().any(|s| s == name) {
                        series.push(name.to_string());
                    }
                    if !protos.iter().any(|p| p == proto) {
                        protos.push(proto.to_string());
                    }
                    vals.entry((name.to_string(), proto.to_string()))
                        .or_default()
                        .push(v);
                }
            }
            let groups: Vec<svg::BarGroup<'_>> = protos
                .iter()
                .map(|p| svg::BarGroup {
                    label: p,
                    bars: series
                        .iter()
                        .map(|s| {
                            let v = vals.get(&(s.clone(), p.clone())).cloned().unwrap_or_default();
                            (median(&v), v)
                        })
                        .collect(),
                })
                .collect();
            let names: Vec<&str> = series.iter().map(String::as_str).collect();
            out.push((
                "instructions-per-request.svg".to_string(),
                svg::bars(
                    "Server user-space instructions per request (callgrind), hello world, one keep-alive connection",
                    "bench/callgrind.sh: (I(2N) - I(N)) / N, h2load -c1 -m1; the kernel's TCP work is not counted",
                    "instr.",
                    &names,
                    &groups,
                ),
            ));
        }
        out
    }
}

fn format_ratio(r: f64) -> String {
    if r.is_nan() {
        "–".into()
    } else {
        format!("{r:.3}")
    }
}

/// Replaces (or appends) the block of `mode` in `path`, keeping the rest of the file.
fn write_block(path: &Path, mode: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- bench:{mode} -->");
    let end = format!("<!-- /bench:{mode} -->");
    let block = format!("{begin}\n{body}{end}\n");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &old[..b],
            block,
            &old[e + end.len()..].trim_start_matches('\n')
        ),
        _ if old.trim().is_empty() => format!(
            "# heird benchmark results\n\nWritten by `bench/run.sh` (see `bench/README.md`); do not edit by hand.\n\
             One block per mode; each block is replaced when that mode runs again.\n\n{block}"
        ),
        _ => format!("{}\n{block}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}
