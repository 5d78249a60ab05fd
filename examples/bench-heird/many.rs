//! Section 4: many idle connections moved in one handoff.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::args::Cli;

use crate::procs::{
    FakeNotify, Reaper, field, free_port, heird_command, proc_status, raise_nofile, signal, strip_ansi,
};
use crate::report::kib_mib;
use crate::stats::f1;

pub(crate) struct Many {
    pub(crate) opened: usize,
    pub(crate) open_s: f64,
    pub(crate) idle_rss_kib: u64,
    pub(crate) old_rss_with_kib: u64,
    pub(crate) signal_to_mainpid_ms: Option<f64>,
    pub(crate) signal_to_old_exit_ms: Option<f64>,
    pub(crate) moved_log: String,
    pub(crate) new_rss_with_kib: u64,
    pub(crate) new_fds: usize,
    pub(crate) answered_by_new: usize,
    pub(crate) moved_once: usize,
}

impl Many {
    pub(crate) fn table(&self, wanted: usize) -> String {
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

pub(crate) fn run_many(cli: &Cli, bin: &Path, work: &Path) -> anyhow::Result<Many> {
    // One fd per client socket here; heird raises its own limit.
    raise_nofile();
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
    let mut conns = open_idle(addr, cli.many_conns)?;
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
    for t in info_replies(&mut conns) {
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

/// Opens up to `n` keep-alive connections and has each served one `GET /healthz` (so each is an
/// idle connection that has served a request); stops early, with a message, when `connect` fails.
pub(crate) fn open_idle(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for i in 0..n {
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
    Ok(conns)
}

/// Sends `GET /info` on every connection and returns each reply (empty when the connection was
/// gone).
pub(crate) fn info_replies(conns: &mut [TcpStream]) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(conns.len());
    for c in conns.iter_mut() {
        if c.write_all(b"GET /info HTTP/1.1\r\nHost: b\r\n\r\n").is_err() {
            out.push(String::new());
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
        out.push(String::from_utf8_lossy(&got).into_owned());
    }
    out
}
