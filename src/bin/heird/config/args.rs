//! The command line (clap): `serve`, `check`, `reload` and `stop`, and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use heird::cli::{ReloadArgs, StopArgs};

/// `heird --version`; a test build with fault-injection hooks says so.
#[cfg(not(feature = "fault-injection"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "fault-injection")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (fault-injection test build)");

#[derive(Debug, Parser)]
#[command(
    name = "heird",
    version = VERSION,
    about = "A systemd-native HTTP service with zero-downtime handoff"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (sockets from systemd, --fd, or a fresh bind).
    Serve(ServeArgs),
    /// Validate the config file; exit 0, or 78 with the error.
    Check(ConfigArg),
    /// Ask the running service for a handoff to a new process and wait for the outcome.
    Reload(ReloadArgs),
    /// Send SIGTERM to a heird process and wait until it has drained and exited.
    Stop(StopArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArg {
    /// Config file (TOML). Defaults to $HEIRD_CONFIG, else built-in defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, listeners speak HTTPS (see [tls] listeners).
    // This text is `--help`, where `[tls]` is the config file's section, not a rustdoc link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "tls-cert", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to bind when no socket is passed: HOST:PORT or unix:/path (repeatable).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Inherited listening fd to serve on (repeatable), e.g. --fd 3.
    #[arg(long = "fd", value_name = "N")]
    pub fds: Vec<i32>,
    /// Stay as a supervisor with a stable pid and serve from a worker process (automatic as
    /// PID 1, e.g. in a container): for supervisors that do not follow MAINPID=.
    #[arg(long)]
    pub supervise: bool,
    /// File that always names the process to address (the primary, or the supervisor), as
    /// nginx's -p; removed at the last stop. Overrides the config's pid_file.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Exit 0 after this long with no connection open (e.g. 30s); the socket unit starts heird
    /// again on the next connection. Refused when heird binds its own socket.
    #[arg(long = "idle-exit", value_name = "DURATION")]
    pub idle_exit: Option<String>,
    /// Lame duck before a stop (e.g. 5s): on SIGTERM, /healthz answers 503 this long while
    /// every other request is served, so that a load balancer takes this host out before the
    /// drain. Overrides the config's shutdown_delay; 0 turns it off.
    #[arg(long = "shutdown-delay", value_name = "DURATION")]
    pub shutdown_delay: Option<String>,
    /// Every listener requires a PROXY protocol header (v1 or v2) from a load balancer, and
    /// gives handlers the client's address from it (see proxy_protocol, proxy_from).
    #[arg(long = "proxy-protocol")]
    pub proxy_protocol: bool,
}
