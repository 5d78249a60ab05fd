//! The `heird` binary: parse the command line, read the config and take the sockets before
//! the runtime starts, run, and map the outcome to an exit code.
//!
//! Exit codes: 0 ok, 1 runtime failure (or a failed reload), 2 usage error, 78 (EX_CONFIG)
//! configuration or environment error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use heird::config::{Cli, Command, Config, ConfigArg, ReloadArgs, ServeArgs, StopArgs};
use heird::inherit::Inherited;
use heird::wire::ControlAnswer;
use heird::{Acquire, Options, Service, app, client, control, logging, server};

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(arg) => check(&arg),
        Command::Reload(args) => reload(args),
        Command::Stop(args) => stop(args),
    }
}

fn fail(code: u8, err: &anyhow::Error) -> ExitCode {
    eprintln!("heird: error: {err:#}");
    ExitCode::from(code)
}

fn serve(args: ServeArgs) -> ExitCode {
    // Everything up to the runtime runs single-threaded: it edits the environment.
    let inherited = match Inherited::from_env() {
        Ok(i) => i,
        Err(e) => return fail(EX_CONFIG, &e.into()),
    };
    let config = Config::load(&args.config).and_then(|mut c| c.apply_listen_args(&args.listen).map(|_| c));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            inherited.report_error(&format!("config: {e}"));
            return fail(EX_CONFIG, &e.into());
        }
    };
    let acquire = Acquire {
        inherited: args.fds.clone(),
        bind: config.listen.clone(),
    };
    // The fds are taken before logging opens anything (the journald socket could otherwise
    // land on a number that a wrong LISTEN_FDS count claims); what prepare logs goes to stderr.
    // On an error, prepare_with has already told a waiting predecessor why.
    let prepared = logging::with_stderr(&config.log_level, || Service::prepare_with(inherited, &acquire));
    let service = match prepared {
        Ok(s) => s,
        Err(e) => return fail(EX_CONFIG, &e.into()),
    };
    logging::init(&config.log_level);
    if let Some(note) = service.ignored_listen_fds() {
        tracing::warn!("{note}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                1,
                &anyhow::Error::new(e).context("cannot start the async runtime"),
            );
        }
    };
    let router = app::router(&config, app::Info::new(service.generation(), service.listeners()));
    let options = Options {
        drain_timeout: config.drain_timeout,
        handoff_timeout: config.handoff_timeout,
        serve: server::ServeSettings {
            idle_close_grace: config.idle_close_grace,
            move_connections: config.move_connections,
            ..Default::default()
        },
        watchdog_stall: config.watchdog_stall,
        control_socket: control::default_path(),
    };
    let result = runtime.block_on(service.run(router, options));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(exit) => {
            tracing::info!(?exit, "exiting");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.into()),
    }
}

fn check(arg: &ConfigArg) -> ExitCode {
    match Config::load(arg) {
        Ok(c) => {
            match &c.path {
                Some(p) => println!("{}: ok", p.display()),
                None => println!("no config file given (--config or $HEIRD_CONFIG): defaults are valid"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EX_CONFIG, &e.into()),
    }
}

fn reload(args: ReloadArgs) -> ExitCode {
    let path = match client::find_socket(args.socket.clone(), args.pid) {
        Ok(p) => p,
        Err(e @ (client::ClientError::NoTarget | client::ClientError::NoSocket { .. })) => {
            return fail(EX_CONFIG, &e.into());
        }
        Err(e) => return fail(1, &e.into()),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e.into()),
    };
    match rt.block_on(client::reload(&path, args.timeout)) {
        Ok(ControlAnswer::Ok { pid, generation }) => {
            println!("reloaded: pid={pid} generation={generation}");
            ExitCode::SUCCESS
        }
        Ok(ControlAnswer::Failed(reason) | ControlAnswer::Error(reason) | ControlAnswer::Retry(reason)) => {
            eprintln!("heird: reload failed: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => fail(1, &e.into()),
    }
}

fn stop(args: StopArgs) -> ExitCode {
    let pid = match (args.pid, std::env::var("MAINPID")) {
        (Some(p), _) => p,
        (None, Ok(v)) if v.trim().is_empty() || v.trim() == "0" => {
            // ExecStop= with no main process left (it exited or crashed): nothing to stop.
            println!("no main process; nothing to stop");
            return ExitCode::SUCCESS;
        }
        (None, _) => match client::main_pid(None) {
            Some(p) => p,
            None => return fail(EX_CONFIG, &anyhow::anyhow!("no pid: pass --pid or set $MAINPID")),
        },
    };
    let raw = match client::checked_pid(u64::from(pid)) {
        Ok(p) => p,
        Err(e) => return fail(EX_CONFIG, &e.into()),
    };
    match client::stop_and_wait(raw, args.timeout).with_context(|| format!("stopping pid {pid}")) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => fail(
            1,
            &anyhow::anyhow!("pid {pid} did not exit within {:?}", args.timeout),
        ),
        Err(e) => fail(1, &e),
    }
}
