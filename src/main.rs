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
use heird::handoff::Inherited;
use heird::{Acquire, Options, Service, app, control, logging, server};

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
    logging::init(&config.log_level);
    let acquire = Acquire {
        inherited: args.fds.clone(),
        bind: config.listen.clone(),
    };
    // On an error, prepare_with has already told a waiting predecessor why.
    let service = match Service::prepare_with(inherited, &acquire) {
        Ok(s) => s,
        Err(e) => return fail(EX_CONFIG, &e.into()),
    };
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
            tls: config.tls.clone(),
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
            if let Some(tls) = &c.tls {
                println!("{}", tls.describe());
            }
            for w in c.warnings() {
                eprintln!("heird: warning: {w}");
            }
            match &c.path {
                Some(p) => println!("{}: ok", p.display()),
                None => println!("no config file given (--config or $HEIRD_CONFIG): defaults are valid"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EX_CONFIG, &e.into()),
    }
}

fn main_pid(pid: Option<u32>) -> Option<u32> {
    pid.or_else(|| std::env::var("MAINPID").ok()?.parse().ok())
        .filter(|p| *p > 0)
}

fn reload(args: ReloadArgs) -> ExitCode {
    let path = match args.socket.clone().or_else(control::default_path) {
        Some(p) => p,
        None => match main_pid(args.pid) {
            Some(pid) => match control::path_of_pid(pid) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return fail(
                        EX_CONFIG,
                        &anyhow::anyhow!(
                            "pid {pid} has no RUNTIME_DIRECTORY, so no control socket; pass --socket"
                        ),
                    );
                }
                Err(e) => {
                    return fail(
                        1,
                        &anyhow::Error::new(e).context(format!("cannot read the environment of pid {pid}")),
                    );
                }
            },
            None => {
                return fail(
                    EX_CONFIG,
                    &anyhow::anyhow!(
                        "no control socket: pass --socket PATH or --pid PID, or run under systemd (RUNTIME_DIRECTORY)"
                    ),
                );
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e.into()),
    };
    match rt.block_on(control::request_reload(&path, args.timeout)) {
        Ok(answer) => {
            if let Some(ok) = answer.strip_prefix("ok ") {
                println!("reloaded: {ok}");
                ExitCode::SUCCESS
            } else {
                let reason = answer
                    .strip_prefix("failed ")
                    .or_else(|| answer.strip_prefix("error "))
                    .unwrap_or(&answer);
                eprintln!("heird: reload failed: {reason}");
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(1, &e.into()),
    }
}

fn stop(args: StopArgs) -> ExitCode {
    let Some(pid) = main_pid(args.pid) else {
        return fail(EX_CONFIG, &anyhow::anyhow!("no pid: pass --pid or set $MAINPID"));
    };
    match heird::service::stop_and_wait(pid, args.timeout).with_context(|| format!("stopping pid {pid}")) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => fail(
            1,
            &anyhow::anyhow!("pid {pid} did not exit within {:?}", args.timeout),
        ),
        Err(e) => fail(1, &e),
    }
}
