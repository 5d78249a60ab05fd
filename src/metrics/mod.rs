//! Prometheus metrics that survive handoffs and restarts.
//!
//! heird counts requests, open connections, handoffs, moved connections and WebSockets, and
//! drains in a small shared memory region (a memfd mapped by every process of the service:
//! the first one makes it, each successor inherits it with the sockets, and systemd's fd store
//! keeps it across a `systemctl restart`). All processes add to the same counters, so a
//! scrape that reaches the old (draining) process during a handoff and the next one that
//! reaches the new process see one series that never goes down, and `rate()` shows no reset
//! over a reload or a restart. Gauges (open connections) are the service's totals.
//!
//! Get a [`Metrics`] from [`crate::Service::metrics`] and mount [`Metrics::router`] (serves
//! `GET /metrics` in the OpenMetrics text format), or add heird's metrics to the app's own
//! prometheus-client `Registry` with [`Metrics::register`].
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `heird_requests_total` | counter | HTTP requests routed to the app |
//! | `heird_open_connections` | gauge | connections open now, in every process |
//! | `heird_handoffs_started_total` | counter | handoffs started (successor spawned) |
//! | `heird_handoffs_succeeded_total` | counter | handoffs whose successor took over |
//! | `heird_handoffs_failed_total` | counter | handoffs whose successor failed |
//! | `heird_connections_moved_total` | counter | idle connections moved to a successor or the fd store |
//! | `heird_websockets_moved_total` | counter | WebSockets moved to a successor or the fd store |
//! | `heird_drain_duration_seconds` | histogram | how long each drain took (`_count`: drains) |
//! | `heird_generation` | gauge | the primary process's generation |
//! | `heird_primary_start_time_seconds` | gauge | when the primary process started (Unix time) |

mod collect;
pub(crate) mod region;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// The prometheus-client that [`Metrics::register`] takes a `Registry` of (the app's own
/// metrics go in the same one).
pub use prometheus_client;

/// The text format's content type.
pub const CONTENT_TYPE_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// heird's metrics of this service (process-wide: every clone, and every [`Metrics`] of the
/// process, reads the same counters). See the [module](self) doc for the list.
#[derive(Debug, Clone)]
pub struct Metrics {
    _private: (),
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics { _private: () }
    }

    /// Adds heird's metrics to `registry` (read at each scrape), beside the app's own.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(collect::Shared(region::region)));
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE_TEXT`]).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        encode(&registry)
    }

    /// A router that serves [`Metrics::encode`] at `GET /metrics`; merge it into the app's
    /// (`app.merge(metrics.router())`).
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let m = self.clone();
        Router::new().route(
            "/metrics",
            get(move || async move { ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], m.encode()).into_response() }),
        )
    }
}

/// `registry` in the text format (an encoding error, which a `String` never gives, yields what
/// was written so far).
fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    out
}

#[cfg(test)]
mod tests;
