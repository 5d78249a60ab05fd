//! The ways systemd runs a socket-activated service besides "always on", against the real
//! binary with a fake `NOTIFY_SOCKET`: on demand (`idle_exit`), refused when heird holds its own
//! socket; and listenfd's dev loop (`systemfd --no-pid`: `LISTEN_FDS` without `LISTEN_PID`),
//! taken only with `HEIRD_TRUST_LISTEN_FDS=1`.

mod support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use support::proc::*;

/// heird serving on a listening socket that the test holds, as a socket unit would: fd 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` its own.
fn socket_activated(dir: &std::path::Path, notify: &FakeNotify, fd: &impl AsRawFd, args: &[&str]) -> Heird {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut sp = Spawn::new(dir, &all)
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap());
    sp.fds = vec![fd.as_raw_fd()];
    sp.listen_pid_self = true;
    sp.start()
}

fn ready(notify: &mut FakeNotify, h: &Heird) {
    assert!(
        notify
            .wait_for(Duration::from_secs(10), |_, m| m.lines().any(|l| l == "READY=1"))
            .is_some(),
        "no READY=1\n{}",
        h.describe()
    );
}

fn said_stopping(notify: &FakeNotify) -> bool {
    notify
        .seen
        .iter()
        .any(|(_, m)| m.lines().any(|l| l == "STOPPING=1"))
}

/// Idle for `idle_exit`: STOPPING=1 and exit 0. A client that connects afterwards waits in the
/// socket's backlog (the socket is still held), and the next process answers it.
#[test]
fn idle_exit_says_stopping_and_exits_0_leaving_the_socket_to_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let (listener, addr) = tcp_listener();
    let mut h = socket_activated(dir.path(), &notify, &listener, &["--idle-exit", "300ms"]);
    ready(&mut notify, &h);
    let (status, _) = get(addr, "/").unwrap();
    assert_eq!(status, 200, "{}", h.describe());
    let st = h.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "no exit 0 after the idle time\n{}",
        h.describe()
    );
    notify.drain_for(Duration::from_millis(300));
    assert!(
        said_stopping(&notify),
        "no STOPPING=1: {:?}\n{}",
        notify.seen,
        h.describe()
    );
    assert!(
        h.stderr().contains("no connection for the idle time"),
        "{}",
        h.describe()
    );

    // Nobody runs now; a client connects into the backlog and sends its request.
    let mut client = TcpStream::connect(addr).expect("the socket is still listening");
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let mut notify2 = FakeNotify::new(dir2.path());
    let h2 = socket_activated(dir2.path(), &notify2, &listener, &["--idle-exit", "5s"]);
    ready(&mut notify2, &h2);
    let (head, _) = read_response(&mut BufReader::new(client));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", h2.describe());
}

/// A keep-alive connection counts as open: no idle exit while it is, however quiet; the idle
/// time starts when it closes.
#[test]
fn idle_exit_waits_while_a_keep_alive_connection_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let (listener, addr) = tcp_listener();
    let mut h = socket_activated(dir.path(), &notify, &listener, &["--idle-exit", "300ms"]);
    ready(&mut notify, &h);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let (head, _) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Six idle times with the connection open and quiet.
    assert!(
        h.wait_timeout(Duration::from_millis(1800)).is_none(),
        "exited with a keep-alive connection open\n{}",
        h.describe()
    );
    notify.drain_for(Duration::from_millis(10));
    assert!(
        !said_stopping(&notify),
        "STOPPING=1 with a connection open: {:?}",
        notify.seen
    );
    // Still served on the same connection.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(r);
    drop(conn);
    let st = h.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "no idle exit after the connection closed\n{}",
        h.describe()
    );
}

/// heird bound its own socket: nothing would start it again, so `idle_exit` is refused at the
/// start with exit 78 and a message that says why.
#[test]
fn idle_exit_is_refused_when_heird_binds_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let notify = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = Spawn::new(
        dir.path(),
        &["serve", "--listen", &addr.to_string(), "--idle-exit", "1s"],
    )
    .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
    .start();
    let st = h.wait_timeout(Duration::from_secs(10));
    assert_eq!(st.and_then(|s| s.code()), Some(78), "{}", h.describe());
    let err = h.stderr();
    assert!(
        err.contains("idle_exit") && err.contains("socket unit") && err.contains(&addr.to_string()),
        "{}",
        h.describe()
    );
}

/// `LISTEN_FDS=1` without `LISTEN_PID`, as `systemfd --no-pid` passes it to cargo watch's
/// grandchild, and `--listen` another address. Returns heird and the address it serves on.
fn systemfd_style(dir: &std::path::Path, trust: Option<&str>) -> (Heird, std::net::SocketAddr, String) {
    let (listener, passed) = tcp_listener();
    let fallback = free_addr();
    let mut sp = Spawn::new(dir, &["serve", "--listen", &fallback.to_string()]).env("LISTEN_FDS", "1");
    if let Some(v) = trust {
        sp = sp.env("HEIRD_TRUST_LISTEN_FDS", v);
    }
    sp.fds = vec![listener.as_raw_fd()];
    let h = sp.start();
    drop(listener);
    let serving = if trust == Some("1") { passed } else { fallback };
    wait_serving(serving, &h);
    let listeners = info(serving)["listeners"].clone();
    (h, passed, listeners.to_string())
}

#[test]
fn listen_fds_without_listen_pid_are_taken_with_heird_trust_listen_fds_1() {
    let dir = tempfile::tempdir().unwrap();
    let (h, passed, listeners) = systemfd_style(dir.path(), Some("1"));
    assert!(
        listeners.contains(&format!("\"{passed}\"")) && listeners.contains("\"fd3\""),
        "serves on the passed fd only: {listeners}\n{}",
        h.describe()
    );
    assert!(!listeners.contains("bound"), "{listeners}");
}

#[test]
fn listen_fds_without_listen_pid_are_ignored_by_default() {
    for trust in [None, Some("0")] {
        let dir = tempfile::tempdir().unwrap();
        let (h, passed, listeners) = systemfd_style(dir.path(), trust);
        assert!(
            !listeners.contains(&passed.to_string()) && listeners.contains("bound"),
            "{trust:?}: binds --listen, not the passed fd: {listeners}\n{}",
            h.describe()
        );
        assert!(
            h.stderr()
                .contains("without LISTEN_PID: ignored (set HEIRD_TRUST_LISTEN_FDS=1"),
            "{}",
            h.describe()
        );
    }
}
