//! The steps of [`super::Service::run_routes`] before the run loop takes over: the readiness
//! gate, the server, and what goes into and comes out of the fd store.

use std::os::fd::OwnedFd;

use tracing::info;

use super::Gate;
use crate::drain::Drain;
use crate::listeners::{Family, Listener};
use crate::options::{Options, RunError};
use crate::server::{Routes, ServeSettings, Server};

/// What this process keeps in the fd store from now on: the metrics' counters (when the app
/// serves them), and a slot for the app's state at a stop, before connections (after the
/// listeners, the ticket keys and the metrics, which are there already).
pub(super) fn fill_the_store(opts: &Options, metrics: bool, save_state: bool) {
    if metrics {
        crate::metrics::region::keep_in_fd_store();
    }
    if save_state {
        let keys = opts
            .serve
            .tls
            .as_ref()
            .is_some_and(|t| t.tickets.is_in_fd_store());
        let metrics = crate::metrics::region::in_fd_store();
        crate::fdstore::keep_state_at_stop(u64::from(keys) + u64::from(metrics));
    }
}

/// Starts serving on every listener, and on the one connection of an `Accept=yes` socket unit.
pub(super) fn spawn_server(
    listeners: &[Listener],
    routes: &Routes,
    drain: &Drain,
    serve: &ServeSettings,
    accepted: Option<(String, Family, OwnedFd)>,
) -> std::io::Result<Server> {
    let server = Server::spawn(listeners, routes.clone(), drain, serve)?;
    if let Some((name, family, fd)) = accepted {
        server.serve_accepted(&name, family, fd)?;
        info!(
            name,
            "serving the one connection a socket unit accepted (Accept=yes)"
        );
    }
    Ok(server)
}

/// Waits for the app's readiness gate, at most `timeout`.
pub(super) async fn pass_gate(gate: Gate, timeout: std::time::Duration) -> Result<(), RunError> {
    let reason = match tokio::time::timeout(timeout, gate.0).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some(format!("the readiness gate did not pass within {timeout:?}")),
    };
    if let Some(reason) = reason {
        return Err(RunError::NotReady(reason));
    }
    info!("readiness gate passed");
    Ok(())
}

/// What the previous process left in the fd store at a restart: its state's entry goes (the
/// app has read it), its connections are served and then taken out of the store (it holds a
/// copy of each fd); and the TLS session-ticket keys go in (unless they came from there), so
/// that tickets survive a restart or a crash.
pub(super) fn take_up_the_store(
    server: &Server,
    stored_connections: Vec<(String, OwnedFd)>,
    stored_state: bool,
) {
    if stored_state {
        crate::fdstore::remove_quietly(crate::fdstore::STATE_NAME);
    }
    if !stored_connections.is_empty() {
        let names = server.adopt_stored(stored_connections);
        for name in &names {
            crate::fdstore::remove_quietly(name);
        }
        info!(fds = names.len(), "took over connections from the fd store");
    }
    server.store_tls_tickets();
}
