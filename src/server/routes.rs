//! A router per listener: a public API on `http` and an admin or metrics router on `admin`,
//! from one socket unit (or two) passing both. Listeners are matched by name
//! (`LISTEN_FDNAMES`, i.e. `FileDescriptorName=`); a connection moved from a predecessor is
//! matched by its local address, which is its listener's.

use std::net::SocketAddr;

use axum::Router;
use tracing::warn;

use crate::listeners::{Family, Listener};

/// Which router serves which listener: [`Routes::new`] takes the router for every listener not
/// named with [`Routes::listener`].
///
/// ```
/// use axum::{Router, routing::get};
/// let routes = heird::Routes::new(Router::new().route("/", get(|| async { "api" })))
///     .listener("admin", Router::new().route("/metrics", get(|| async { "up 1" })));
/// ```
#[derive(Debug, Clone)]
pub struct Routes {
    default: Router,
    named: Vec<(String, Router)>,
}

impl Routes {
    /// `router` serves every listener without a router of its own.
    pub fn new(router: Router) -> Routes {
        Routes {
            default: router,
            named: Vec::new(),
        }
    }

    /// `router` serves the listener named `name` (its `FileDescriptorName=`, or `fdN`).
    pub fn listener(mut self, name: &str, router: Router) -> Routes {
        self.named.push((name.to_string(), router));
        self
    }
}

impl From<Router> for Routes {
    fn from(router: Router) -> Routes {
        Routes::new(router)
    }
}

/// `router` with every handler turned into a route once, as `axum::serve` does (through
/// `into_make_service`). Without it, a router whose handlers were added without state clones
/// and boxes its handler again for every request (one allocation each).
fn prepared(router: Router) -> Router {
    router.with_state(())
}

/// The routes resolved against this process's listeners.
pub(super) struct Resolved {
    default: Router,
    /// (listener address, router) for each named listener present.
    by_listener: Vec<(String, Family, Router)>,
}

impl Resolved {
    pub fn new(routes: Routes, listeners: &[Listener]) -> Resolved {
        let mut by_listener = Vec::new();
        for (name, router) in routes.named {
            match listeners.iter().find(|l| l.name == name) {
                Some(l) => by_listener.push((l.address.clone(), l.family, prepared(router))),
                None => {
                    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
                    warn!(listener = %name, ?names, "a router names a listener that was not passed; it serves nothing");
                }
            }
        }
        Resolved {
            default: prepared(routes.default),
            by_listener,
        }
    }

    /// The router of the listener with this address.
    pub fn for_listener(&self, address: &str) -> Router {
        self.by_listener
            .iter()
            .find(|(a, _, _)| a == address)
            .map(|(_, _, r)| r.clone())
            .unwrap_or_else(|| self.default.clone())
    }

    /// The router for a connection whose local end is `local` (a moved connection).
    pub fn for_local(&self, local: &Local) -> Router {
        let found = self
            .by_listener
            .iter()
            .find(|(addr, family, _)| match (family, local) {
                (Family::Inet, Local::Tcp(l)) => addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.port() == l.port() && (a.ip().is_unspecified() || a.ip() == l.ip())),
                (Family::Unix, Local::Unix(p)) => addr.strip_prefix("unix:") == Some(p.as_str()),
                _ => false,
            });
        found
            .map(|(_, _, r)| r.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// The local end of a connection.
pub(super) enum Local {
    Tcp(SocketAddr),
    Unix(String),
    Unknown,
}
