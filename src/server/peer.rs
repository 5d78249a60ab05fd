//! Who is on the other end of a connection: what handlers get as `axum::extract::ConnectInfo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::ConnectInfo;
use axum::http::Extensions;

/// The peer of a connection on a Unix socket, as `ConnectInfo<UnixPeer>`.
///
/// heird inserts `ConnectInfo<SocketAddr>` (the peer's address) into every request that came
/// over TCP, and `ConnectInfo<UnixPeer>` into every request that came over a Unix socket:
///
/// ```no_run
/// use axum::extract::ConnectInfo;
/// use heird::UnixPeer;
///
/// async fn who(ConnectInfo(peer): ConnectInfo<UnixPeer>) -> String {
///     format!("uid {} gid {} pid {:?}", peer.uid, peer.gid, peer.pid)
/// }
/// ```
///
/// The credentials are the kernel's `SO_PEERCRED`: those of the process that called
/// `connect(2)`, taken when it connected (a process that changes its uid later, or passes the
/// socket on, keeps the credentials of the connect). They stay the same when heird moves the
/// connection to a successor. Extracting the one that does not match the socket
/// (`ConnectInfo<SocketAddr>` on a Unix socket) fails with 500, as with `axum::serve`;
/// a router that serves both can take `Option<Extension<ConnectInfo<…>>>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixPeer {
    /// The path the peer's socket is bound to; `None` for the usual unnamed client socket.
    pub path: Option<PathBuf>,
    /// Effective user id of the connecting process.
    pub uid: u32,
    /// Effective group id of the connecting process.
    pub gid: u32,
    /// Pid of the connecting process (`None` when the kernel does not know it, e.g. the peer
    /// lives in another pid namespace).
    pub pid: Option<i32>,
}

/// A connection's peer, computed once when the connection is taken up.
#[derive(Debug, Clone)]
pub(super) enum Peer {
    Tcp(SocketAddr),
    Unix(UnixPeer),
    /// getpeername/SO_PEERCRED failed (the peer is already gone): no `ConnectInfo`.
    Unknown,
}

impl Peer {
    /// Inserts the `ConnectInfo` of this peer (one insert per request).
    pub fn insert_into(&self, ext: &mut Extensions) {
        match self {
            Peer::Tcp(a) => {
                ext.insert(ConnectInfo(*a));
            }
            Peer::Unix(p) => {
                ext.insert(ConnectInfo(p.clone()));
            }
            Peer::Unknown => {}
        }
    }
}
