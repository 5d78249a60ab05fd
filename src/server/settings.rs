//! The settings of the connection layer.

use std::sync::Arc;
use std::time::Duration;

/// Settings of the connection layer.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// While draining, an idle connection is closed after this long without activity.
    pub idle_close_grace: Duration,
    /// A request head must arrive within this long (slow-header clients are cut off). Checked
    /// once per period per connection, not timed per request: on HTTP/1.1 a connection that
    /// started no request for a whole period, with nothing in flight, is closed, so a head
    /// arrives within one to two periods of the last response (keep-alive connections idle
    /// that long are closed too). Before the first bytes: within one period.
    pub header_read_timeout: Duration,
    /// Move idle keep-alive connections to the successor at a handoff (instead of closing them).
    pub move_connections: bool,
    /// At a move, a resumable WebSocket ([`crate::ws`]) in the middle of a fragmented message
    /// or a frame gets this long to reach a message boundary; then it is closed with 1012.
    /// `None` (the default): until a second before the drain deadline (half the drain timeout
    /// when that is shorter), so the close goes out before the process exits.
    pub ws_boundary_timeout: Option<Duration>,
    /// TLS on every listener, or on those it names; `None`: plain HTTP everywhere.
    pub tls: Option<Arc<crate::tls::TlsSetup>>,
    /// The PROXY protocol (v1, v2) on every listener, or on those it names; `None`: off (see
    /// [`crate::proxy`]).
    pub proxy_protocol: Option<crate::proxy::ProxyProtocol>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            idle_close_grace: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(30),
            move_connections: true,
            ws_boundary_timeout: None,
            tls: None,
            proxy_protocol: None,
        }
    }
}

impl ServeSettings {
    /// Fills in what depends on the drain timeout.
    pub(crate) fn with_drain_timeout(mut self, drain_timeout: Duration) -> ServeSettings {
        let close = Duration::from_secs(1).min(drain_timeout / 2);
        self.ws_boundary_timeout
            .get_or_insert(drain_timeout.saturating_sub(close));
        self
    }
}
