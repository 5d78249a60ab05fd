//! Taking the listening sockets, in this order: systemd (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, including heird's own sockets and connections kept in the fd store),
//! inherited descriptors (`--fd N`), or a fresh bind of the configured addresses.
//!
//! We parse the `LISTEN_*` variables ourselves instead of using `listenfd`: listenfd ignores
//! `LISTEN_FDNAMES`, accepts fds without `LISTEN_PID`, and leaks fd 3 into children when
//! `LISTEN_PID` is not ours. The parser is a pure function, tested below.

use std::os::fd::{OwnedFd, RawFd};

use crate::fdstore;
use crate::listeners::{
    LISTEN_FDS_START, LISTEN_VARS, ListenAddr, ListenError, Listener, MAX_LISTEN_FDS, SOURCES_VAR, Source,
    bind, validate,
};
use crate::sys;

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

/// Where the listening sockets come from when systemd passes none: inherited descriptors,
/// else addresses to bind. Sockets from systemd (`LISTEN_FDS`) always win.
///
/// ```
/// let a = heird::Acquire::bind(&["127.0.0.1:8080", "unix:/run/myapp/http.sock"]);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Acquire {
    /// `--fd N` descriptors, used when systemd passed nothing.
    pub inherited: Vec<RawFd>,
    /// Addresses to bind when neither systemd nor `--fd` gave sockets.
    pub bind: Vec<ListenAddr>,
    /// An address given to [`Acquire::bind`] that does not parse, reported when the sockets
    /// are taken.
    bad: Option<(String, String)>,
}

impl Acquire {
    /// Binds these addresses (`HOST:PORT` or `unix:/path`) when systemd passes no socket. An
    /// address that does not parse makes [`crate::Service::prepare`] fail with its reason.
    pub fn bind(addrs: &[&str]) -> Acquire {
        let mut a = Acquire::default();
        for s in addrs {
            match ListenAddr::parse(s) {
                Ok(addr) => a.bind.push(addr),
                Err(ListenError::BadAddr { addr, reason }) => {
                    a.bad.get_or_insert((addr, reason));
                }
                Err(e) => {
                    a.bad.get_or_insert((s.to_string(), e.to_string()));
                }
            }
        }
        a
    }

    /// Serves on these inherited descriptors (`--fd N`) when systemd passes no socket.
    pub fn fds(mut self, fds: &[RawFd]) -> Acquire {
        self.inherited.extend_from_slice(fds);
        self
    }
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
    /// The app's state a previous process stored at its stop (a memfd).
    pub state: Option<OwnedFd>,
    /// Set when socket units passed sockets, so the addresses to bind are not used.
    pub listen_ignored: Option<String>,
}

/// systemd passed fds without a predecessor: socket-unit fds and/or fds heird stored earlier.
/// With socket-unit fds, serve those and drop stored ones. Otherwise reuse each stored socket
/// whose address the config still lists, bind the addresses that have none (to be stored), and
/// drop stored sockets the config no longer lists.
fn reconcile_with_store(passed: Vec<Listener>, bind_addrs: &[ListenAddr]) -> Result<Acquired, ListenError> {
    let (mut stored, unit): (Vec<Listener>, Vec<Listener>) = passed
        .into_iter()
        .partition(|l| fdstore::is_bound_listener(&l.name));
    if !unit.is_empty() {
        let unstore = stored.iter().map(|l| l.name.clone()).collect();
        let listen_ignored = (!bind_addrs.is_empty()).then(|| {
            let addrs: Vec<String> = bind_addrs.iter().map(ToString::to_string).collect();
            format!(
                "systemd passed {} socket(s): the configured listen address(es) {} are not bound",
                unit.len(),
                addrs.join(", ")
            )
        });
        return Ok(Acquired {
            listeners: unit,
            unstore,
            listen_ignored,
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
    if let Some((addr, reason)) = &opts.bad {
        return Err(ListenError::BadAddr {
            addr: addr.clone(),
            reason: reason.clone(),
        });
    }
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
            let mut state = None;
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
                if name == fdstore::STATE_NAME {
                    state = Some(owned);
                    continue;
                }
                // A keep-alive connection a previous process left in the fd store.
                if fdstore::is_stored_connection(&name) {
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
            acquired.state = state;
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
        error: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
    }
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
    }
}
