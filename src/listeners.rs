//! Where the listening sockets come from, in this order: systemd (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`), inherited descriptors (`--fd N`), or a fresh bind of the configured
//! addresses. Every descriptor taken is validated (a listening stream socket of family inet,
//! inet6 or unix) and set to close-on-exec and nonblocking.
//!
//! We parse the `LISTEN_*` variables ourselves instead of using `listenfd`: listenfd ignores
//! `LISTEN_FDNAMES`, accepts fds without `LISTEN_PID`, and leaks fd 3 into children when
//! `LISTEN_PID` is not ours. The parser is a pure function, tested below.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, SockaddrLike, SockaddrStorage, sockopt};
use nix::sys::stat::{SFlag, fstat};

use crate::sys;

/// Lowest descriptor of the `sd_listen_fds` protocol.
pub const LISTEN_FDS_START: RawFd = 3;
/// More descriptors than this in `LISTEN_FDS` is treated as garbage, not as a request to scan.
const MAX_LISTEN_FDS: u32 = 4096;

/// Environment variables of the socket-passing protocol, unset once the fds are taken.
pub const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
/// heird's own variable carrying each passed fd's original source along a chain of handoffs.
pub const SOURCES_VAR: &str = "HEIRD_FD_SOURCES";

#[derive(Debug, thiserror::Error)]
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
    #[error("fd {fd} ({origin}): {op}: {source}")]
    Sys {
        fd: RawFd,
        origin: String,
        op: &'static str,
        source: nix::Error,
    },
    #[error("--fd {0} is not allowed: fds 0, 1 and 2 are stdin, stdout and stderr")]
    StdioFd(RawFd),
    #[error("fd {0} is given twice")]
    Duplicate(RawFd),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot bind {addr}: another process is listening on it")]
    UnixInUse { addr: String },
    #[error("cannot unset the LISTEN_* variables: {0}")]
    Env(std::io::Error),
    #[error("invalid listen address {addr:?}: {reason}")]
    BadAddr { addr: String, reason: String },
}

/// Where a listener came from, as `/info` reports it.
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
    fn as_str(self) -> &'static str {
        match self {
            Source::Systemd => "systemd",
            Source::Inherited => "inherited",
            Source::Bound => "bound",
        }
    }
    fn parse(s: &str) -> Option<Self> {
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
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
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
    /// (printable, no `:`), starting with [`STORE_PREFIX`].
    pub fn default_name(&self) -> String {
        let raw = match self {
            ListenAddr::Tcp(a) => format!("{STORE_PREFIX}tcp-{a}"),
            ListenAddr::Unix(p) => format!("{STORE_PREFIX}unix-{}", p.display()),
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
    pub name: String,
    pub source: Source,
    /// Display form of the local address (`127.0.0.1:8080`, `unix:/run/heird.sock`).
    pub address: String,
    pub fd: OwnedFd,
    pub family: Family,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Unix,
}

/// What the systemd variables say, before any fd is touched.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenEnv {
    /// No `LISTEN_FDS`: nothing was passed.
    Absent,
    /// Passed to another process (`LISTEN_PID` is not ours, or missing): ignore the fds.
    NotForUs { listen_pid: Option<u32>, count: u32 },
    /// Ours: `count` fds from 3, with one name each (`None` when `LISTEN_FDNAMES` is unset).
    Ours {
        count: u32,
        names: Vec<Option<String>>,
        sources: Vec<Option<Source>>,
    },
}

/// Parses `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` (and heird's `HEIRD_FD_SOURCES`).
pub fn parse_listen_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    fdnames: Option<&str>,
    sources: Option<&str>,
    my_pid: u32,
) -> Result<ListenEnv, ListenError> {
    let Some(fds) = listen_fds else {
        return Ok(ListenEnv::Absent);
    };
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| ListenError::BadCount(fds.to_string()))?;
    if count > MAX_LISTEN_FDS {
        return Err(ListenError::TooMany(count));
    }
    let pid = match listen_pid {
        None => None,
        Some(p) => Some(
            p.trim()
                .parse::<u32>()
                .map_err(|_| ListenError::BadPid(p.to_string()))?,
        ),
    };
    if pid != Some(my_pid) {
        return Ok(ListenEnv::NotForUs {
            listen_pid: pid,
            count,
        });
    }
    let names: Vec<Option<String>> = match fdnames {
        None => vec![None; count as usize],
        Some(n) => {
            let parts: Vec<Option<String>> = if n.is_empty() && count == 0 {
                Vec::new()
            } else {
                n.split(':').map(|s| Some(s.to_string())).collect()
            };
            if parts.len() != count as usize {
                return Err(ListenError::NameCount {
                    names: parts.len(),
                    fds: count,
                });
            }
            parts
        }
    };
    let sources = match sources {
        Some(s) if s.split(',').count() == count as usize => s.split(',').map(Source::parse).collect(),
        _ => vec![None; count as usize],
    };
    Ok(ListenEnv::Ours {
        count,
        names,
        sources,
    })
}

/// How to acquire listeners.
#[derive(Debug, Clone, Default)]
pub struct Acquire {
    /// `--fd N` descriptors, used when systemd passed nothing.
    pub inherited: Vec<RawFd>,
    /// Addresses to bind when neither systemd nor `--fd` gave sockets.
    pub bind: Vec<ListenAddr>,
}

/// The listeners and what happened on the way.
#[derive(Debug, Default)]
pub struct Acquired {
    pub listeners: Vec<Listener>,
    /// Set when `LISTEN_FDS` was present but meant for another process.
    pub ignored: Option<String>,
    /// Indices into `listeners` of sockets bound now, to keep in systemd's fd store.
    pub store: Vec<usize>,
    /// Names of stored sockets that are no longer wanted, to remove from the fd store.
    pub unstore: Vec<String>,
    /// Keep-alive connections a previous process stored at its stop (name, fd), to be served
    /// and then removed from the store.
    pub connections: Vec<(String, OwnedFd)>,
}

/// Prefix of the names under which heird keeps the sockets it bound in systemd's fd store.
/// Socket-unit fds never carry it (and are never stored).
pub const STORE_PREFIX: &str = "bound-";

/// systemd passed fds without a predecessor: socket-unit fds and/or fds heird stored earlier.
/// With socket-unit fds, serve those and drop stored ones. Otherwise reuse each stored socket
/// whose address the config still lists, bind the addresses that have none (to be stored), and
/// drop stored sockets the config no longer lists.
fn reconcile_with_store(passed: Vec<Listener>, bind_addrs: &[ListenAddr]) -> Result<Acquired, ListenError> {
    let (mut stored, unit): (Vec<Listener>, Vec<Listener>) =
        passed.into_iter().partition(|l| l.name.starts_with(STORE_PREFIX));
    if !unit.is_empty() {
        let unstore = stored.iter().map(|l| l.name.clone()).collect();
        return Ok(Acquired {
            listeners: unit,
            unstore,
            ..Acquired::default()
        });
    }
    let mut out = Vec::new();
    let mut store = Vec::new();
    for addr in bind_addrs {
        let wanted = addr.to_string();
        // A unix socket whose file is gone (e.g. a RuntimeDirectory= removed at the stop) can
        // no longer be reached by path: bind it anew instead of reusing the stored fd.
        let reachable = match addr {
            ListenAddr::Unix(path) => std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())),
            ListenAddr::Tcp(_) => true,
        };
        match stored.iter().position(|l| reachable && l.address == wanted) {
            Some(i) => {
                let mut l = stored.remove(i);
                l.source = Source::Bound;
                out.push(l);
            }
            None => {
                store.push(out.len());
                out.push(bind(addr)?);
            }
        }
    }
    let unstore = stored.iter().map(|l| l.name.clone()).collect();
    Ok(Acquired {
        listeners: out,
        store,
        unstore,
        ..Acquired::default()
    })
}

/// Takes the listening sockets. Must run before any thread exists: it unsets the `LISTEN_*`
/// variables so that nothing (children included) sees them again.
pub fn acquire(opts: &Acquire) -> Result<Acquired, ListenError> {
    let env = |k: &str| std::env::var(k).ok();
    let parsed = parse_listen_env(
        env("LISTEN_PID").as_deref(),
        env("LISTEN_FDS").as_deref(),
        env("LISTEN_FDNAMES").as_deref(),
        env(SOURCES_VAR).as_deref(),
        std::process::id(),
    );
    sys::remove_env(&LISTEN_VARS).map_err(ListenError::Env)?;
    sys::remove_env(&[SOURCES_VAR]).map_err(ListenError::Env)?;
    let mut ignored = None;
    match parsed? {
        ListenEnv::Ours {
            count,
            names,
            sources,
        } if count > 0 => {
            let from_predecessor = sources.iter().any(Option::is_some);
            let mut connections = Vec::new();
            let mut out = Vec::with_capacity(count as usize);
            for (i, (name, source)) in names.into_iter().zip(sources).enumerate() {
                let fd = LISTEN_FDS_START + i as RawFd;
                let origin = match &name {
                    Some(n) => format!("LISTEN_FDNAMES {n:?}"),
                    None => format!("LISTEN_FDS={count}"),
                };
                let owned = sys::take_inherited_fd(fd)
                    .map_err(|e| take_err(fd, &origin, e))?
                    .ok_or_else(|| ListenError::NotOpen {
                        fd,
                        origin: origin.clone(),
                        count,
                    })?;
                let name = name.unwrap_or_else(|| format!("fd{fd}"));
                // A keep-alive connection a previous process left in the fd store.
                if crate::server::is_stored_connection(&name) {
                    connections.push((name, owned));
                    continue;
                }
                let source = source.unwrap_or(Source::Systemd);
                out.push(validate(owned, name, source, &origin)?);
            }
            // From a predecessor (it says where each fd came from): take them all, as they are.
            let mut acquired = if from_predecessor {
                Acquired {
                    listeners: out,
                    ignored,
                    ..Acquired::default()
                }
            } else {
                reconcile_with_store(out, &opts.bind)?
            };
            acquired.connections = connections;
            return Ok(acquired);
        }
        ListenEnv::NotForUs { listen_pid, count } => {
            // The fds belong to someone else; keep them out of our children.
            for i in 0..count.min(MAX_LISTEN_FDS) {
                sys::set_cloexec_raw(LISTEN_FDS_START + i as RawFd);
            }
            ignored = Some(match listen_pid {
                Some(p) => format!(
                    "LISTEN_FDS={count} is for pid {p}, not for us (pid {}): ignored",
                    std::process::id()
                ),
                None => format!("LISTEN_FDS={count} without LISTEN_PID: ignored"),
            });
        }
        _ => {}
    }
    if !opts.inherited.is_empty() {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for &fd in &opts.inherited {
            if fd < 3 {
                return Err(ListenError::StdioFd(fd));
            }
            if seen.contains(&fd) {
                return Err(ListenError::Duplicate(fd));
            }
            seen.push(fd);
            let origin = format!("--fd {fd}");
            let owned = sys::take_inherited_fd(fd)
                .map_err(|e| take_err(fd, &origin, e))?
                .ok_or_else(|| ListenError::InheritedNotOpen {
                    fd,
                    origin: origin.clone(),
                })?;
            out.push(validate(owned, format!("fd{fd}"), Source::Inherited, &origin)?);
        }
        return Ok(Acquired {
            listeners: out,
            ignored,
            ..Acquired::default()
        });
    }
    let mut out = Vec::new();
    for addr in &opts.bind {
        out.push(bind(addr)?);
    }
    let store = (0..out.len()).collect();
    Ok(Acquired {
        listeners: out,
        ignored,
        store,
        ..Acquired::default()
    })
}

fn take_err(fd: RawFd, origin: &str, e: std::io::Error) -> ListenError {
    ListenError::Sys {
        fd,
        origin: origin.to_string(),
        op: "take",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
    }
}

/// Checks that `fd` is a listening stream socket of a supported family and makes it
/// close-on-exec and nonblocking.
pub fn validate(fd: OwnedFd, name: String, source: Source, origin: &str) -> Result<Listener, ListenError> {
    let raw = fd.as_raw_fd();
    let sys_err = |op: &'static str| {
        let origin = origin.to_string();
        move |source: nix::Error| ListenError::Sys {
            fd: raw,
            origin,
            op,
            source,
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
    let bind_err = |source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    };
    let fd: OwnedFd = match addr {
        ListenAddr::Tcp(a) => std::net::TcpListener::bind(a).map_err(bind_err)?.into(),
        ListenAddr::Unix(path) => bind_unix(path, addr)?.into(),
    };
    // std listens with a backlog of 128; a restart's gap (100-300 ms under systemd, while the
    // fd store keeps the socket) wants the system's maximum, like systemd's own Backlog=.
    socket::listen(&fd, socket::Backlog::MAXCONN).map_err(|e| ListenError::Bind {
        addr: addr.to_string(),
        source: e.into(),
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
                    source: e,
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::UnixInUse {
                    addr: addr.to_string(),
                });
            }
            std::fs::remove_file(path).map_err(|source| ListenError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            StdUnixListener::bind(path).map_err(|source| ListenError::Bind {
                addr: addr.to_string(),
                source,
            })
        }
        Err(source) => Err(ListenError::Bind {
            addr: addr.to_string(),
            source,
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

    fn p(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> Result<ListenEnv, ListenError> {
        parse_listen_env(pid, fds, names, None, 42)
    }

    #[test]
    fn absent_without_listen_fds() {
        assert_eq!(p(Some("42"), None, None).unwrap(), ListenEnv::Absent);
    }

    #[test]
    fn ours_with_names() {
        match p(Some("42"), Some("2"), Some("http:unix")).unwrap() {
            ListenEnv::Ours { count, names, .. } => {
                assert_eq!(count, 2);
                assert_eq!(names, vec![Some("http".into()), Some("unix".into())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_for_us() {
        assert_eq!(
            p(Some("7"), Some("1"), None).unwrap(),
            ListenEnv::NotForUs {
                listen_pid: Some(7),
                count: 1
            }
        );
        assert_eq!(
            p(None, Some("1"), None).unwrap(),
            ListenEnv::NotForUs {
                listen_pid: None,
                count: 1
            }
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = p(Some("42"), Some("abc"), None).unwrap_err().to_string();
        assert!(e.contains("LISTEN_FDS=\"abc\""), "{e}");
        let e = p(Some("x"), Some("1"), None).unwrap_err().to_string();
        assert!(e.contains("LISTEN_PID"), "{e}");
        let e = p(Some("42"), Some("2"), Some("a")).unwrap_err().to_string();
        assert!(e.contains("1 names") && e.contains("LISTEN_FDS=2"), "{e}");
        let e = p(Some("42"), Some("99999"), None).unwrap_err().to_string();
        assert!(e.contains("99999"), "{e}");
    }

    #[test]
    fn sources_are_carried() {
        match parse_listen_env(Some("42"), Some("2"), Some("a:b"), Some("bound,systemd"), 42).unwrap() {
            ListenEnv::Ours { sources, .. } => {
                assert_eq!(sources, vec![Some(Source::Bound), Some(Source::Systemd)])
            }
            other => panic!("{other:?}"),
        }
    }

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
        /// Any environment values: never a panic; every error names the variable it is about.
        #[test]
        fn listen_env_never_panics(
            pid in proptest::option::of(".{0,12}"),
            fds in proptest::option::of(".{0,12}"),
            names in proptest::option::of(".{0,40}"),
            sources in proptest::option::of(".{0,40}"),
        ) {
            match parse_listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), sources.as_deref(), 42) {
                Ok(ListenEnv::Ours { count, names, sources }) => {
                    prop_assert_eq!(names.len(), count as usize);
                    prop_assert_eq!(sources.len(), count as usize);
                }
                Ok(_) => {}
                Err(e) => {
                    let m = e.to_string();
                    prop_assert!(m.contains("LISTEN_"), "{}", m);
                }
            }
        }

        #[test]
        fn listen_env_counts_round_trip(count in 0u32..100, extra in 0usize..3) {
            let names: Vec<String> = (0..count as usize + extra).map(|i| format!("n{i}")).collect();
            let r = parse_listen_env(Some("42"), Some(&count.to_string()), Some(&names.join(":")), None, 42);
            if extra == 0 || count == 0 && names.is_empty() {
                prop_assert!(r.is_ok());
            } else {
                prop_assert!(r.is_err());
            }
        }

        #[test]
        fn addresses_never_panic(s in ".{0,80}") {
            match ListenAddr::parse(&s) {
                Ok(a) => prop_assert!(!a.default_name().contains(':')),
                Err(e) => prop_assert!(e.to_string().contains("listen address")),
            }
        }
    }
}
