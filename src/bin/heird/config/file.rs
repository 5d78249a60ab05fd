//! The config file (TOML) as written → a validated [`Config`]. Unknown keys are errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::proxy::{ProxyListeners, ProxySpec};
use super::{Config, ConfigError, TlsSpec, parse_duration};
use heird::ListenAddr;

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
    supervise: Option<bool>,
    pid_file: Option<String>,
    idle_exit: Option<String>,
    shutdown_delay: Option<String>,
    proxy_protocol: Option<ProxyListeners>,
    proxy_from: Option<Vec<String>>,
    proxy_header_timeout: Option<String>,
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

impl Config {
    /// Parses and validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let cx = Check { path };
        let mut c = Config {
            path: Some(path.to_path_buf()),
            ..Config::default()
        };
        cx.general(&mut c, &file)?;
        cx.durations(&mut c, &file)?;
        let timeout = cx.dur(
            "proxy_header_timeout",
            &file.proxy_header_timeout,
            Duration::from_millis(10),
        )?;
        c.proxy = ProxySpec::from_file(file.proxy_protocol.as_ref(), file.proxy_from.as_deref(), timeout)
            .map_err(|(key, value, reason)| cx.err(key, &value, reason))?;
        if let Some(t) = &file.tls {
            cx.tls(&mut c.tls_spec, t)?;
        }
        Ok(c)
    }
}

/// Checks values of one file: messages name it, relative paths are taken from its directory.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn err(&self, key: &'static str, value: &str, reason: String) -> ConfigError {
        ConfigError::Value {
            path: self.path.to_path_buf(),
            key,
            value: value.to_string(),
            reason,
        }
    }

    /// A duration of at least `min`, if given.
    fn dur(
        &self,
        key: &'static str,
        v: &Option<String>,
        min: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(s) = v else { return Ok(None) };
        let d = parse_duration(s).map_err(|e| self.err(key, s, e.to_string()))?;
        if d < min {
            let reason = format!("must be at least {}", humantime::format_duration(min));
            return Err(self.err(key, s, reason));
        }
        Ok(Some(d))
    }

    /// A path relative to the file's directory; not empty.
    fn file_path(&self, key: &'static str, v: &Option<String>) -> Result<Option<PathBuf>, ConfigError> {
        match v.as_deref() {
            None => Ok(None),
            Some("") => Err(self.err(key, "", "must not be empty".into())),
            Some(p) => Ok(Some(self.path.parent().unwrap_or(Path::new("")).join(p))),
        }
    }

    /// Everything but durations, PROXY and TLS.
    fn general(&self, c: &mut Config, file: &File) -> Result<(), ConfigError> {
        if let Some(g) = &file.greeting {
            c.greeting = g.clone();
        }
        if let Some(list) = &file.listen {
            c.listen = list
                .iter()
                .map(|a| ListenAddr::parse(a).map_err(|e| self.err("listen", a, e.to_string())))
                .collect::<Result<_, _>>()?;
            if c.listen.is_empty() {
                return Err(self.err("listen", "[]", "must list at least one address".into()));
            }
        }
        if let Some(level) = &file.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| self.err("log_level", level, e.to_string()))?;
            c.log_level = level.clone();
        }
        c.watchdog_stall = file.watchdog_stall.unwrap_or(c.watchdog_stall);
        c.move_connections = file.move_connections.unwrap_or(c.move_connections);
        c.supervise = file.supervise.unwrap_or(c.supervise);
        // Relative to the config file's directory, as the TLS paths.
        if let Some(p) = self.file_path("pid_file", &file.pid_file)? {
            c.pid_file = Some(p);
        }
        Ok(())
    }

    fn durations(&self, c: &mut Config, file: &File) -> Result<(), ConfigError> {
        let (zero, ms) = (Duration::ZERO, Duration::from_millis);
        let set = |d: &mut Duration, v: Option<Duration>| *d = v.unwrap_or(*d);
        set(
            &mut c.drain_timeout,
            self.dur("drain_timeout", &file.drain_timeout, zero)?,
        );
        set(
            &mut c.idle_close_grace,
            self.dur("idle_close_grace", &file.idle_close_grace, zero)?,
        );
        let header = self.dur("header_read_timeout", &file.header_read_timeout, ms(100))?;
        set(&mut c.header_read_timeout, header);
        set(&mut c.max_sleep, self.dur("max_sleep", &file.max_sleep, zero)?);
        set(
            &mut c.handoff_timeout,
            self.dur("handoff_timeout", &file.handoff_timeout, ms(100))?,
        );
        c.idle_exit = self.dur("idle_exit", &file.idle_exit, ms(1))?;
        set(
            &mut c.shutdown_delay,
            self.dur("shutdown_delay", &file.shutdown_delay, zero)?,
        );
        Ok(())
    }

    /// `[tls]`.
    fn tls(&self, spec: &mut TlsSpec, t: &TlsFile) -> Result<(), ConfigError> {
        spec.cert = self.file_path("tls.cert", &t.cert)?;
        spec.key = self.file_path("tls.key", &t.key)?;
        if let Some(l) = &t.listeners {
            if l.is_empty() {
                let reason = "must name at least one listener (leave it out for all of them)";
                return Err(self.err("tls.listeners", "[]", reason.into()));
            }
            if let Some(bad) = l.iter().find(|n| n.is_empty() || n.contains(':')) {
                return Err(self.err("tls.listeners", bad, "not a LISTEN_FDNAMES name".into()));
            }
            spec.listeners = Some(l.clone());
        }
        spec.handshake_timeout = self.dur(
            "tls.handshake_timeout",
            &t.handshake_timeout,
            Duration::from_millis(10),
        )?;
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
    fn pid_file_is_taken_from_the_config_files_directory() {
        let c = Config::parse("pid_file = \"run/app.pid\"", Path::new("/etc/app/heird.toml")).unwrap();
        assert_eq!(c.pid_file, Some(PathBuf::from("/etc/app/run/app.pid")));
        let c = parse("pid_file = \"/run/app.pid\"").unwrap();
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/app.pid")));
        assert_eq!(parse("").unwrap().pid_file, None);
        let e = parse("pid_file = \"\"").unwrap_err().to_string();
        assert!(e.contains("pid_file") && e.contains("empty"), "{e}");
    }

    #[test]
    fn shutdown_delay() {
        assert_eq!(parse("").unwrap().shutdown_delay, Duration::ZERO);
        let c = parse("shutdown_delay = \"5s\"").unwrap();
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        let e = parse("shutdown_delay = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("shutdown_delay"), "{e}");
        let mut c = parse("shutdown_delay = \"5s\"").unwrap();
        c.apply_shutdown_delay_arg(Some("0")).unwrap();
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        let e = c.apply_shutdown_delay_arg(Some("x")).unwrap_err().to_string();
        assert!(e.contains("--shutdown-delay"), "{e}");
    }

    #[test]
    fn idle_exit() {
        assert_eq!(parse("").unwrap().idle_exit, None);
        assert_eq!(
            parse("idle_exit = \"30s\"").unwrap().idle_exit,
            Some(Duration::from_secs(30))
        );
        let e = parse("idle_exit = \"0s\"").unwrap_err().to_string();
        assert!(e.contains("idle_exit") && e.contains("at least"), "{e}");
        let mut c = parse("idle_exit = \"30s\"").unwrap();
        c.apply_idle_exit_arg(Some("50ms")).unwrap();
        assert_eq!(c.idle_exit, Some(Duration::from_millis(50)));
        let e = c.apply_idle_exit_arg(Some("0")).unwrap_err().to_string();
        assert!(e.contains("--idle-exit"), "{e}");
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
            "handoff_timeout", "log_level", "watchdog_stall", "move_connections", "supervise", "idle_exit", "shutdown_delay", "tls",
        ]), value in ".{0,30}") {
            let text = format!("{key} = {value:?}\n");
            if let Err(e) = Config::parse(&text, Path::new("p.toml")) {
                prop_assert!(e.to_string().contains("p.toml"));
            }
        }
    }
}
