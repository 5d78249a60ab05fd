//! Every error enum's `{:#}` text (what `main` prints): no cause appears twice. A variant that
//! both formats its cause and marks it `#[source]` would print it twice under `{:#}`.

use std::error::Error;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

fn io_err() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// Asserts that no error in `e`'s chain repeats its source's text, and returns the `{:#}` text.
fn once(e: impl Error + Send + Sync + 'static) -> String {
    let mut cur: &dyn Error = &e;
    while let Some(src) = cur.source() {
        assert!(
            !cur.to_string().contains(&src.to_string()),
            "{cur} repeats its cause {src}"
        );
        cur = src;
    }
    let text = format!("{:#}", anyhow::Error::new(e));
    let enoent = io_err().to_string();
    assert!(text.matches(&enoent).count() <= 1, "{text}");
    text
}

#[test]
fn listen_errors() {
    use crate::listeners::ListenError as L;
    for e in [
        L::BadCount("x".into()),
        L::TooMany(5000),
        L::BadPid("x".into()),
        L::NameCount { names: 1, fds: 2 },
        L::NotOpen {
            fd: 4,
            origin: "o".into(),
            count: 2,
        },
        L::Sys {
            fd: 3,
            origin: "o".into(),
            op: "fstat",
            error: nix::Error::EBADF,
        },
        L::Bind {
            addr: "a".into(),
            error: io_err(),
        },
        L::Env(io_err()),
    ] {
        once(e);
    }
}

#[test]
fn control_client_and_handoff_errors() {
    use crate::cli::ClientError as C;
    use crate::control::ControlError;
    use crate::successor::HandoffError as H;
    let p = PathBuf::from("/run/x/control.sock");
    once(ControlError::Bind {
        path: p.clone(),
        error: io_err(),
    });
    once(ControlError::Listen {
        path: p.clone(),
        error: crate::listeners::ListenError::UnixInUse { addr: "a".into() },
    });
    for e in [
        C::Connect {
            path: p.clone(),
            error: io_err(),
        },
        C::Io {
            path: p.clone(),
            error: io_err(),
        },
        C::Proc {
            pid: 1,
            error: io_err(),
        },
        C::Timeout {
            path: p.clone(),
            timeout: Duration::from_secs(1),
        },
        C::BadPid(u64::MAX),
    ] {
        once(e);
    }
    for e in [
        H::BinaryGone {
            path: p.clone(),
            error: io_err(),
        },
        H::Spawn(io_err()),
        H::ExecFailed {
            pid: 1,
            path: p,
            error: io_err(),
        },
        H::Channel(io_err()),
    ] {
        once(e);
    }
}

#[test]
fn start_run_inherit_and_notify_errors() {
    use crate::inherit::InheritError;
    use crate::service::{RunError, StartError};
    once(StartError::Inherit(InheritError::Io {
        var: "HEIRD_HANDOFF_FD",
        fd: 9,
        error: io_err(),
    }));
    once(StartError::Listen(crate::listeners::ListenError::Env(io_err())));
    once(StartError::Exe(io_err()));
    once(RunError::Serve(io_err()));
    once(RunError::Signals(io_err()));
    once(RunError::Ready(io_err()));
    let t = once(RunError::IdleExitStandalone(
        "127.0.0.1:8080 (bound-tcp-127.0.0.1:8080)".into(),
    ));
    assert!(t.contains("idle_exit") && t.contains("127.0.0.1:8080"), "{t}");
    once(crate::notify::BarrierError::Send(io_err()));
    once(crate::notify::BarrierError::Pipe(nix::Error::EMFILE));
}
