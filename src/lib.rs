//! heird makes an HTTP service native to systemd and restarts it with zero downtime.
//!
//! # Lifecycle of one process
//! 1. **Acquire** (before any thread exists): read what a predecessor passed
//!    (`HEIRD_GENERATION`, the handoff channel, the control socket), then take the listening
//!    sockets from systemd (`LISTEN_FDS`: socket units, or heird's own sockets and connections
//!    kept in the fd store), `--fd N`, or a fresh bind (stored in the fd store); validate each.
//! 2. **Serve**: one accept loop per listener; each connection is served by hyper's HTTP/1.1
//!    connection driving an axum `Router`.
//! 3. **READY**: a first process sends `READY=1`; a successor writes `ready` to its parent over
//!    the handoff channel instead, and becomes primary when the parent says so.
//! 4. **Handoff** (SIGUSR2, SIGHUP or `heird reload`): `RELOADING=1`, start the successor with
//!    the same fds at 3.. and `LISTEN_PID` set to its own pid, wait for `ready`, then
//!    `MAINPID=` + `READY=1`, `BARRIER=1`, and tell the successor it is primary. If the
//!    successor fails, kill and reap it, send `READY=1` with the reason, and keep serving.
//! 5. **Drain** (after a handoff, or on SIGTERM/SIGINT with `STOPPING=1`): stop accepting;
//!    move each connection, once no request of it is in the handler, to the successor (after a
//!    handoff) or into the fd store (a stop under systemd), or else answer its next request with
//!    `Connection: close` and close it when idle; exit 0 at the latest at the deadline. A
//!    predecessor whose successor dies before it has exited takes the service back.
//!
//! The phases and every rule about them are one pure state machine ([`lifecycle`]); the run
//! loop ([`service`]) only turns the world into its events and performs its actions.
//!
//! # Layout (lowest first; imports point down this list, never up)
//! - `sys`: the only module with `unsafe` (fd ownership, environment edits, fork/exec).
//! - [`wire`]: the typed messages of the handoff channel and the control socket.
//! - [`notify`]: sd_notify states, the barrier, the watchdog ticker.
//! - [`fdstore`]: systemd's fd store, and every name heird stores under.
//! - [`channel`]: the handoff channel (seqpacket, one message per datagram, fds attached).
//! - [`config`]: command line and config file → validated `Config`.
//! - [`listeners`]: listen addresses, validating and binding listening sockets.
//! - [`acquire`]: `LISTEN_FDS`/`LISTEN_FDNAMES` → `--fd` → bind; the fd store's sockets.
//! - [`inherit`]: what a successor inherits from its predecessor (generation, channel, control).
//! - [`child`]: a child process handle that kills and reaps on drop unless released.
//! - [`successor`]: starting a successor and waiting until it is ready.
//! - [`drain`]: the drain switch, open-connection count, deadline.
//! - [`server`]: accept loops, per-connection serving through hyper, moving connections.
//! - [`control`]: the control socket behind `heird reload` (server side).
//! - [`client`]: `reload` and `stop` for any binary (client side).
//! - [`lifecycle`]: the state machine: phases, events, actions, the pure `step`.
//! - [`handover`]: both ends of the handover on the channel.
//! - `runloop`: turns signals, requests, channel messages, exits and timers into lifecycle
//!   events, and performs the actions.
//! - [`service`]: `prepare` (before the runtime), then `run`, which starts the run loop.
//! - [`app`]: heird's own endpoints (`/`, `/sleep`, `/healthz`, `/info`).
//! - [`fault`]: test-only fault injection at named handoff steps (feature `fault-injection`).
//! - [`logging`]: journald or stderr.
#![deny(unsafe_code)]

pub mod acquire;
pub mod app;
pub mod channel;
pub mod child;
pub mod client;
pub mod config;
pub mod control;
pub mod drain;
pub mod fault;
pub mod fdstore;
pub mod handover;
pub mod inherit;
pub mod lifecycle;
pub mod listeners;
pub mod logging;
pub mod notify;
mod runloop;
pub mod server;
pub mod service;
pub mod successor;
mod sys;
pub mod wire;

pub use acquire::Acquire;
pub use listeners::ListenAddr;
pub use service::{Exit, Options, Service};

#[cfg(test)]
mod error_texts;
