//! `heird-load`: drive HTTP load at a server and report every failure by kind.
//!
//! ```text
//! heird-load --addr 127.0.0.1:8080 [--path /sleep?duration=10ms] [-c 32] [-k 8]
//!            [--duration 20s] [--timeout 5s] [--json [--samples]]
//! ```
//!
//! Runs for `--duration` (or until SIGINT/SIGTERM), then prints a summary: a human one by
//! default, or with `--json` one JSON object on one line (the `Stats` fields without
//! `samples` unless `--samples`, plus `failed`, `elapsed_ms`, `rps`, `p50_us`, `p90_us`,
//! `p99_us`, `max_us`). See `tests/support/load.rs` for the failure kinds.
//!
//! Exit status: 0 when no request failed, 1 when any failed, 2 on bad arguments.

#[path = "../tests/support/load.rs"]
mod load;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, error::ErrorKind};

#[derive(Debug, Parser)]
#[command(
    name = "heird-load",
    about = "HTTP/1.1 load client that classifies every failure",
    after_help = "Exit status: 0 when no request failed, 1 when any failed, 2 on bad arguments."
)]
struct Cli {
    /// Server address, host:port (resolved once at start).
    #[arg(long)]
    addr: String,
    /// Request target.
    #[arg(long, default_value = "/sleep?duration=10ms")]
    path: String,
    /// Keep-alive clients (one connection each, requests back-to-back).
    #[arg(short = 'c', long = "keepalive", default_value_t = 32)]
    keepalive: usize,
    /// New-connection clients (one connection per request).
    #[arg(short = 'k', long = "newconn", default_value_t = 8)]
    newconn: usize,
    /// How long to run, e.g. 20s, 1m, 500ms.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Per-request timeout, connect included.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the statistics as one JSON object.
    #[arg(long)]
    json: bool,
    /// With --json: include every OK sample as [ms_since_start, latency_us, pid].
    #[arg(long, requires = "json")]
    samples: bool,
}

fn usage_error(msg: impl std::fmt::Display) -> ! {
    Cli::command().error(ErrorKind::ValueValidation, msg).exit()
}

fn resolve(addr: &str) -> SocketAddr {
    match addr.to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => usage_error(format!("--addr {addr:?} resolved to no address")),
        },
        Err(e) => usage_error(format!("invalid --addr {addr:?}: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let addr = resolve(&cli.addr);
    if !cli.path.starts_with('/') || cli.path.bytes().any(|b| b.is_ascii_whitespace()) {
        usage_error("--path must start with '/' and contain no whitespace");
    }
    if cli.keepalive == 0 && cli.newconn == 0 {
        usage_error("need at least one client (-c or -k)");
    }
    if cli.timeout.is_zero() {
        usage_error("--timeout must be greater than zero");
    }

    let started = Instant::now();
    let handle = load::start(load::LoadConfig {
        addr,
        path: cli.path.clone(),
        keepalive_clients: cli.keepalive,
        newconn_clients: cli.newconn,
        request_timeout: cli.timeout,
        tls: None,
    });
    let interrupted = wait(cli.duration);
    let stats = handle.stop();
    let elapsed = started.elapsed();
    if let Some(signal) = interrupted {
        eprintln!("heird-load: stopped early by {signal}");
    }

    if cli.json {
        println!("{}", json_summary(&stats, elapsed, cli.samples));
    } else {
        print!("{}", human_summary(&cli, addr, &stats, elapsed));
    }
    if stats.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Sleep for `duration`, or until SIGINT/SIGTERM; returns the signal's name if one came.
fn wait(duration: Duration) -> Option<&'static str> {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heird-load: no signal handling ({e}); sleeping");
            std::thread::sleep(duration);
            return None;
        }
    };
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            tokio::time::sleep(duration).await;
            return None;
        };
        tokio::select! {
            _ = tokio::time::sleep(duration) => None,
            _ = int.recv() => Some("SIGINT"),
            _ = term.recv() => Some("SIGTERM"),
        }
    })
}

fn rps(stats: &load::Stats, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { stats.ok as f64 / secs } else { 0.0 }
}

fn json_summary(stats: &load::Stats, elapsed: Duration, with_samples: bool) -> String {
    let mut value = match serde_json::to_value(stats) {
        Ok(v) => v,
        Err(e) => return serde_json::json!({ "error": e.to_string() }).to_string(),
    };
    if let serde_json::Value::Object(map) = &mut value {
        if !with_samples {
            map.remove("samples");
        }
        let p = stats.percentiles_us(&[50.0, 90.0, 99.0, 100.0]);
        map.insert("failed".into(), stats.failed().into());
        map.insert("elapsed_ms".into(), (elapsed.as_millis() as u64).into());
        map.insert("rps".into(), ((rps(stats, elapsed) * 10.0).round() / 10.0).into());
        map.insert("p50_us".into(), p[0].into());
        map.insert("p90_us".into(), p[1].into());
        map.insert("p99_us".into(), p[2].into());
        map.insert("max_us".into(), p[3].into());
    }
    value.to_string()
}

fn ms(us: u64) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

fn human_summary(cli: &Cli, addr: SocketAddr, stats: &load::Stats, elapsed: Duration) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let p = stats.percentiles_us(&[50.0, 99.0, 100.0]);
    let pids = if stats.pids.is_empty() {
        "none".to_string()
    } else {
        stats
            .pids
            .iter()
            .map(|(pid, n)| format!("{pid}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "target: {addr} GET {} keepalive={} newconn={} elapsed={:.2}s",
        cli.path,
        cli.keepalive,
        cli.newconn,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "ok: {} ({:.1} req/s)", stats.ok, rps(stats, elapsed));
    let _ = writeln!(out, "failed: {}", stats.failed());
    let _ = writeln!(out, "  refused: {}", stats.refused);
    let _ = writeln!(out, "  reset: {}", stats.reset);
    let _ = writeln!(out, "  closed_before_response: {}", stats.closed_before_response);
    let _ = writeln!(out, "  timeout: {}", stats.timeout);
    let _ = writeln!(out, "  non_200: {}", stats.non_200);
    let _ = writeln!(out, "  other: {}", stats.other);
    let _ = writeln!(out, "reconnects: {}", stats.reconnects);
    let _ = writeln!(out, "connection_close_seen: {}", stats.connection_close_seen);
    let _ = writeln!(out, "pids: {pids}");
    let _ = writeln!(out, "latency: p50={} p99={} max={}", ms(p[0]), ms(p[1]), ms(p[2]));
    if !stats.errors.is_empty() {
        let _ = writeln!(out, "errors (first {}):", stats.errors.len());
        for e in &stats.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}
