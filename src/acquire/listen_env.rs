//! Parsing `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (and heird's `HEIRD_FD_SOURCES`).
//!
//! We parse the `LISTEN_*` variables ourselves instead of using `listenfd`: listenfd ignores
//! `LISTEN_FDNAMES`, accepts fds without `LISTEN_PID`, and leaks fd 3 into children when
//! `LISTEN_PID` is not ours. The parser is a pure function, tested below.
//!
//! Fds without `LISTEN_PID` are someone else's by default: a variable inherited from a parent
//! that was socket-activated (a shell started from a service, a child of a child) names fds
//! that are not ours, and taking fd 3 then serves on whatever that number is now. listenfd's
//! dev loop (`systemfd --no-pid … -- cargo watch -x run`) passes fds that way on purpose,
//! because the server is cargo watch's grandchild; [`TRUST_VAR`]`=1` accepts them. listenfd
//! itself would serve that path only for this one condition, while its other behaviour (no
//! names, the fd-3 leak) is what this parser exists to avoid, so it is not used here either.

use crate::listeners::{ListenError, MAX_LISTEN_FDS, Source};

/// `HEIRD_TRUST_LISTEN_FDS=1`: take `LISTEN_FDS` without `LISTEN_PID` as ours (systemfd
/// `--no-pid`). A `LISTEN_PID` naming another process still wins.
pub const TRUST_VAR: &str = "HEIRD_TRUST_LISTEN_FDS";

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
/// `trust_without_pid` ([`TRUST_VAR`]) takes fds without `LISTEN_PID` as ours.
pub fn parse_listen_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    fdnames: Option<&str>,
    sources: Option<&str>,
    my_pid: u32,
    trust_without_pid: bool,
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
    let ours = match pid {
        Some(p) => p == my_pid,
        None => trust_without_pid,
    };
    if !ours {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> Result<ListenEnv, ListenError> {
        parse_listen_env(pid, fds, names, None, 42, false)
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
    fn without_listen_pid_only_when_trusted() {
        let trusted = |pid| parse_listen_env(pid, Some("1"), None, None, 42, true).unwrap();
        assert_eq!(
            trusted(None),
            ListenEnv::Ours {
                count: 1,
                names: vec![None],
                sources: vec![None]
            }
        );
        // Another process's LISTEN_PID is still not ours.
        assert_eq!(
            trusted(Some("7")),
            ListenEnv::NotForUs {
                listen_pid: Some(7),
                count: 1
            }
        );
        assert!(matches!(trusted(Some("42")), ListenEnv::Ours { count: 1, .. }));
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
        match parse_listen_env(
            Some("42"),
            Some("2"),
            Some("a:b"),
            Some("bound,systemd"),
            42,
            false,
        )
        .unwrap()
        {
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
            match parse_listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), sources.as_deref(), 42, false) {
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
            let r = parse_listen_env(Some("42"), Some(&count.to_string()), Some(&names.join(":")), None, 42, false);
            if extra == 0 || count == 0 && names.is_empty() {
                prop_assert!(r.is_ok());
            } else {
                prop_assert!(r.is_err());
            }
        }
    }
}
