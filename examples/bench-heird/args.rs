//! The command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "bench-heird",
    about = "heird's reload, throughput and footprint benchmark"
)]
pub(crate) struct Cli {
    /// The heird binary to measure (copied to a private directory first).
    #[arg(long, default_value = "target/release/heird")]
    pub(crate) bin: PathBuf,
    /// The plain axum baseline server (examples/bench-plain-axum.rs).
    #[arg(long, default_value = "target/release/examples/bench-plain-axum")]
    pub(crate) axum_bin: PathBuf,
    /// heird serving the router of bench-plain-axum (examples/bench-heird-hello.rs): the
    /// like-for-like comparison; skipped when the file is missing.
    #[arg(long, default_value = "target/release/examples/bench-heird-hello")]
    pub(crate) hello_bin: PathBuf,
    /// Set TCP_NODELAY in the axum baseline too, as heird does (like for like).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) axum_nodelay: bool,
    /// Optional Go net/http hello server (takes the address as its only argument).
    #[arg(long)]
    pub(crate) go_bin: Option<PathBuf>,
    /// Long mode: at least 100 handoffs per reload run (T = 100 × S + 10 s unless --duration is
    /// given) and 9 throughput rounds (unless --rounds is given).
    #[arg(long)]
    pub(crate) long: bool,
    /// Sections to run, comma-separated: reload, throughput, footprint, many (idle
    /// connections moved in one handoff), many-load (reload under load with --many-conns idle
    /// connections open; uses the reload options); the last two are not in the default set.
    #[arg(long, default_value = "reload,throughput,footprint", value_delimiter = ',')]
    pub(crate) sections: Vec<String>,

    /// Reload: keep-alive clients (C).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub(crate) keepalive: usize,
    /// Reload: new-connection clients (K).
    #[arg(short = 'k', long, default_value_t = 8)]
    pub(crate) newconn: usize,
    /// Reload: length of each run (T); default 20s, or enough for 100+ handoffs with --long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Reload: time between handoffs (S).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) every: Duration,
    /// Reload: request target.
    #[arg(long, default_value = "/sleep?duration=10ms")]
    pub(crate) path: String,
    /// Reload: per-request timeout of the load client.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Reload: the window after each handoff signal compared with the steady windows.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) window: Duration,

    /// Throughput: rounds per server (default 5, 9 with --long).
    #[arg(long)]
    pub(crate) rounds: Option<usize>,
    /// Throughput: length of one wrk run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) tp_duration: Duration,
    /// Throughput: wrk connections.
    #[arg(long, default_value_t = 32)]
    pub(crate) wrk_connections: usize,
    /// Throughput: wrk threads.
    #[arg(long, default_value_t = 1)]
    pub(crate) wrk_threads: usize,
    /// Throughput: core the servers are pinned to.
    #[arg(long, default_value = "1")]
    pub(crate) server_cpu: String,
    /// Throughput: also load heird's `/healthz` (heird without the demo app's pid header).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) healthz: bool,
    /// Throughput: core wrk is pinned to.
    #[arg(long, default_value = "0")]
    pub(crate) client_cpu: String,
    /// Many, many-load: idle keep-alive connections moved at each handoff.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) many_conns: usize,
    /// Footprint: number of starts timed (exec → READY=1).
    #[arg(long, default_value_t = 20)]
    pub(crate) starts: usize,

    /// Keep the work directory (heird's logs, the binary copy) and print its path.
    #[arg(long)]
    pub(crate) keep_work: bool,
    /// Write the results as markdown into this file (this mode's block is replaced).
    #[arg(long)]
    pub(crate) write: Option<PathBuf>,
    /// The command line to record in the results (bench/run.sh passes its own).
    #[arg(long)]
    pub(crate) command: Option<String>,
    /// Directory for the pictures (SVG); default: the directory of `--write`, else
    /// target/bench-plots.
    #[arg(long)]
    pub(crate) plots: Option<PathBuf>,
    /// Also draw instructions per request from this file (lines `SERIES PROTO INSTRUCTIONS`,
    /// as bench/callgrind.sh writes them; several files with commas).
    #[arg(long, value_delimiter = ',')]
    pub(crate) instructions: Vec<PathBuf>,
    /// Reload modes to run, comma-separated: handoff, naive, socket.
    #[arg(long, default_value = "handoff,naive,socket", value_delimiter = ',')]
    pub(crate) modes: Vec<String>,
}

impl Cli {
    pub(crate) fn mode(&self) -> &'static str {
        if self.long { "long" } else { "default" }
    }
    pub(crate) fn reload_duration(&self) -> Duration {
        self.duration.unwrap_or(if self.long {
            self.every * 100 + Duration::from_secs(10)
        } else {
            Duration::from_secs(20)
        })
    }
    pub(crate) fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.long { 9 } else { 5 })
    }
    pub(crate) fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }
    pub(crate) fn plots_dir(&self) -> PathBuf {
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
