//! heird makes an HTTP service native to systemd and restarts it with zero downtime.
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
//! 5. **Drain** (after a handoff, or on SIGTERM/SIGINT with `STOPPING=1`): stop accepting;
//!    move each HTTP/1.1 connection, once no request of it is in the handler, to the successor
//!    (after a handoff) or into the fd store (a stop under systemd), or else answer its next
//!    request with `Connection: close` and close it when idle; send HTTP/2 connections the
//!    two-step GOAWAY; tell handlers through [`Draining`] (WebSockets, SSE end themselves); exit
//!    0 at the latest at the deadline. A predecessor whose successor dies before it has exited
//!    takes the service back.
//!
//! # Layout
//! - [`config`]: command line and config file → validated `Config`.
//! - [`listeners`]: `LISTEN_FDS`/`LISTEN_FDNAMES` → `--fd` → bind; validation; nonblocking.
//! - [`notify`]: sd_notify states, the barrier, the watchdog ticker.
//! - [`server`]: accept loops, h1/h2 per connection through hyper, `ConnectInfo`, moving
//!   connections.
//! - [`tls`]: the certificate and key (files or systemd credentials) → a checked rustls config,
//!   and session-ticket keys that survive handoffs and restarts; serving TLS is in [`server`].
//! - [`drain`]: the drain switch, open-connection count, deadline, and [`Draining`], the
//!   handlers' view of it.
//! - [`fault`]: test-only fault injection at named handoff steps (feature `fault-injection`).
//! - [`fdstore`]: keeping self-bound sockets (and, at a stop, connections) in systemd's fd store.
//! - [`handoff`]: spawning the successor, the readiness channel, reaping on failure.
//! - [`control`]: the control socket behind `heird reload`.
//! - [`service`]: the lifecycle above, tying the modules together.
//! - [`app`]: heird's own endpoints (`/`, `/sleep`, `/healthz`, `/info`, `/ws`, `/events`).
//! - [`logging`]: journald or stderr.
//! - `sys`: the only module with `unsafe` (fd ownership, environment edits, fork/exec).
#![deny(unsafe_code)]

pub mod app;
pub mod config;
pub mod control;
pub mod drain;
pub mod fault;
pub mod fdstore;
pub mod handoff;
pub mod listeners;
pub mod logging;
pub mod notify;
pub mod server;
pub mod service;
mod sys;
pub mod tls;

pub use drain::{DrainReason, Draining};
pub use listeners::{Acquire, ListenAddr};
pub use server::UnixPeer;
pub use service::{Exit, Options, Service};
