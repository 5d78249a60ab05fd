//! heird makes an axum service native to systemd and replaces its process with zero downtime:
//! `systemctl reload`, `systemctl restart` and a package upgrade lose no request and break no
//! keep-alive connection, and a failed upgrade fails loudly while the old process serves on.
//!
//! # Your app in a few lines
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! fn main() -> std::process::ExitCode {
//!     // `myapp reload` / `myapp stop`, for the unit's ExecReload= and ExecStop=.
//!     if let Some(code) = heird::cli::dispatch(std::env::args_os()) {
//!         return code;
//!     }
//!     // Sockets from systemd (socket units, the fd store), else bind this address.
//!     heird::main(heird::Acquire::bind(&["127.0.0.1:8080"]), |service| async move {
//!         let app = Router::new().route("/", get(|| async { "hello" }));
//!         service.run(app, heird::Options::default()).await
//!     })
//! }
//! ```
//! [`Service`] adds a readiness gate ([`Service::ready_when`]), a router per listener name
//! ([`Routes`]), state for the next process ([`Service::keep_state`], or bytes with
//! [`Service::save_state`]), a [`Handle`] to follow the
//! lifecycle ([`Status`]) and to start a handoff or a stop from code, and [`Options`] (drain
//! and handoff timeouts, signal handling). [`ws`] gives WebSocket handlers that move to the next
//! process with their state instead of closing. [`Inherited`] and [`start`] serve a binary that
//! reads its own configuration first. [`tls`] serves HTTPS (a certificate and key, systemd
//! credentials, or the app's own rustls config). [`metrics`] serves Prometheus metrics whose
//! counters carry on across handoffs and restarts ([`Service::metrics`]). [`proxy`] takes the
//! client's address from a load balancer's PROXY protocol header. The `examples/` directory has
//! one program per point.
//!
//! # Features
//! - `cli-binary` (default): heird's own `heird` binary, with its command line (clap) and
//!   config file (TOML). An app that uses heird as a library turns the default off
//!   (`default-features = false`) and compiles neither; everything above, [`cli`] included,
//!   works without it.
//! - `clap`: `clap::Args` for [`cli::ReloadArgs`] and [`cli::StopArgs`], to embed them in an
//!   app's own clap command line (`cli-binary` turns it on).
//! - `fault-injection`: test-only hooks that stop or kill a process at a named handoff step.
//!
//! # Lifecycle of one process
//! 1. **Acquire** (before any thread exists): read what a predecessor passed
//!    (`HEIRD_GENERATION`, the handoff channel, the control socket), then take the listening
//!    sockets from systemd (`LISTEN_FDS`: socket units, or heird's own sockets and connections
//!    kept in the fd store), `--fd N`, or a fresh bind (stored in the fd store); validate each.
//! 2. **Serve**: one accept loop per listener; each connection speaks HTTP/1.1 (with upgrades:
//!    WebSocket) or HTTP/2 with prior knowledge, served by hyper driving an axum `Router`.
//! 3. **READY**: a first process sends `READY=1`; a successor writes `ready` to its parent over
//!    the handoff channel instead, and becomes primary when the parent says so.
//! 4. **Handoff** (SIGUSR2, SIGHUP or `heird reload`): `RELOADING=1`, start the successor with
//!    the same fds at 3.. and `LISTEN_PID` set to its own pid, wait for `ready`, then
//!    `MAINPID=` + `READY=1`, `BARRIER=1`, and tell the successor it is primary. If the
//!    successor fails, kill and reap it, send `READY=1` with the reason, and keep serving.
//! 5. **Drain** (after a handoff, on SIGTERM/SIGINT with `STOPPING=1` — after a lame duck of
//!    `Options::shutdown_delay`, in which everything is served but [`Draining::is_stopping`]
//!    says down for health checks —, or with
//!    `Options::idle_exit` once no connection was open for that long): stop accepting;
//!    move each HTTP/1.1 connection, once no request of it is in the handler, to the successor
//!    (after a handoff) or into the fd store (a stop under systemd), or else answer its next
//!    request with `Connection: close` and close it when idle; send HTTP/2 connections the
//!    two-step GOAWAY; move [`ws`] WebSockets at a frame boundary with their handler's state;
//!    tell other handlers through [`Draining`] (WebSockets, SSE end themselves); exit
//!    0 at the latest at the deadline. A predecessor whose successor dies before it has exited
//!    takes the service back.
//!
//! Under a socket unit with `Accept=yes`, fd 3 is one connected socket: the process serves that
//! connection alone, has nothing to hand over, and exits when it closes.
//!
//! The phases and every rule about them are one pure state machine (`lifecycle`); the run
//! loop (`runloop`) only turns the world into its events and performs its actions.
//!
//! As PID 1 (a container) or with [`Supervise::Always`], a process does not serve itself: it
//! becomes a supervisor (`supervise`) that holds the sockets for its whole life and runs the
//! service as a worker, the same binary started again. The handoff above then happens between
//! workers, the supervisor playing systemd's part (their `NOTIFY_SOCKET`, following `MAINPID=`),
//! and its pid never changes.
//!
//! # Layout (lowest first; imports point down this list, never up)
//! - `sys`: the only module with `unsafe` (fd ownership, environment edits, fork/exec).
//! - `polled`: a future whose costly inner future is polled only when a cheap check says it
//!   may be ready (the drain signal, a drain turn, a timer beside hyper).
//! - [`proxy`]: the PROXY protocol (v1, v2) settings, address ranges, and its header parsed
//!   (with `ppp`); reading it from a connection is in `server`.
//! - `wire`: the typed messages of the handoff channel and the control socket.
//! - `notify`: sd_notify states, the barrier, the watchdog ticker.
//! - `fdstore`: systemd's fd store, and every name heird stores under.
//! - [`metrics`]: Prometheus metrics in shared memory that every process of the service counts
//!   in (the layout, made, inherited or taken from the fd store, in `metrics/region.rs`; read at
//!   a scrape into prometheus-client's text format in `metrics/collect.rs`).
//! - `channel`: the handoff channel (seqpacket, one message per datagram, fds attached).
//! - `listeners`: listen addresses, validating and binding listening sockets.
//! - `acquire`: `LISTEN_FDS`/`LISTEN_FDNAMES` → `--fd` → bind; the fd store's sockets
//!   (parsing the `LISTEN_*` variables in `acquire/listen_env.rs`, reconciling with the fd
//!   store in `acquire/store.rs`).
//! - `inherit`: what a successor inherits from its predecessor (generation, channel, control).
//! - `child`: a child process handle that kills and reaps on drop unless released.
//! - `successor`: starting a successor and waiting until it is ready.
//! - `drain`: the drain switch, open-connection count, deadline, and [`Draining`], the
//!   handlers' view of it.
//! - [`tls`]: the certificate and key (files, systemd credentials, or the app's rustls config)
//!   → a checked rustls config (reading the PEM pair and the leaf in `tls/cert.rs`, the
//!   credentials in `tls/credentials.rs`), and session-ticket keys that survive handoffs and
//!   restarts (`tls/tickets.rs`); serving TLS is in `server`.
//! - `server`: serving: one accept loop per listener, each connection through hyper as h1
//!   (with upgrades) or h2c, or TLS; `ConnectInfo`; moving connections and [`ws`] WebSockets
//!   (with their state) to the successor or the fd store and back in, all in `server/moving.rs`.
//!   `server/mod.rs` is its facade, and lists its own modules in their order.
//! - `control`: the control socket behind `reload` (server side).
//! - `pidfile`: the pid file that names the primary (or the supervisor) across handoffs.
//! - [`cli`]: `reload` and `stop` for any binary (client side).
//! - `lifecycle`: the state machine: phases, events, actions, the pure `step`.
//! - `handle`: what an app holds: [`Status`], [`Handle`].
//! - `kept`: [`Kept`], the app's state restored (or defaulted) and saved for the next process.
//! - `handover`: both ends of the handover on the channel.
//! - `options`: [`Options`] and [`RunError`], below the run loop and the service.
//! - `runloop`: turns signals, requests, channel messages, exits and timers into lifecycle
//!   events, and performs the actions (the bigger ones in `runloop/actions.rs`).
//! - `service`: [`Service::prepare`] (before the runtime), then [`Service::run`].
//! - `supervise`: the supervisor, a stable PID 1 in front of the workers (its own pure `step`
//!   in `supervise/machine.rs`, beside `lifecycle`; starting a worker in `supervise/worker.rs`,
//!   the workers' notify socket in `supervise/notify_in.rs`).
//! - `entry`: [`main`] and [`start`]: the runtime and the exit code for a binary.
//! - `logging`: journald or stderr.
//! - `fault`: test-only fault injection at named handoff steps (feature `fault-injection`).
//!
//! heird's own binary is `src/bin/heird/` (`main.rs` and its own modules, apart from the
//! library's): `config` (its command line in `config/args.rs`, its config file in
//! `config/file.rs`, which certificate in `config/tls.rs`) and `app` (its demo endpoints). It
//! uses only the public API above (and `__private`).
// `unsafe_code = "deny"` (with `sys` the one allow) and `unnameable_types` are in Cargo.toml's
// `[lints]`; missing docs are denied here, for the library only.
#![deny(missing_docs)]

mod acquire;
mod channel;
mod child;
pub mod cli;
mod control;
mod drain;
mod entry;
mod fault;
mod fdstore;
mod handle;
mod handover;
mod inherit;
mod kept;
mod lifecycle;
mod listeners;
mod logging;
pub mod metrics;
mod notify;
mod options;
mod pidfile;
mod polled;
pub mod proxy;
mod runloop;
mod server;
mod service;
mod successor;
mod supervise;
mod sys;
pub mod tls;
mod wire;

pub use acquire::{Acquire, Supervise};
pub use drain::{DrainReason, Draining};
pub use entry::{EX_CONFIG, main, start};
pub use handle::{Handle, ReloadError, Reloaded, Status};
pub use inherit::{InheritError, Inherited};
pub use kept::Kept;
pub use lifecycle::Exit;
pub use listeners::{ListenAddr, ListenError, Listener, Source as ListenerSource};
pub use logging::init as init_logging;
pub use server::{ConnectionMoves, Routes, ServeSettings, UnixPeer, ws};
pub use service::{Options, RunError, Service, StartError};

/// heird's own binary uses these; they are not part of the library's API and may change at
/// any time.
#[doc(hidden)]
pub mod __private {
    pub use crate::notify::set_watchdog_stall;
}

#[cfg(test)]
mod error_texts;
