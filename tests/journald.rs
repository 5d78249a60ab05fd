//! Logging to journald starts only after the listening sockets are taken (CHANGELOG 0.1.0: "The
//! listening fds are taken before logging opens the journald socket."). Opened first, the
//! journald socket would take the lowest free fd, which a LISTEN_FDS count one too high claims:
//! heird would then take its own journald socket for a listener.
//!
//! journald is faked: the test binds a datagram socket, and heird runs in a private mount
//! namespace (`unshare`) where that socket is bind-mounted at `/run/systemd/journal/socket`
//! (the path tracing-journald sends to). `$JOURNAL_STREAM` names heird's stderr, as systemd
//! sets it. This needs root, or unprivileged user namespaces; without either the test fails
//! and says so.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use support::proc::*;

/// Mounts the fake journal in a fresh mount namespace, sets `$JOURNAL_STREAM` to our stderr
/// and `$LISTEN_PID` to our pid, and execs heird. Exits 111 when the namespace cannot be set
/// up, so that the test tells that apart from heird's own exit codes.
const IN_NAMESPACE: &str = r#"
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && : > /run/systemd/journal/socket &&
  mount --bind "$FAKE_JOURNAL" /run/systemd/journal/socket || { echo "no private /run" >&2; exit 111; }
JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) || exit 111
export JOURNAL_STREAM LISTEN_PID=$$
exec "$0" "$@"
"#;

/// A datagram socket standing in for journald's; records what heird sends.
struct FakeJournal {
    sock: UnixDatagram,
}

impl FakeJournal {
    fn new(dir: &Path) -> (FakeJournal, std::path::PathBuf) {
        let path = dir.join("journal.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        (FakeJournal { sock }, path)
    }

    /// Every datagram received so far (tracing-journald's first one is empty: its check that
    /// journald listens).
    fn received(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// `heird serve` with `listener` at fd 3 and `LISTEN_FDS=count`, under the fake journald.
fn spawn(dir: &Path, journal: &Path, listener: &std::os::fd::OwnedFd, count: &str) -> Heird {
    let root = nix::unistd::geteuid().is_root();
    let mut args: Vec<&str> = if root {
        vec![]
    } else {
        vec!["--user", "--map-root-user"]
    };
    args.extend([
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        IN_NAMESPACE,
        BIN,
        "serve",
    ]);
    let mut sp = Spawn::new(dir, &args);
    sp.bin = "unshare".into();
    sp.fds = vec![listener.as_raw_fd()];
    sp.env("LISTEN_FDS", count)
        .env("FAKE_JOURNAL", journal.to_str().unwrap())
        .start()
}

/// Panics when the namespace could not be set up (exit 111, or unshare's own failure).
fn check_namespace(st: std::process::ExitStatus, h: &Heird) {
    let err = h.stderr();
    if st.code() == Some(111) || err.contains("unshare:") {
        panic!(
            "this test needs a private mount namespace (root, or unprivileged user namespaces) \
             and `unshare`, `mount` and `stat` (util-linux, mount, coreutils)\n{}",
            h.describe()
        );
    }
}

#[test]
fn under_journald_heird_serves_on_fd_3_and_logs_to_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, journal_path) = FakeJournal::new(dir.path());
    let (listener, addr) = tcp_listener();
    let mut h = spawn(dir.path(), &journal_path, &listener, "1");
    drop(listener);
    if let Some(st) = h.wait_timeout(Duration::from_millis(0)) {
        check_namespace(st, &h);
    }
    wait_serving(addr, &h);
    // The setup works: once the sockets are taken, heird's log goes to the fake journal (so
    // the other test's journald socket really is opened); "ready" is one of its messages.
    let mut seen = Vec::new();
    let logged = wait_until(Duration::from_secs(10), || {
        seen.extend(journal.received());
        seen.iter()
            .any(|d| d.contains("MESSAGE\n") && d.contains("ready"))
    });
    assert!(
        logged,
        "\"ready\" never reached the fake journal (datagrams: {seen:?})\n{}",
        h.describe()
    );
}

#[test]
fn a_listen_fds_count_one_too_high_names_the_missing_fd_not_the_journald_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, journal_path) = FakeJournal::new(dir.path());
    let (listener, _addr) = tcp_listener();
    // fd 3 is passed, fd 4 is not: the lowest free fd when logging would open its socket.
    let mut h = spawn(dir.path(), &journal_path, &listener, "2");
    drop(listener);
    let st = h
        .wait_timeout(Duration::from_secs(10))
        .expect("heird did not exit");
    check_namespace(st, &h);
    let err = h.stderr();
    assert_eq!(st.code(), Some(78), "{st:?}\n{}", h.describe());
    assert!(
        err.contains("fd 4 (LISTEN_FDS=2) is not open (LISTEN_FDS=2 passes fds 3 to 4)"),
        "heird did not report fd 4 as missing (had logging opened the journald socket on it?)\n{}",
        h.describe()
    );
    // Logging never started: the sockets are taken first, and their error ends the run.
    let sent = journal.received();
    assert!(
        sent.is_empty(),
        "heird talked to journald before taking its fds: {sent:?}"
    );
}
