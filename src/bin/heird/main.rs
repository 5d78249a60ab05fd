//! The `heird` binary: parse the command line, read the config and take the sockets before
//! the runtime starts, run, and map the outcome to an exit code.
//!
//! Exit codes: 0 ok, 1 runtime failure (or a failed reload), 2 usage error, 78 (EX_CONFIG)
//! configuration or environment error.

use std::process::ExitCode;

use clap::Parser;
use heird::{Acquire, Inherited, Options, Supervise};

mod app;
mod config;

use config::{Cli, Command, Config, ConfigArg, ServeArgs};

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(arg) => check(&arg),
        Command::Reload(args) => heird::cli::reload_command(args),
        Command::Stop(args) => heird::cli::stop_command(args),
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
    let config = Config::load(&args.config).and_then(|mut c| {
        c.apply_listen_args(&args.listen)?;
        c.apply_idle_exit_arg(args.idle_exit.as_deref())?;
        c.apply_shutdown_delay_arg(args.shutdown_delay.as_deref())?;
        let proxy = c.proxy_protocol(args.proxy_protocol)?;
        Ok((c, proxy))
    });
    let (config, proxy_protocol) = match config {
        Ok(c) => c,
        Err(e) => return inherited.fail(&e),
    };
    heird::__private::set_watchdog_stall(config.watchdog_stall);
    let supervise = if args.supervise || config.supervise {
        Supervise::Always
    } else {
        Supervise::Auto
    };
    let mut acquire = Acquire::default().fds(&args.fds).supervise(supervise);
    acquire.bind = config.listen.clone();
    if let Some(path) = args.pid_file.as_ref().or(config.pid_file.as_ref()) {
        acquire = acquire.pid_file(path);
    }
    let log_level = config.log_level.clone();
    heird::start(inherited, &acquire, &log_level, |mut service| async move {
        let info = app::Info::new(service.generation(), service.listeners());
        let router = app::router(&config, info, service.metrics());
        let mut options = Options::default();
        options.drain_timeout = config.drain_timeout;
        options.handoff_timeout = config.handoff_timeout;
        options.serve.idle_close_grace = config.idle_close_grace;
        options.serve.header_read_timeout = config.header_read_timeout;
        options.serve.move_connections = config.move_connections;
        options.serve.tls = config.tls.clone();
        options.serve.proxy_protocol = proxy_protocol;
        options.idle_exit = config.idle_exit;
        options.shutdown_delay = config.shutdown_delay;
        service.run(router, options).await
    })
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
