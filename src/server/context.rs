//! What every connection of a process shares: the routes, the drain, the settings, where
//! connections move to, and the clocks of the drain turns and the header-read check.

use std::sync::Mutex;

use tracing::debug;

use super::moving::Moves;
use super::settings::ServeSettings;
use super::{pace, routes, tick};
use crate::drain::Drain;

/// See the module doc.
pub(super) struct ConnCtx {
    pub routes: routes::Resolved,
    pub drain: Drain,
    pub settings: ServeSettings,
    /// Set when draining connections go somewhere instead of closing: to a successor that
    /// took over, or into systemd's fd store for the next process after a restart.
    pub moves: Moves,
    /// Turns of the HTTP/1.1 connections in a drain (a handoff hands them out at a pace).
    pub pacer: pace::Pacer,
    /// Ticks once per `header_read_timeout`, for the HTTP/1.1 header-read check.
    pub ticker: tick::Ticker,
    /// The accept loops, each owning a listener fd until it ends.
    pub accepting: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Logs how a connection served by hyper ended, when with an error.
pub(super) fn log_conn_end(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
}
