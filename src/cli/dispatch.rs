//! [`Dispatch`]: `reload`, `stop`, `--help` and `--version` for a binary built on heird, parsed by
//! hand, so that a library user needs no clap.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{
    DEFAULT_TIMEOUT, EX_USAGE, ReloadArgs, StopArgs, parse_duration_arg, reload_command, stop_command,
};

/// A client command parsed by [`dispatch`] (by hand, so that a library user needs no clap).
#[derive(Debug)]
enum Client {
    Reload(ReloadArgs),
    Stop(StopArgs),
    /// `--help`: print the usage, exit 0.
    Help(String),
}

const RELOAD_OPTIONS: &str = "\
Ask the running service for a handoff and wait for the outcome.

Options:
  --pid <PID>          main pid of the service (default: $MAINPID), to find its control socket
  --pid-file <PATH>    pid file naming the service (its --pid-file), instead of --pid
  --socket <PATH>      control socket of the service (default: $RUNTIME_DIRECTORY/control.sock,
                       else the one live control socket of this user)
  --timeout <DURATION> how long to wait for the outcome (default: 60s)
  -h, --help           print this help";

const STOP_OPTIONS: &str = "\
SIGTERM the main process and wait until it has drained and exited.

Options:
  --pid <PID>          pid to stop (default: $MAINPID)
  --pid-file <PATH>    pid file naming the service (its --pid-file), instead of --pid
  --timeout <DURATION> how long to wait for the exit (default: 60s)
  -h, --help           print this help";

/// Parses `reload …` or `stop …` (`args` starts at the subcommand); `Err` is the usage error.
fn parse_client(prog: &str, args: &[OsString]) -> Result<Client, String> {
    let command = args.first().and_then(|a| a.to_str()).unwrap_or_default();
    let usage = match command {
        "reload" => format!(
            "Usage: {prog} reload [--pid <PID> | --pid-file <PATH>] [--socket <PATH>] [--timeout <DURATION>]"
        ),
        _ => format!("Usage: {prog} stop [--pid <PID> | --pid-file <PATH>] [--timeout <DURATION>]"),
    };
    let (mut pid, mut socket, mut pid_file, mut timeout) = (None, None, None, DEFAULT_TIMEOUT);
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!("invalid argument {arg:?}\n\n{usage}"));
        };
        if text == "-h" || text == "--help" {
            let options = if command == "reload" {
                RELOAD_OPTIONS
            } else {
                STOP_OPTIONS
            };
            return Ok(Client::Help(format!("{usage}\n\n{options}")));
        }
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(OsString::from(v))),
            _ => (text, None),
        };
        let known = matches!(flag, "--pid" | "--pid-file" | "--timeout")
            || (flag == "--socket" && command == "reload");
        if !known {
            return Err(format!("unexpected argument '{text}'\n\n{usage}"));
        }
        let Some(value) = inline.or_else(|| rest.next().cloned()) else {
            return Err(format!("a value is required for '{flag}'\n\n{usage}"));
        };
        let bad = |why: String| format!("invalid value {value:?} for '{flag}': {why}\n\n{usage}");
        match flag {
            "--pid" => {
                let v = value.to_str().and_then(|v| v.parse::<u32>().ok());
                pid = Some(v.ok_or_else(|| bad("not a pid".into()))?);
            }
            "--socket" => socket = Some(PathBuf::from(value.clone())),
            "--pid-file" => pid_file = Some(PathBuf::from(value.clone())),
            _ => {
                let v = value.to_str().ok_or_else(|| bad("not UTF-8".into()))?;
                timeout = parse_duration_arg(v).map_err(bad)?;
            }
        }
    }
    if pid.is_some() && pid_file.is_some() {
        return Err(format!(
            "--pid and --pid-file name the same thing: give one\n\n{usage}"
        ));
    }
    Ok(match command {
        "reload" => Client::Reload(ReloadArgs {
            pid,
            socket,
            pid_file,
            timeout,
        }),
        _ => Client::Stop(StopArgs {
            pid,
            pid_file,
            timeout,
        }),
    })
}

/// The command line of an app without clap of its own: with no argument it serves (`run`
/// returns `None`); `reload` and `stop` run here; `--help` and `--version` print and exit 0,
/// naming the app's binary as it was started (argv\[0\]); anything else is a usage error
/// (exit 2), unless the app takes arguments of its own ([`Dispatch::serve_args`]).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let cli = heird::cli::Dispatch::new()
///         .version(env!("CARGO_PKG_VERSION")) // the app's version, not heird's
///         .about("Greets visitors.");
///     if let Some(code) = cli.run(std::env::args_os()) {
///         return code;
///     }
///     // … serve
/// #   std::process::ExitCode::SUCCESS
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    version: Option<String>,
    about: Option<String>,
    serve_args: Option<String>,
}

/// What a command line asks for.
#[derive(Debug)]
enum Asked {
    Serve,
    Client(Client),
    /// `--help` or `--version`: print this, exit 0.
    Print(String),
    /// A usage error: print this, exit 2.
    Usage(String),
}

impl Dispatch {
    /// No version, no description, no arguments of the app's own.
    pub fn new() -> Dispatch {
        Dispatch::default()
    }

    /// What `--version` prints after the binary's name: the app's version, usually
    /// `env!("CARGO_PKG_VERSION")` (the macro expands in the app's crate). Without it,
    /// `--version` names heird's version instead.
    pub fn version(mut self, version: impl Into<String>) -> Dispatch {
        self.version = Some(version.into());
        self
    }

    /// A line for `--help`, above the usage.
    pub fn about(mut self, about: impl Into<String>) -> Dispatch {
        self.about = Some(about.into());
        self
    }

    /// The app takes arguments of its own when it serves, shown as `usage` in `--help` (e.g.
    /// `"[ADDR]"`): an argument that is not a flag then goes to the app (`run` returns `None`)
    /// instead of being a usage error. Flags other than `--help` and `--version` still are.
    pub fn serve_args(mut self, usage: impl Into<String>) -> Dispatch {
        self.serve_args = Some(usage.into());
        self
    }

    /// Runs what `args` (a whole command line, program name first) asks for and returns the
    /// exit code; `None` when the app should serve.
    pub fn run(&self, args: impl IntoIterator<Item = OsString>) -> Option<ExitCode> {
        let mut args = args.into_iter();
        let prog = args
            .next()
            .map(PathBuf::from)
            .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "app".into());
        let args: Vec<OsString> = args.collect();
        Some(match self.parse(&prog, &args) {
            Asked::Serve => return None,
            Asked::Client(Client::Reload(a)) => reload_command(a),
            Asked::Client(Client::Stop(a)) => stop_command(a),
            Asked::Client(Client::Help(text)) | Asked::Print(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Asked::Usage(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_USAGE)
            }
        })
    }

    fn parse(&self, prog: &str, args: &[OsString]) -> Asked {
        let Some(first) = args.first() else {
            return Asked::Serve;
        };
        let serve_args = self
            .serve_args
            .as_deref()
            .map(|a| format!(" {a}"))
            .unwrap_or_default();
        let usage = format!("Usage: {prog}{serve_args}\n       {prog} reload|stop [OPTIONS]");
        match first.to_str() {
            Some("reload" | "stop") => match parse_client(prog, args) {
                Ok(c) => Asked::Client(c),
                Err(e) => Asked::Usage(e),
            },
            Some("-h" | "--help" | "help") => {
                let about = self
                    .about
                    .as_deref()
                    .map(|a| format!("{a}\n\n"))
                    .unwrap_or_default();
                Asked::Print(format!(
                    "{about}{usage}\n\nWith no command, {prog} serves.\n\nCommands:\n  \
                     reload  ask the running service for a handoff and wait for the outcome\n  \
                     stop    SIGTERM the service and wait until it has drained and exited\n\n\
                     Options:\n  -h, --help     print this help (`{prog} reload --help`: its options)\n  \
                     -V, --version  print the version"
                ))
            }
            Some("-V" | "--version") => Asked::Print(match &self.version {
                Some(v) => format!("{prog} {v}"),
                None => format!("{prog} (built on heird {})", env!("CARGO_PKG_VERSION")),
            }),
            Some(a) if a.starts_with('-') => Asked::Usage(format!("unexpected argument '{a}'\n\n{usage}")),
            _ if self.serve_args.is_some() => Asked::Serve,
            _ => Asked::Usage(format!(
                "unrecognized subcommand {:?}\n\n{usage}",
                first.to_string_lossy()
            )),
        }
    }
}

/// [`Dispatch`] with no version and no arguments of the app's own: `reload` and `stop` run here,
/// `--help` and `--version` print, anything else is a usage error (exit 2); `None` (no argument)
/// means serve.
pub fn dispatch(args: impl IntoIterator<Item = OsString>) -> Option<ExitCode> {
    Dispatch::new().run(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn asked(d: &Dispatch, args: &[&str]) -> Asked {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        d.parse("myapp", &args)
    }

    #[test]
    fn no_argument_serves_and_help_and_version_print() {
        let d = Dispatch::new().version("1.2.3").about("Greets.");
        assert!(matches!(asked(&d, &[]), Asked::Serve));
        for h in ["--help", "-h", "help"] {
            let Asked::Print(text) = asked(&d, &[h]) else {
                panic!("{h}")
            };
            assert!(text.starts_with("Greets.\n\nUsage: myapp\n"), "{text}");
            assert!(text.contains("myapp reload|stop"), "{text}");
        }
        for v in ["--version", "-V"] {
            assert!(matches!(asked(&d, &[v]), Asked::Print(t) if t == "myapp 1.2.3"));
        }
        let Asked::Print(t) = asked(&Dispatch::new(), &["--version"]) else {
            panic!()
        };
        assert_eq!(t, format!("myapp (built on heird {})", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn anything_else_is_a_usage_error_unless_the_app_takes_arguments() {
        let d = Dispatch::new();
        for args in [
            &["--bogus"][..],
            &["relaod"],
            &["127.0.0.1:8080"],
            &["reload", "--bogus"],
        ] {
            assert!(matches!(asked(&d, args), Asked::Usage(_)), "{args:?}");
        }
        let d = Dispatch::new().serve_args("[ADDR]");
        assert!(matches!(asked(&d, &["127.0.0.1:8080"]), Asked::Serve));
        assert!(matches!(asked(&d, &["--bogus"]), Asked::Usage(_)));
        let Asked::Print(text) = asked(&d, &["--help"]) else {
            panic!()
        };
        assert!(text.starts_with("Usage: myapp [ADDR]\n"), "{text}");
    }

    #[test]
    fn subcommands_name_the_binary_and_take_a_pid_file() {
        let d = Dispatch::new();
        let Asked::Client(Client::Help(text)) = asked(&d, &["reload", "--help"]) else {
            panic!()
        };
        assert!(text.starts_with("Usage: myapp reload "), "{text}");
        let Asked::Client(Client::Reload(a)) = asked(&d, &["reload", "--pid-file", "/run/a.pid"]) else {
            panic!()
        };
        assert_eq!(a.pid_file.as_deref(), Some(Path::new("/run/a.pid")));
        let Asked::Client(Client::Stop(a)) = asked(&d, &["stop", "--pid-file=/run/a.pid"]) else {
            panic!()
        };
        assert_eq!(a.pid_file.as_deref(), Some(Path::new("/run/a.pid")));
        assert!(matches!(
            asked(&d, &["stop", "--pid", "3", "--pid-file", "/run/a.pid"]),
            Asked::Usage(e) if e.contains("give one")
        ));
    }
}
