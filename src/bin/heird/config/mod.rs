//! Command line and config file (TOML) → a validated [`Config`].
//!
//! The config file comes from `--config PATH`, else `$HEIRD_CONFIG`, else built-in defaults.
//! Unknown keys are errors. Durations are humantime strings (`"250ms"`, `"30s"`).
//!
//! - `args`: the command line (clap).
//! - `file`: the config file as written, parsed and validated ([`Config::parse`]).
//! - `tls`: which certificate and key (command line, `[tls]`, systemd credentials).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use heird::tls::{TlsError, TlsSetup};
use heird::{ListenAddr, ListenError};

mod args;
#[cfg(test)]
mod error_texts;
mod file;
mod proxy;
mod tls;

pub use args::{Cli, Command, ConfigArg, ServeArgs};
pub use proxy::ProxySpec;
use tls::TlsSpec;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "HEIRD_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key} = {value:?}: {reason}")]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("--listen: {0}")]
    Listen(ListenError),
    #[error("--idle-exit {0}")]
    IdleExit(String),
    #[error("--shutdown-delay {0}")]
    ShutdownDelay(String),
    #[error("{0}")]
    Proxy(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Parses a duration such as `250ms`, `2s` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s.trim())
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (`None`: built-in defaults).
    pub path: Option<PathBuf>,
    /// Body of `GET /`.
    pub greeting: String,
    /// Addresses bound when no socket is passed (`--listen` replaces them).
    pub listen: Vec<ListenAddr>,
    /// How long a drain (stop or handoff) may take before the rest is closed.
    pub drain_timeout: Duration,
    /// While draining, an idle keep-alive connection is closed after this long without a request.
    pub idle_close_grace: Duration,
    /// A request head must arrive within this long (one to two periods: see `ServeSettings`).
    pub header_read_timeout: Duration,
    /// Longest `GET /sleep?duration=` accepted.
    pub max_sleep: Duration,
    /// How long a successor may take to say it is ready.
    pub handoff_timeout: Duration,
    /// tracing filter (overridden by `RUST_LOG`).
    pub log_level: String,
    /// Test-only: never send watchdog pings, so that systemd's watchdog fires.
    pub watchdog_stall: bool,
    /// Move idle keep-alive connections to the successor at a handoff.
    pub move_connections: bool,
    /// Run a supervisor with a stable pid even when not PID 1 (`--supervise`).
    pub supervise: bool,
    /// A file that always names the process to address: the primary, or the supervisor
    /// (`--pid-file` wins).
    pub pid_file: Option<PathBuf>,
    /// Exit after this long without any open connection (`--idle-exit` wins); only under a
    /// socket unit.
    pub idle_exit: Option<Duration>,
    /// A lame duck before a stop: `/healthz` answers 503 this long first (`--shutdown-delay`
    /// wins; zero: none).
    pub shutdown_delay: Duration,
    /// `proxy_protocol`, `proxy_from`, `proxy_header_timeout` (`--proxy-protocol` is applied
    /// by [`ProxySpec::settings`]).
    pub proxy: ProxySpec,
    /// `[tls]` as written in the file.
    pub tls_spec: TlsSpec,
    /// TLS, loaded and checked (by [`Config::load`]): from `--tls-cert`/`--tls-key`, else
    /// `[tls]`, else systemd credentials `tls.crt` + `tls.key`. `None`: plain HTTP.
    pub tls: Option<Arc<TlsSetup>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            greeting: "Hello World".into(),
            listen: vec![ListenAddr::Tcp(([127, 0, 0, 1], 8080).into())],
            drain_timeout: Duration::from_secs(30),
            idle_close_grace: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            max_sleep: Duration::from_secs(10),
            handoff_timeout: Duration::from_secs(30),
            log_level: "info".into(),
            watchdog_stall: false,
            move_connections: true,
            supervise: false,
            pid_file: None,
            idle_exit: None,
            shutdown_delay: Duration::ZERO,
            proxy: ProxySpec::default(),
            tls_spec: TlsSpec::default(),
            tls: None,
        }
    }
}

impl Config {
    /// Loads `--config`, else `$HEIRD_CONFIG`, else defaults.
    pub fn load(arg: &ConfigArg) -> Result<Config, ConfigError> {
        let path = arg.config.clone().or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let mut c = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
                    path: path.clone(),
                    error,
                })?;
                Config::parse(&text, &path)?
            }
        };
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let cli = (arg.tls_cert.as_deref(), arg.tls_key.as_deref());
        c.tls = tls::resolve(&c.tls_spec, cli, c.path.as_deref(), credentials.as_deref())?.map(Arc::new);
        Ok(c)
    }

    /// Warnings for `heird check` and the start (a certificate that expires soon or did).
    pub fn warnings(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map(|t| t.warnings(std::time::SystemTime::now()))
            .unwrap_or_default()
    }

    /// Applies `--idle-exit` (which replaces the config's `idle_exit`).
    pub fn apply_idle_exit_arg(&mut self, idle_exit: Option<&str>) -> Result<(), ConfigError> {
        if let Some(s) = idle_exit {
            let d = parse_duration(s).map_err(|e| ConfigError::IdleExit(format!("{s:?}: {e}")))?;
            if d.is_zero() {
                return Err(ConfigError::IdleExit(format!("{s:?}: must be more than 0")));
            }
            self.idle_exit = Some(d);
        }
        Ok(())
    }

    /// Applies `--shutdown-delay` (which replaces the config's `shutdown_delay`; `0` turns it off).
    pub fn apply_shutdown_delay_arg(&mut self, delay: Option<&str>) -> Result<(), ConfigError> {
        if let Some(s) = delay {
            // (humantime takes a bare `0` as zero.)
            self.shutdown_delay =
                parse_duration(s).map_err(|e| ConfigError::ShutdownDelay(format!("{s:?}: {e}")))?;
        }
        Ok(())
    }

    /// The PROXY protocol settings, with `--proxy-protocol` (`all`: every listener).
    pub fn proxy_protocol(&self, all: bool) -> Result<Option<heird::proxy::ProxyProtocol>, ConfigError> {
        self.proxy.settings(all).map_err(ConfigError::Proxy)
    }

    /// Applies `--listen` (which replaces the config's addresses).
    pub fn apply_listen_args(&mut self, listen: &[String]) -> Result<(), ConfigError> {
        if !listen.is_empty() {
            self.listen = listen
                .iter()
                .map(|a| ListenAddr::parse(a))
                .collect::<Result<_, _>>()
                .map_err(ConfigError::Listen)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn durations_never_panic(s in ".{0,30}") {
            let _ = parse_duration(&s);
        }
    }
}
