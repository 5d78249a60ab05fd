//! Command line and config file (TOML) → a validated [`Config`].
//!
//! The config file comes from `--config PATH`, else `$HEIRD_CONFIG`, else built-in defaults.
//! Unknown keys are errors. Durations are humantime strings (`"250ms"`, `"30s"`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::cli::{ReloadArgs, StopArgs};
use crate::listeners::{ListenAddr, ListenError};
use crate::tls::{self, TlsError, TlsSetup, TlsSpec};

/// `heird --version`; a test build with fault-injection hooks says so.
#[cfg(not(feature = "fault-injection"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "fault-injection")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (fault-injection test build)");

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "HEIRD_CONFIG";

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
}

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
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Parses a duration such as `250ms`, `2s` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s.trim())
}

/// The config file as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    greeting: Option<String>,
    listen: Option<Vec<String>>,
    drain_timeout: Option<String>,
    idle_close_grace: Option<String>,
    header_read_timeout: Option<String>,
    max_sleep: Option<String>,
    handoff_timeout: Option<String>,
    log_level: Option<String>,
    watchdog_stall: Option<bool>,
    move_connections: Option<bool>,
    tls: Option<TlsFile>,
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    listeners: Option<Vec<String>>,
    handshake_timeout: Option<String>,
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

    /// Parses and validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut c = Config {
            path: Some(path.to_path_buf()),
            ..Config::default()
        };
        let value_err = |key: &'static str, value: &str, reason: String| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            value: value.to_string(),
            reason,
        };
        let dur =
            |key: &'static str, v: &Option<String>, min: Duration| -> Result<Option<Duration>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(s) => {
                        let d = parse_duration(s).map_err(|e| value_err(key, s, e.to_string()))?;
                        if d < min {
                            return Err(value_err(
                                key,
                                s,
                                format!("must be at least {}", humantime::format_duration(min)),
                            ));
                        }
                        Ok(Some(d))
                    }
                }
            };
        if let Some(g) = file.greeting {
            c.greeting = g;
        }
        if let Some(list) = &file.listen {
            c.listen = list
                .iter()
                .map(|a| ListenAddr::parse(a).map_err(|e| value_err("listen", a, e.to_string())))
                .collect::<Result<_, _>>()?;
            if c.listen.is_empty() {
                return Err(value_err("listen", "[]", "must list at least one address".into()));
            }
        }
        if let Some(d) = dur("drain_timeout", &file.drain_timeout, Duration::ZERO)? {
            c.drain_timeout = d;
        }
        if let Some(d) = dur("idle_close_grace", &file.idle_close_grace, Duration::ZERO)? {
            c.idle_close_grace = d;
        }
        if let Some(d) = dur(
            "header_read_timeout",
            &file.header_read_timeout,
            Duration::from_millis(100),
        )? {
            c.header_read_timeout = d;
        }
        if let Some(d) = dur("max_sleep", &file.max_sleep, Duration::ZERO)? {
            c.max_sleep = d;
        }
        if let Some(d) = dur(
            "handoff_timeout",
            &file.handoff_timeout,
            Duration::from_millis(100),
        )? {
            c.handoff_timeout = d;
        }
        if let Some(level) = file.log_level {
            tracing_subscriber::EnvFilter::try_new(&level)
                .map_err(|e| value_err("log_level", &level, e.to_string()))?;
            c.log_level = level;
        }
        if let Some(w) = file.watchdog_stall {
            c.watchdog_stall = w;
        }
        if let Some(m) = file.move_connections {
            c.move_connections = m;
        }
        if let Some(t) = &file.tls {
            // Relative paths are taken from the config file's directory.
            let dir = path.parent().unwrap_or(Path::new(""));
            let file_path = |key: &'static str, v: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
                match v.as_deref() {
                    None => Ok(None),
                    Some("") => Err(value_err(key, "", "must not be empty".into())),
                    Some(p) => Ok(Some(dir.join(p))),
                }
            };
            c.tls_spec.cert = file_path("tls.cert", &t.cert)?;
            c.tls_spec.key = file_path("tls.key", &t.key)?;
            if let Some(l) = &t.listeners {
                if l.is_empty() {
                    return Err(value_err(
                        "tls.listeners",
                        "[]",
                        "must name at least one listener (leave it out for all of them)".into(),
                    ));
                }
                if let Some(bad) = l.iter().find(|n| n.is_empty() || n.contains(':')) {
                    return Err(value_err(
                        "tls.listeners",
                        bad,
                        "not a LISTEN_FDNAMES name".into(),
                    ));
                }
                c.tls_spec.listeners = Some(l.clone());
            }
            c.tls_spec.handshake_timeout = dur(
                "tls.handshake_timeout",
                &t.handshake_timeout,
                Duration::from_millis(10),
            )?;
        }
        Ok(c)
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
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("t.toml"))
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.greeting, "Hello World");
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.listen.len(), 1);
    }

    #[test]
    fn keys() {
        let c = parse(
            "greeting = \"hi\"\nlisten = [\"127.0.0.1:1\", \"unix:/run/x.sock\"]\ndrain_timeout = \"2s\"\nmax_sleep = \"1m\"\nhandoff_timeout = \"5s\"\nlog_level = \"debug\"\nidle_close_grace = \"1s\"\nwatchdog_stall = true\n",
        )
        .unwrap();
        assert_eq!(c.greeting, "hi");
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.max_sleep, Duration::from_secs(60));
        assert!(c.watchdog_stall);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("drain_timeout = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("drain_timeout"), "{e}");
        let e = parse("listen = [\"nowhere\"]").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("nowhere"), "{e}");
        let e = parse("listen = []").unwrap_err().to_string();
        assert!(e.contains("at least one"), "{e}");
        let e = parse("greeting = 5").unwrap_err().to_string();
        assert!(e.contains("greeting"), "{e}");
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/heird/heird.toml"))
    }

    #[test]
    fn tls_section() {
        let c = parse("[tls]\ncert = \"tls/c.pem\"\nkey = \"/k.pem\"\nlisteners = [\"https\"]\nhandshake_timeout = \"2s\"\n").unwrap();
        assert_eq!(
            c.tls_spec.cert.as_deref(),
            Some(Path::new("/etc/heird/tls/c.pem"))
        );
        assert_eq!(c.tls_spec.key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(c.tls_spec.listeners, Some(vec!["https".to_string()]));
        assert_eq!(c.tls_spec.handshake_timeout, Some(Duration::from_secs(2)));
        let e = parse("[tls]\nlisteners = []\n").unwrap_err().to_string();
        assert!(e.contains("tls.listeners"), "{e}");
        let e = parse("[tls]\ncrt = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("crt"), "{e}");
        let e = parse("[tls]\nhandshake_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.handshake_timeout"), "{e}");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary text as a config file: never a panic; errors name the file.
        #[test]
        fn config_never_panics(text in ".{0,200}") {
            if let Err(e) = Config::parse(&text, Path::new("p.toml")) {
                prop_assert!(e.to_string().contains("p.toml"));
            }
        }

        /// Arbitrary values for every key.
        #[test]
        fn config_values_never_panic(key in proptest::sample::select(vec![
            "greeting", "listen", "drain_timeout", "idle_close_grace", "header_read_timeout", "max_sleep",
            "handoff_timeout", "log_level", "watchdog_stall", "move_connections", "tls",
        ]), value in ".{0,30}") {
            let text = format!("{key} = {value:?}\n");
            if let Err(e) = Config::parse(&text, Path::new("p.toml")) {
                prop_assert!(e.to_string().contains("p.toml"));
            }
        }

        #[test]
        fn durations_never_panic(s in ".{0,30}") {
            let _ = parse_duration(&s);
        }
    }
}
