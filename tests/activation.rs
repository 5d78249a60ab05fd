//! The ways systemd runs a socket-activated service besides "always on", against the real
//! binary with a fake `NOTIFY_SOCKET`: on demand (`idle_exit`), refused when heird holds its own
//! socket; one process per connection (`Accept=yes`: a connected socket at fd 3); and listenfd's
//! dev loop (`systemfd --no-pid`: `LISTEN_FDS` without `LISTEN_PID`), taken only with
//! `HEIRD_TRUST_LISTEN_FDS=1`.

mod support;

use std::io::{BufReader, Read, Write};
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

/// Once heird has decided to exit when idle, it accepts nothing more: a client that connects
/// while it is exiting (held here, by fault injection, right after the accept loops ended) waits
/// in the socket's backlog and is answered by the next process, not by the one exiting.
#[test]
fn a_connection_during_the_idle_exit_goes_to_the_next_process() {
    let (_, version) = client_command(std::path::Path::new(BIN), &["--version"]);
    if !version.contains("fault-injection") {
        // Under CI a build without it is a failure, not a pass that proves nothing.
        assert!(
            std::env::var_os("CI").is_none(),
            "needs a fault-injection build (cargo test --features fault-injection), and CI is set"
        );
        eprintln!("SKIP: needs a fault-injection build (cargo test --features fault-injection, as CI runs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let (listener, addr) = tcp_listener();
    let mut sp = Spawn::new(dir.path(), &["serve", "--idle-exit", "200ms"])
        .env("LISTEN_FDS", "1")
        .env("HEIRD_FAULT", "idle-accept-stopped:stop-old")
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap());
    sp.fds = vec![listener.as_raw_fd()];
    sp.listen_pid_self = true;
    let mut h = sp.start();
    ready(&mut notify, &h);
    let old = h.pid();
    assert!(
        wait_until(Duration::from_secs(10), || state(old) == Some('T')),
        "never stopped at idle-accept-stopped\n{}",
        h.describe()
    );
    let mut client = TcpStream::connect(addr).expect("the socket is still listening");
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client
        .write_all(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let st = h.wait_timeout(Duration::from_secs(10));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", h.describe());
    let dir2 = tempfile::tempdir().unwrap();
    let mut notify2 = FakeNotify::new(dir2.path());
    let h2 = socket_activated(dir2.path(), &notify2, &listener, &["--idle-exit", "5s"]);
    ready(&mut notify2, &h2);
    let (head, body) = read_response(&mut BufReader::new(client));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", h2.describe());
    assert!(
        body.contains(&format!("\"pid\":{}", h2.pid())),
        "answered by {body}, not by the next process {}\n{}",
        h2.pid(),
        h.describe()
    );
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

/// As a socket unit with `Accept=yes` does: a thread accepts one connection on a listener and
/// starts heird with it at fd 3 (`LISTEN_FDS=1`, `LISTEN_FDNAMES=connection`). Returns the
/// address to connect to and the thread, which gives heird back.
fn accept_yes(
    dir: &std::path::Path,
    notify: &FakeNotify,
    args: &[&str],
) -> (std::net::SocketAddr, std::thread::JoinHandle<Heird>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut all = vec!["serve".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (dir, notify_path) = (dir.to_path_buf(), notify.path.clone());
    let t = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut sp = Spawn::new(&dir, &args)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "connection")
            .env("NOTIFY_SOCKET", notify_path.to_str().unwrap());
        sp.fds = vec![conn.as_raw_fd()];
        sp.listen_pid_self = true;
        sp.start()
    });
    (addr, t)
}

fn exits_0_with_stopping(h: &mut Heird, notify: &mut FakeNotify) {
    let st = h.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "no exit 0 once the connection closed\n{}",
        h.describe()
    );
    notify.drain_for(Duration::from_millis(300));
    assert!(
        said_stopping(notify),
        "no STOPPING=1: {:?}\n{}",
        notify.seen,
        h.describe()
    );
    assert!(
        h.stderr().contains("the connection closed; exiting"),
        "{}",
        h.describe()
    );
}

/// Accept=yes: the one connection is served with keep-alive; a reload has nothing to hand over
/// (ignored, no successor); the process exits 0 with STOPPING=1 when the client closes.
#[test]
fn accept_yes_serves_its_connection_and_exits_0_when_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let (addr, t) = accept_yes(dir.path(), &notify, &[]);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut h = t.join().unwrap();
    ready(&mut notify, &h);
    let mut r = BufReader::new(conn.try_clone().unwrap());
    conn.write_all(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", h.describe());
    assert!(body.contains(&format!("\"pid\":{}", h.pid())), "{body}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || h.stderr().contains("reload ignored")),
        "{}",
        h.describe()
    );
    // The same connection, the same process, no successor.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", h.describe());
    assert!(
        children(h.pid()).is_empty(),
        "a successor was started\n{}",
        h.describe()
    );
    assert!(
        h.wait_timeout(Duration::from_millis(300)).is_none(),
        "{}",
        h.describe()
    );
    drop(r);
    drop(conn);
    exits_0_with_stopping(&mut h, &mut notify);
}

/// Accept=yes speaks every protocol a listener's connection does: h2c (the server's SETTINGS
/// answers the preface) and an upgrade (101 for a WebSocket).
#[test]
fn accept_yes_speaks_h2c_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let (addr, t) = accept_yes(dir.path(), &notify, &[]);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut h = t.join().unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut frame = [0u8; 9];
    conn.read_exact(&mut frame).unwrap();
    assert_eq!(
        frame[3],
        4,
        "the first frame is not SETTINGS: {frame:?}\n{}",
        h.describe()
    );
    drop(conn);
    exits_0_with_stopping(&mut h, &mut notify);

    let dir = tempfile::tempdir().unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let (addr, t) = accept_yes(dir.path(), &notify, &[]);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut h = t.join().unwrap();
    conn.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut got = [0u8; 12];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 101", "{}", h.describe());
    drop(conn);
    exits_0_with_stopping(&mut h, &mut notify);
}

/// Accept=yes with TLS: the handshake, then two requests on the one connection.
#[test]
fn accept_yes_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pair = support::tls::make_pair(dir.path(), "a", 90);
    let mut notify = FakeNotify::new(dir.path());
    let (addr, t) = accept_yes(
        dir.path(),
        &notify,
        &[
            "--tls-cert",
            pair.cert.to_str().unwrap(),
            "--tls-key",
            pair.key.to_str().unwrap(),
        ],
    );
    let cfg = support::tls::client_config(&[&pair.cert_pem], &[b"http/1.1"]);
    let client = std::thread::spawn(move || {
        let mut c = support::tls::connect(addr, &cfg).unwrap();
        let a = support::tls::request(&mut c, "/").unwrap();
        let b = support::tls::request(&mut c, "/healthz").unwrap();
        (a, b)
    });
    let mut h = t.join().unwrap();
    let (a, b) = client.join().unwrap();
    assert!(
        a.0.starts_with("HTTP/1.1 200") && b.0.starts_with("HTTP/1.1 200"),
        "{a:?} {b:?}\n{}",
        h.describe()
    );
    exits_0_with_stopping(&mut h, &mut notify);
}
