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
// A subreaper, waitpid, kill and a few /proc and sysconf reads through libc: a benchmark
// driver, beside the library's one `unsafe` module (`sys`).
#![allow(unsafe_code)]

#[path = "../../tests/support/load.rs"]
mod load;
#[path = "../support/svg.rs"]
mod svg;

mod args;
mod footprint;
mod many;
mod many_load;
mod markdown;
mod plots;
mod procs;
mod reload;
mod report;
mod stats;
mod throughput;

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Parser;

use args::Cli;
use footprint::run_footprint;
use many::run_many;
use many_load::run_many_load;
use markdown::{revision, write_block};
use reload::{Mode, run_reload};
use report::Report;
use throughput::run_throughput;

const MIB: f64 = 1024.0 * 1024.0;

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
            let dir = work.path().join(format!("reload-{}", mode.key()));
            let r = run_reload(cli, &bin, &dir, mode, 0)?;
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
    if cli.section("many-load") {
        eprintln!(
            "bench: reload under load with {} idle connections open: {} s, a handoff every {} s ...",
            cli.many_conns,
            cli.reload_duration().as_secs_f64(),
            cli.every.as_secs_f64()
        );
        let m = run_many_load(cli, &bin, work.path())?;
        eprintln!("{}", m.run.one_line());
        println!("{}", m.table(cli));
        let (file, svg) = m.plot(cli, &revision);
        let dir = cli.plots_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench: drew {}", path.display());
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
