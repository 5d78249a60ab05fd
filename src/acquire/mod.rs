//! Taking the listening sockets, in this order: systemd (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, including heird's own sockets and connections kept in the fd store),
//! inherited descriptors (`--fd N`), or a fresh bind of the configured addresses.
//!
//! - `listen_env`: the `LISTEN_*` variables → `ListenEnv` (a pure parser, tested there).
//! - `store`: systemd's fds without a predecessor, reconciled with the configured addresses.

use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;

use crate::fdstore;
use crate::listeners::{
    Family, LISTEN_FDS_START, LISTEN_VARS, ListenAddr, ListenError, Listener, MAX_LISTEN_FDS, SOURCES_VAR,
    Source, bind, validate,
};
use crate::sys;

mod listen_env;
mod store;

pub use listen_env::{ListenEnv, parse_listen_env};
use store::reconcile_with_store;

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
    /// Whether a supervisor holds the sockets and runs the service as its child (see
    /// [`Supervise`]; by default only as PID 1).
    pub supervise: Supervise,
    /// A file that always names the process to address (see [`Acquire::pid_file`]).
    pub pid_file: Option<PathBuf>,
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

    /// Runs a supervisor in front of the service (see [`Supervise`]): a stable PID 1 in a
    /// container, or a stable pid under a supervisor that does not follow `MAINPID=`.
    pub fn supervise(mut self, supervise: Supervise) -> Acquire {
        self.supervise = supervise;
        self
    }

    /// Keeps `path` naming the process to address, as nginx's and HAProxy's `-p` do: the
    /// primary (written by each process that becomes primary, so it follows every handoff), or
    /// the supervisor when there is one (its pid never moves). The last stop removes it. Give
    /// it to `reload --pid-file` and `stop --pid-file`, or read it with `cat`.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Acquire {
        self.pid_file = Some(path.into());
        self
    }

    /// Serves on these inherited descriptors (`--fd N`) when systemd passes no socket.
    pub fn fds(mut self, fds: &[RawFd]) -> Acquire {
        self.inherited.extend_from_slice(fds);
        self
    }
}

/// Whether a process runs a supervisor in front of its workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Supervise {
    /// Only as PID 1 (in a container, or any pid namespace): PID 1 must outlive every
    /// handoff, since the namespace ends with it.
    #[default]
    Auto,
    /// Always: for `docker run --init`, runit, s6 and other supervisors that watch one pid and
    /// do not follow `MAINPID=`.
    Always,
    /// Never, not even as PID 1.
    Never,
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
    /// The metrics' shared counters a previous process kept in the fd store (a memfd).
    pub metrics: Option<OwnedFd>,
    /// Set when socket units passed sockets, so the addresses to bind are not used.
    pub listen_ignored: Option<String>,
    /// The one connection a socket unit with `Accept=yes` passed (its name, family and fd),
    /// instead of listeners.
    pub accepted: Option<(String, Family, OwnedFd)>,
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
        env(listen_env::TRUST_VAR).as_deref() == Some("1"),
    );
    sys::remove_env(&LISTEN_VARS).map_err(ListenError::Env)?;
    sys::remove_env(&[SOURCES_VAR]).map_err(ListenError::Env)?;
    let mut ignored = None;
    match parsed? {
        ListenEnv::Ours {
            count,
            names,
            sources,
        } if count > 0 => return from_listen_fds(count, names, sources, &opts.bind),
        ListenEnv::NotForUs { listen_pid, count } => ignored = Some(not_for_us(listen_pid, count)),
        _ => {}
    }
    if !opts.inherited.is_empty() {
        return Ok(Acquired {
            listeners: from_inherited(&opts.inherited)?,
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

/// The fds systemd (or a predecessor) passed from fd 3: the listeners, validated, and what a
/// previous process kept in the fd store (its connections and the app's state). From a
/// predecessor (it says where each fd came from), all are taken as they are; otherwise they
/// are reconciled with the addresses to `bind` and the fd store.
fn from_listen_fds(
    count: u32,
    names: Vec<Option<String>>,
    sources: Vec<Option<Source>>,
    bind: &[ListenAddr],
) -> Result<Acquired, ListenError> {
    let from_predecessor = sources.iter().any(Option::is_some);
    let mut connections = Vec::new();
    let mut state = None;
    let mut metrics = None;
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
        // Accept=yes: one connected socket, served alone (the process ends with it).
        if count == 1
            && !from_predecessor
            && let Some(family) = crate::listeners::accepted_family(&owned)
        {
            sys::set_cloexec_raw(fd);
            return Ok(Acquired {
                accepted: Some((name, family, owned)),
                ..Acquired::default()
            });
        }
        if name == fdstore::STATE_NAME {
            state = Some(owned);
            continue;
        }
        if name == fdstore::METRICS_NAME {
            metrics = Some(owned);
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
    let mut acquired = if from_predecessor {
        Acquired {
            listeners: out,
            ..Acquired::default()
        }
    } else {
        reconcile_with_store(out, bind)?
    };
    acquired.connections = connections;
    acquired.state = state;
    acquired.metrics = metrics;
    Ok(acquired)
}

/// `LISTEN_FDS` meant for another process: keeps those fds out of our children, and says why
/// they were ignored.
fn not_for_us(listen_pid: Option<u32>, count: u32) -> String {
    for i in 0..count.min(MAX_LISTEN_FDS) {
        sys::set_cloexec_raw(LISTEN_FDS_START + i as RawFd);
    }
    match listen_pid {
        Some(p) => format!(
            "LISTEN_FDS={count} is for pid {p}, not for us (pid {}): ignored",
            std::process::id()
        ),
        None => format!(
            "LISTEN_FDS={count} without LISTEN_PID: ignored (set {}=1 to serve on them, e.g. under systemfd --no-pid)",
            listen_env::TRUST_VAR
        ),
    }
}

/// The listeners given by `--fd N`, each taken once and validated.
fn from_inherited(fds: &[RawFd]) -> Result<Vec<Listener>, ListenError> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for &fd in fds {
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
    Ok(out)
}

fn take_err(fd: RawFd, origin: &str, e: std::io::Error) -> ListenError {
    ListenError::Sys {
        fd,
        origin: origin.to_string(),
        op: "take",
        error: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
    }
}
