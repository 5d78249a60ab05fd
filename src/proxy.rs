//! The PROXY protocol (v1 text and v2 binary, as HAProxy, nginx, AWS NLB and most balancers
//! send it): on the listeners it names, each connection starts with a header that says who the
//! client is, and heird gives handlers that address (`ConnectInfo<SocketAddr>`) instead of the
//! balancer's.
//!
//! ```no_run
//! # fn main() -> Result<(), heird::proxy::CidrError> {
//! let mut options = heird::Options::default();
//! let mut proxy = heird::proxy::ProxyProtocol::default();
//! // Only the listener named "public" (all of them when `None`) …
//! proxy.listeners = Some(vec!["public".into()]);
//! // … and only from the balancers (any source when empty).
//! proxy.from = vec!["10.0.0.0/8".parse()?, "::1/128".parse()?];
//! options.serve.proxy_protocol = Some(proxy);
//! # Ok(()) }
//! ```
//!
//! On such a listener the header is required, and read in the connection's task before
//! anything else (before TLS, before telling HTTP/1.1 from h2). A connection whose header is
//! missing, malformed, not complete within [`ProxyProtocol::timeout`], or that comes from a
//! source outside [`ProxyProtocol::from`] is closed with a warning naming the socket's peer, and
//! nothing is served on it. A v2 `LOCAL` header (a balancer's health check) or a v1 `UNKNOWN`
//! one keeps the socket's own peer. The client's address stays with the connection when it
//! moves to a successor or into the fd store, WebSockets included.
//!
//! The header's address is given as `ConnectInfo<SocketAddr>` also on a Unix-socket listener
//! (a balancer on the same machine), where `ConnectInfo<UnixPeer>` is then absent; [`from`]
//! applies to TCP peers only (a Unix socket's file permissions say who may connect).
//!
//! [`from`]: ProxyProtocol::from

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ppp::{PartialResult, v1, v2};

/// The PROXY protocol on some or all listeners (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyProtocol {
    /// The listeners (by name, as `[tls] listeners`: the `LISTEN_FDNAMES` entry, `fdN`, or
    /// `bound-…`) that require the header; `None`: every listener. Naming a listener the
    /// process does not have is an error at the start.
    pub listeners: Option<Vec<String>>,
    /// The sources (TCP peers) allowed to send the header; empty: any. A connection from
    /// elsewhere is closed and logged, so nothing bypasses the balancer.
    pub from: Vec<Cidr>,
    /// How long a connection may take to send its whole header (default 5 s).
    pub timeout: Duration,
}

impl Default for ProxyProtocol {
    fn default() -> Self {
        ProxyProtocol {
            listeners: None,
            from: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl ProxyProtocol {
    /// Whether the listener named `name` requires the header.
    pub(crate) fn applies_to(&self, name: &str) -> bool {
        self.listeners
            .as_ref()
            .is_none_or(|l| l.iter().any(|n| n == name))
    }

    /// Whether a connection from `peer` may send the header (always, when `from` is empty).
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        self.from.is_empty() || self.from.iter().any(|c| c.contains(peer))
    }
}

/// An address range, `ADDRESS/PREFIX` (`10.0.0.0/8`, `fd00::/8`), or one address (`/32` or
/// `/128`). An IPv4 range also matches IPv4-mapped IPv6 peers (`::ffff:10.1.2.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A [`Cidr`] that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address range (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/8): {reason}")]
pub struct CidrError {
    text: String,
    reason: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = |reason| CidrError {
            text: s.to_string(),
            reason,
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| err("prefix too long"))?,
            Some(_) => return Err(err("the prefix is not a number")),
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-bit address.
fn masked(a: u128, bits: u8, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { a >> (bits - prefix) }
}

/// What the first bytes of a connection say, as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Could still become a header: read more.
    Incomplete,
    /// A header of `len` bytes; `client` is the source it names, `None` for a v2 `LOCAL`
    /// command, a v1 `UNKNOWN`, or an address family without one (the socket's peer stays).
    Header { len: usize, client: Option<SocketAddr> },
    /// Not a PROXY header (the reason, for the log).
    Invalid(String),
}

/// The longest v1 header, its CRLF included.
const V1_MAX: usize = 107;

/// The longest header heird reads (v2: 16 bytes and a 16-bit length).
pub(crate) const MAX_HEADER: usize = 16 + 65535;

/// Parses the start of a connection: v2 (its 12-byte signature), else v1 (`PROXY `).
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    match v2::Header::try_from(buf) {
        Err(v2::ParseError::Prefix) => {}
        Err(e) if e.is_incomplete() => return Parsed::Incomplete,
        Err(e) => return Parsed::Invalid(format!("v2: {e}")),
        Ok(h) => {
            let client = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            return Parsed::Header { len: h.len(), client };
        }
    }
    // v1 is framed here, by its CRLF: ppp takes some cut-off lines (one ending in a space) for
    // malformed ones, and a slow client may cut anywhere.
    const V1: &[u8] = b"PROXY ";
    if !buf.starts_with(V1) && !V1.starts_with(buf) {
        return Parsed::Invalid("not a PROXY header (neither v2's signature nor \"PROXY \")".into());
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() < V1_MAX {
            Parsed::Incomplete
        } else {
            Parsed::Invalid(format!("v1: no CRLF within {V1_MAX} bytes"))
        };
    };
    match v1::Header::try_from(&buf[..end + 2]) {
        Err(e) => Parsed::Invalid(format!("v1: {e}")),
        Ok(h) => {
            let client = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Parsed::Header {
                len: h.header.len(),
                client,
            }
        }
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
