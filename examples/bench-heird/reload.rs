//! Section 1, reload under load: heird's handoff against a naive and a socket-activated
//! stop-then-start.

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::args::Cli;
use crate::load;
use crate::procs::{
    FakeNotify, Reaper, field, free_port, heird_command, pass_as_fd3, proc_status, signal, strip_ansi,
};
use crate::stats::{Lat, ms_us};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Handoff,
    Naive,
    /// Stop-then-start with a listening socket the driver holds and passes as fd 3 (systemd's
    /// socket activation, `Restart=` of a `.service` with a `.socket`).
    Socket,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Handoff => "heird handoff (SIGUSR2)",
            Mode::Naive => "naive stop-then-start",
            Mode::Socket => "socket-activated stop-then-start",
        }
    }
    pub(crate) fn key(self) -> &'static str {
        match self {
            Mode::Handoff => "handoff",
            Mode::Naive => "naive",
            Mode::Socket => "socket",
        }
    }
}

/// One restart. Times are ms since the load started.
#[derive(Debug, Clone)]
pub(crate) struct Restart {
    pub(crate) signal: f64,
    /// The successor is ready: `MAINPID=`+`READY=1` from the old process (handoff), `READY=1` of
    /// the new process (naive).
    pub(crate) ready: Option<f64>,
    pub(crate) old_exit: Option<f64>,
    pub(crate) old: u32,
    pub(crate) new: Option<u32>,
    /// heird's own `successor ready ... ready_ms=` (fork → ready message), handoff only.
    pub(crate) log_ready_ms: Option<f64>,
    /// Completion of the first OK response from the new pid (ms clock of the samples).
    pub(crate) first_response: Option<f64>,
    /// Highest latency of the OK responses completed in the window after this signal (µs).
    pub(crate) window_max_us: f64,
    pub(crate) failure: Option<String>,
}

pub(crate) struct ReloadResult {
    pub(crate) mode: Mode,
    pub(crate) stats: load::Stats, // without samples
    pub(crate) elapsed_s: f64,
    pub(crate) restarts: Vec<Restart>,
    pub(crate) steady: Lat,
    pub(crate) after: Lat,
    pub(crate) all: Lat,
    pub(crate) rss_main_kib: Vec<u64>,
    pub(crate) rss_sum_max_kib: u64,
    pub(crate) leftovers: Vec<u32>,
    /// (ms since start at completion, latency µs) of every OK response, for the pictures.
    pub(crate) samples: Vec<(u64, u64)>,
    pub(crate) failure_times: Vec<u64>,
    pub(crate) reconnect_times: Vec<u64>,
    /// With idle connections held (`many-load`): how long opening them took, and each one's
    /// reply to `GET /info` at the end.
    pub(crate) idle_open_s: f64,
    pub(crate) idle_replies: Vec<String>,
}

impl ReloadResult {
    pub(crate) fn ok_restarts(&self) -> usize {
        self.restarts.iter().filter(|r| r.failure.is_none()).count()
    }
    pub(crate) fn signal_to_ready(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .filter_map(|r| Some(r.ready? - r.signal))
            .collect()
    }
    pub(crate) fn signal_to_first(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .filter_map(|r| Some(r.first_response? - r.signal))
            .collect()
    }
    pub(crate) fn log_ready(&self) -> Vec<f64> {
        self.restarts.iter().filter_map(|r| r.log_ready_ms).collect()
    }
    pub(crate) fn signal_to_old_exit(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .filter_map(|r| Some(r.old_exit? - r.signal))
            .collect()
    }
    pub(crate) fn p99_ratio(&self) -> f64 {
        self.after.p99 / self.steady.p99
    }
    pub(crate) fn reconnects_per_restart(&self) -> f64 {
        self.stats.reconnects as f64 / self.restarts.len().max(1) as f64
    }
    pub(crate) fn one_line(&self) -> String {
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

/// One reload run in `dir`. With `idle` > 0, that many idle keep-alive connections (each served
/// one request first) are held open through the run, and each is asked `GET /info` at the end.
pub(crate) fn run_reload(
    cli: &Cli,
    bin: &Path,
    dir: &Path,
    mode: Mode,
    idle: usize,
) -> anyhow::Result<ReloadResult> {
    std::fs::create_dir_all(dir)?;
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
            .env("RUNTIME_DIRECTORY", dir)
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

    let t_idle = Instant::now();
    let mut idle_conns = crate::many::open_idle(addr, idle)?;
    let idle_open_s = t_idle.elapsed().as_secs_f64();

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
    let idle_replies = crate::many::info_replies(&mut idle_conns);
    drop(idle_conns);

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
        idle_open_s,
        idle_replies,
    })
}
