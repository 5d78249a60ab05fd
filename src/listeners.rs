//! A listening socket and what can be known about it: listen addresses as configured, the
//! validation of every descriptor taken (a listening stream socket of family inet, inet6 or
//! unix, made close-on-exec and nonblocking), and binding. Where the sockets come from is
//! [`crate::acquire`].

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, SockaddrLike, SockaddrStorage, sockopt};
use nix::sys::stat::{SFlag, fstat};

use crate::fdstore;

/// Lowest descriptor of the `sd_listen_fds` protocol.
pub const LISTEN_FDS_START: RawFd = 3;
/// More descriptors than this in `LISTEN_FDS` is treated as garbage, not as a request to scan.
pub const MAX_LISTEN_FDS: u32 = 4096;

/// Environment variables of the socket-passing protocol, unset once the fds are taken.
pub const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
/// heird's own variable carrying each passed fd's original source along a chain of handoffs.
pub const SOURCES_VAR: &str = "HEIRD_FD_SOURCES";

/// Why a listening socket could not be taken or bound.
#[derive(Debug, thiserror::Error)]
// Each variant is documented by its message.
#[allow(missing_docs)]
#[non_exhaustive]
pub enum ListenError {
    #[error("LISTEN_FDS={0:?} is not a number")]
    BadCount(String),
    #[error("LISTEN_FDS={0} is more than {MAX_LISTEN_FDS}")]
    TooMany(u32),
    #[error("LISTEN_PID={0:?} is not a pid")]
    BadPid(String),
    #[error("LISTEN_FDNAMES has {names} names but LISTEN_FDS={fds}")]
    NameCount { names: usize, fds: u32 },
    #[error("fd {fd} ({origin}) is not open (LISTEN_FDS={count} passes fds 3 to {last})", last = 2 + count)]
    NotOpen { fd: RawFd, origin: String, count: u32 },
    #[error("fd {fd} ({origin}) is not open")]
    InheritedNotOpen { fd: RawFd, origin: String },
    #[error("fd {fd} ({origin}) is not a socket")]
    NotSocket { fd: RawFd, origin: String },
    #[error("fd {fd} ({origin}) is a {kind} socket, not a stream socket")]
    NotStream { fd: RawFd, origin: String, kind: String },
    #[error("fd {fd} ({origin}) is a stream socket that is not listening")]
    NotListening { fd: RawFd, origin: String },
    #[error("fd {fd} ({origin}) has unsupported address family {family}")]
    BadFamily {
        fd: RawFd,
        origin: String,
        family: String,
    },
    #[error("fd {fd} ({origin}): {op}: {error}")]
    Sys {
        fd: RawFd,
        origin: String,
        op: &'static str,
        error: nix::Error,
    },
    #[error("--fd {0} is not allowed: fds 0, 1 and 2 are stdin, stdout and stderr")]
    StdioFd(RawFd),
    #[error("fd {0} is given twice")]
    Duplicate(RawFd),
    #[error("cannot bind {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("cannot bind {addr}: another process is listening on it")]
    UnixInUse { addr: String },
    #[error("cannot unset the LISTEN_* variables: {0}")]
    Env(std::io::Error),
    #[error("invalid listen address {addr:?}: {reason}")]
    BadAddr { addr: String, reason: String },
}

/// Where a listener came from ([`Listener::source`]); serialized in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Passed by systemd (socket unit or fd store).
    Systemd,
    /// Inherited as `--fd N` from a parent process.
    Inherited,
    /// Bound by heird itself.
    Bound,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Systemd => "systemd",
            Source::Inherited => "inherited",
            Source::Bound => "bound",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "systemd" => Some(Source::Systemd),
            "inherited" => Some(Source::Inherited),
            "bound" => Some(Source::Bound),
            _ => None,
        }
    }
}

/// A listen address from the command line or config: `HOST:PORT` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`, e.g. `127.0.0.1:8080` or `[::1]:8080`.
    Tcp(SocketAddr),
    /// `unix:/absolute/path`.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `HOST:PORT` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Self, ListenError> {
        let bad = |reason: &str| ListenError::BadAddr {
            addr: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("the unix socket path is empty"));
            }
            if !path.starts_with('/') {
                return Err(bad("the unix socket path must be absolute"));
            }
            if path.len() >= 108 {
                return Err(bad("the unix socket path is longer than 107 bytes"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| bad("expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080) or unix:/path"))
    }

    /// The name of a listener heird bound itself, usable in `LISTEN_FDNAMES` and `FDNAME=`
    /// (printable, no `:`), starting with `bound-`.
    pub fn default_name(&self) -> String {
        let raw = match self {
            ListenAddr::Tcp(a) => format!("{}tcp-{a}", fdstore::BOUND_PREFIX),
            ListenAddr::Unix(p) => format!("{}unix-{}", fdstore::BOUND_PREFIX, p.display()),
        };
        raw.chars()
            .map(|c| if c == ':' || !c.is_ascii_graphic() { '_' } else { c })
            .take(255)
            .collect()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A validated listening socket: close-on-exec, nonblocking, stream, listening.
#[derive(Debug)]
pub struct Listener {
    pub(crate) name: String,
    pub(crate) source: Source,
    /// Display form of the local address (`127.0.0.1:8080`, `unix:/run/heird.sock`).
    pub(crate) address: String,
    pub(crate) fd: OwnedFd,
    pub(crate) family: Family,
}

impl Listener {
    /// Bound by heird (in this process, a predecessor, or one whose socket the fd store kept),
    /// not passed by a socket unit or a parent.
    pub(crate) fn bound_by_heird(&self) -> bool {
        self.source == Source::Bound
            || (self.source == Source::Systemd && crate::fdstore::is_bound_listener(&self.name))
    }

    /// Its name: the `LISTEN_FDNAMES` entry (`FileDescriptorName=` of the socket unit), `fdN`
    /// for an unnamed or `--fd` socket, `bound-…` for a socket heird bound.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its local address for display (`127.0.0.1:8080`, `unix:/run/myapp/http.sock`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where it came from: systemd, an inherited `--fd`, or a bind of this process.
    pub fn source(&self) -> Source {
        self.source
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Unix,
}

/// The family of `fd` when it is a connected (not listening) stream socket of a supported family:
/// the one connection a socket unit with `Accept=yes` passes.
pub(crate) fn accepted_family(fd: &OwnedFd) -> Option<Family> {
    let st = fstat(fd.as_fd()).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK
        || socket::getsockopt(fd, sockopt::SockType).ok()? != socket::SockType::Stream
        || socket::getsockopt(fd, sockopt::AcceptConn).ok()?
    {
        return None;
    }
    // Connected, not merely bound (a bound socket that never listened is a mistake, not a
    // connection from Accept=yes).
    socket::getpeername::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    let local: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).ok()?;
    match local.family()? {
        AddressFamily::Inet | AddressFamily::Inet6 => Some(Family::Inet),
        AddressFamily::Unix => Some(Family::Unix),
        _ => None,
    }
}

/// Checks that `fd` is a listening stream socket of a supported family and makes it
/// close-on-exec and nonblocking.
pub fn validate(fd: OwnedFd, name: String, source: Source, origin: &str) -> Result<Listener, ListenError> {
    let raw = fd.as_raw_fd();
    let sys_err = |op: &'static str| {
        let origin = origin.to_string();
        move |error: nix::Error| ListenError::Sys {
            fd: raw,
            origin,
            op,
            error,
        }
    };
    let st = fstat(fd.as_fd()).map_err(sys_err("fstat"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(ListenError::NotSocket {
            fd: raw,
            origin: origin.to_string(),
        });
    }
    let ty = socket::getsockopt(&fd, sockopt::SockType).map_err(sys_err("getsockopt(SO_TYPE)"))?;
    if ty != socket::SockType::Stream {
        let kind = match ty {
            socket::SockType::Datagram => "datagram (e.g. UDP)".to_string(),
            socket::SockType::SeqPacket => "seqpacket".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        return Err(ListenError::NotStream {
            fd: raw,
            origin: origin.to_string(),
            kind,
        });
    }
    if !socket::getsockopt(&fd, sockopt::AcceptConn).map_err(sys_err("getsockopt(SO_ACCEPTCONN)"))? {
        return Err(ListenError::NotListening {
            fd: raw,
            origin: origin.to_string(),
        });
    }
    let local: SockaddrStorage = socket::getsockname(raw).map_err(sys_err("getsockname"))?;
    let (family, address) = match local.family() {
        Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => {
            let addr = local
                .as_sockaddr_in()
                .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
                .or_else(|| {
                    local
                        .as_sockaddr_in6()
                        .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
                });
            (
                Family::Inet,
                addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
            )
        }
        Some(AddressFamily::Unix) => {
            let path = local
                .as_unix_addr()
                .and_then(|u| {
                    u.path().map(|p| format!("unix:{}", p.display())).or_else(|| {
                        u.as_abstract()
                            .map(|a| format!("unix:@{}", String::from_utf8_lossy(a)))
                    })
                })
                .unwrap_or_else(|| "unix:(unnamed)".into());
            (Family::Unix, path)
        }
        other => {
            return Err(ListenError::BadFamily {
                fd: raw,
                origin: origin.to_string(),
                family: other
                    .map(|f| format!("{f:?}"))
                    .unwrap_or_else(|| "unknown".into()),
            });
        }
    };
    set_flags(fd.as_fd()).map_err(sys_err("fcntl"))?;
    Ok(Listener {
        name,
        source,
        address,
        fd,
        family,
    })
}

fn set_flags(fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    let fdfl = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    fcntl(fd, FcntlArg::F_SETFD(fdfl | FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Binds `addr` (std sockets are CLOEXEC already; made nonblocking here).
pub fn bind(addr: &ListenAddr) -> Result<Listener, ListenError> {
    let bind_err = |error| ListenError::Bind {
        addr: addr.to_string(),
        error,
    };
    let fd: OwnedFd = match addr {
        ListenAddr::Tcp(a) => std::net::TcpListener::bind(a).map_err(bind_err)?.into(),
        ListenAddr::Unix(path) => bind_unix(path, addr)?.into(),
    };
    // std listens with a backlog of 128; a restart's gap (100-300 ms under systemd, while the
    // fd store keeps the socket) wants the system's maximum, like systemd's own Backlog=.
    socket::listen(&fd, socket::Backlog::MAXCONN).map_err(|e| ListenError::Bind {
        addr: addr.to_string(),
        error: e.into(),
    })?;
    validate(fd, addr.default_name(), Source::Bound, &addr.to_string())
}

/// Binds a unix socket, removing a stale socket file only when nobody listens on it.
pub fn bind_unix(path: &Path, addr: &impl fmt::Display) -> Result<StdUnixListener, ListenError> {
    match StdUnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            if !is_socket {
                return Err(ListenError::Bind {
                    addr: addr.to_string(),
                    error: e,
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::UnixInUse {
                    addr: addr.to_string(),
                });
            }
            std::fs::remove_file(path).map_err(|error| ListenError::Bind {
                addr: addr.to_string(),
                error,
            })?;
            StdUnixListener::bind(path).map_err(|error| ListenError::Bind {
                addr: addr.to_string(),
                error,
            })
        }
        Err(error) => Err(ListenError::Bind {
            addr: addr.to_string(),
            error,
        }),
    }
}

/// `LISTEN_FDNAMES` and `HEIRD_FD_SOURCES` values for passing `listeners` on.
pub fn names_and_sources(listeners: &[Listener]) -> (String, String) {
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let sources: Vec<&str> = listeners.iter().map(|l| l.source.as_str()).collect();
    (names.join(":"), sources.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            ListenAddr::parse("127.0.0.1:80").unwrap(),
            ListenAddr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert!(matches!(
            ListenAddr::parse("unix:/run/x.sock").unwrap(),
            ListenAddr::Unix(_)
        ));
        assert!(ListenAddr::parse("unix:rel").is_err());
        assert!(ListenAddr::parse("localhost").is_err());
        assert!(
            !ListenAddr::parse("[::1]:80")
                .unwrap()
                .default_name()
                .contains(':')
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn addresses_never_panic(s in ".{0,80}") {
            match ListenAddr::parse(&s) {
                Ok(a) => prop_assert!(!a.default_name().contains(':')),
                Err(e) => prop_assert!(e.to_string().contains("listen address")),
            }
        }
    }
}
