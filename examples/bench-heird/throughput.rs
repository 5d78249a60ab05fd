//! Section 2, throughput: wrk against heird and the baselines, pinned, in ABBA order.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::args::Cli;
use crate::procs::{
    ProcStatus, clock_ticks, cpu_ticks, free_port, heird_command, proc_status, signal, wait_serving,
};

pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) child: Child,
    pub(crate) idle: Option<ProcStatus>,
    pub(crate) after: Option<ProcStatus>,
    pub(crate) affinity: String,
}

pub(crate) struct WrkRun {
    pub(crate) round: usize,
    pub(crate) server: &'static str,
    pub(crate) rps: f64,
    pub(crate) requests: u64,
    pub(crate) p50: String,
    pub(crate) p99: String,
    pub(crate) errors: String,
    pub(crate) server_cpu: f64,
    /// Server CPU time per request (µs): less sensitive than req/s to what else the machine runs.
    pub(crate) cpu_us_per_req: f64,
}

/// name, address, RSS idle, RSS after the runs, `Cpus_allowed_list`.
pub(crate) type ServerInfo = (String, SocketAddr, Option<ProcStatus>, Option<ProcStatus>, String);

pub(crate) struct Throughput {
    pub(crate) runs: Vec<WrkRun>,
    pub(crate) targets: Vec<&'static str>,
    pub(crate) servers: Vec<ServerInfo>,
    pub(crate) wrk_version: String,
}

impl Throughput {
    pub(crate) fn rps(&self, server: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.server == server)
            .map(|r| r.rps)
            .collect()
    }
    pub(crate) fn cpu_per_req(&self, server: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.server == server)
            .map(|r| r.cpu_us_per_req)
            .collect()
    }
    /// Per-round ratios server/axum.
    pub(crate) fn ratios(&self, server: &str) -> Vec<f64> {
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

pub(crate) fn start_pinned(
    name: &'static str,
    cpu: &str,
    cmd: Command,
    addr: SocketAddr,
) -> anyhow::Result<Server> {
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

pub(crate) fn affinity(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default()
}

pub(crate) fn run_wrk(
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

pub(crate) fn start_servers(cli: &Cli, bin: &Path) -> anyhow::Result<Vec<Server>> {
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

pub(crate) fn stop_servers(servers: Vec<Server>) -> Vec<ServerInfo> {
    let mut out = Vec::new();
    for mut s in servers {
        s.after = proc_status(s.child.id());
        signal(s.child.id(), libc::SIGTERM);
        let _ = s.child.wait();
        out.push((s.name.to_string(), s.addr, s.idle, s.after, s.affinity));
    }
    out
}

pub(crate) fn run_throughput(cli: &Cli, bin: &Path) -> anyhow::Result<Throughput> {
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
