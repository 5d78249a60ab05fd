//! Section 3, footprint: idle RSS, binary size, exec → READY=1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::args::Cli;
use crate::procs::{FakeNotify, ProcStatus, free_port, heird_command, proc_status, signal};

pub(crate) struct Footprint {
    pub(crate) exec_ready_ms: Vec<f64>,
    pub(crate) idle: Vec<ProcStatus>,
    pub(crate) size: u64,
    pub(crate) stripped: u64,
    pub(crate) profile_strip: String,
}

pub(crate) fn run_footprint(cli: &Cli, bin: &Path, work: &Path) -> anyhow::Result<Footprint> {
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
