//! A full fd store at a stop, with an app that keeps state (examples/state.rs, whose
//! `Service::save_state` is its counter): the state's memfd counts against `$FDSTORE` like every
//! other stored fd. It takes its slot before any connection, and when the store cannot hold it,
//! heird says so as an error instead of sending it for systemd to drop. The fake notify socket
//! keeps every fd it is sent, so these tests count what heird sent against what `FDSTORE=`
//! allows, as systemd's `FileDescriptorStoreMax=` would enforce it.

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::proc::*;

/// `target/<profile>/examples/state`, built once (`cargo test --test fdstore_full` does not
/// build examples).
fn state_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("state");
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "state"]);
        if cfg!(feature = "fault-injection") {
            cmd.args(["--features", "fault-injection"]);
        }
        match cmd.status() {
            Ok(st) if st.success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        built.is_ok() && p.exists(),
        "cannot build example state: {built:?}"
    );
    p
}

/// `/count` on a kept-alive connection: the count it answers.
fn count_on(c: &mut BufReader<TcpStream>) -> u64 {
    c.get_mut()
        .write_all(b"GET /count HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.split("count=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {body:?}"))
}

/// The state example on `addr` under a fake notify socket with `FDSTORE=fdstore`.
fn start(dir: &std::path::Path, n: &FakeNotify, addr: SocketAddr, fdstore: &str) -> Heird {
    let mut sp = Spawn::new(dir, &[&addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", fdstore);
    sp.bin = state_example();
    let h = sp.start();
    wait_serving(addr, &h);
    h
}

/// SIGTERM, wait for the exit, and return everything the process left in the (fake) store.
fn stop_and_take_store(h: &mut Heird, n: &mut FakeNotify) -> Vec<(String, OwnedFd)> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = h.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        h.describe()
    );
    // The process is gone, so all it sent is queued on the socket: a marker sent now arrives
    // after it (datagrams keep their order), and once the marker is read, so is the rest.
    let me = std::os::unix::net::UnixDatagram::unbound().unwrap();
    me.send_to(b"X_TEST_MARKER=1", &n.path).unwrap();
    n.wait_for(Duration::from_secs(5), |_, m| m == "X_TEST_MARKER=1")
        .expect("the marker");
    std::mem::take(&mut *n.store.lock().unwrap())
}

fn names(stored: &[(String, OwnedFd)]) -> Vec<&str> {
    stored.iter().map(|(k, _)| k.as_str()).collect()
}

/// `FDSTORE=4`: the listener, the state, and room for two of the five idle connections. The
/// next process (started the way systemd would, with the store's fds) goes on counting from
/// the stored state, and serves the two stored connections.
#[test]
fn the_state_takes_its_slot_before_connections_in_a_full_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = start(dir.path(), &n, addr, "4");
    let mut conns: Vec<BufReader<TcpStream>> = (0..5)
        .map(|_| BufReader::new(TcpStream::connect(addr).unwrap()))
        .collect();
    let mut last = 0;
    for c in &mut conns {
        last = count_on(c);
    }
    assert_eq!(last, 5);
    let stored = stop_and_take_store(&mut h, &mut n);
    let names = names(&stored);
    assert!(
        stored.len() <= 4,
        "{} fds sent to a store of FDSTORE=4 (systemd would drop the rest): {names:?}\n{}",
        stored.len(),
        h.describe()
    );
    assert!(
        names.contains(&"heird-state"),
        "the state was not kept: {names:?}\n{}",
        h.describe()
    );
    let conns_stored = names.iter().filter(|k| k.starts_with("conn-")).count();
    assert_eq!(conns_stored, 2, "{names:?}\n{}", h.describe());
    assert!(
        h.stderr().contains("moved=2 not_moved=3"),
        "the drain's counts: {}",
        h.describe()
    );

    // The next process, with what the store holds.
    let mut sp = Spawn::new(dir.path(), &[&addr.to_string()]);
    sp.bin = state_example();
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h2 = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", "4")
        .start();
    drop(stored);
    wait_serving(addr, &h2);
    // Two of the five connections were kept (which two is the drain's choice); the others were
    // closed. Each kept one is served by the new process, which counts on from the state.
    let mut served = 0;
    for c in &mut conns {
        let _ = c.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
        if c.get_mut()
            .write_all(b"GET /count HTTP/1.1\r\nHost: t\r\n\r\n")
            .is_err()
        {
            continue;
        }
        let mut line = String::new();
        if std::io::BufRead::read_line(c, &mut line).is_ok_and(|k| k > 0) {
            assert!(line.starts_with("HTTP/1.1 200"), "{line}");
            served += 1;
        }
    }
    assert_eq!(served, 2, "{}", h2.describe());
}

/// `FDSTORE=1`: only the listener fits. The state is not sent (systemd would drop it without a
/// word to heird), and an error says it is not kept, and why.
#[test]
fn a_store_without_room_for_the_state_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = start(dir.path(), &n, addr, "1");
    let mut c = BufReader::new(TcpStream::connect(addr).unwrap());
    assert_eq!(count_on(&mut c), 1);
    let stored = stop_and_take_store(&mut h, &mut n);
    let names = names(&stored);
    assert_eq!(names.len(), 1, "{names:?}\n{}", h.describe());
    assert!(names[0].starts_with("bound-tcp-"), "{names:?}");
    assert!(
        !n.seen.iter().any(|(_, m)| m.contains("FDNAME=heird-state")),
        "the state was sent to a full store: {:?}",
        n.seen
    );
    let err = h
        .stderr()
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("no room for the app's state"))
        .map(str::to_string);
    assert!(
        err.as_deref().is_some_and(|l| l.contains("at least 2")),
        "no error line about the state: {}",
        h.describe()
    );
    assert!(
        !h.stderr().contains("state kept in the fd store"),
        "{}",
        h.describe()
    );
}

/// Bytes the client sent on `client` ↔ `server` (IPv4) that the server's end has not read yet,
/// from `/proc/net/tcp`; `None` while there is no such connection.
fn unread_on_server(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => String::new(),
    };
    let (l, r) = (hex(server), hex(client));
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(1) != Some(&l.as_str()) || cols.get(2) != Some(&r.as_str()) {
                return None;
            }
            let (_, rx) = cols.get(4)?.split_once(':')?;
            u64::from_str_radix(rx, 16).ok()
        })
}

/// A connection with a half-sent request needs two slots (its socket, and the memfd with the
/// bytes read from it): with `FDSTORE=3` (the listener, the state, one slot) it is closed, not
/// stored without its bytes or past the store's size.
#[test]
fn a_half_sent_request_takes_two_slots() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = start(dir.path(), &n, addr, "3");
    let mut c = BufReader::new(TcpStream::connect(addr).unwrap());
    assert_eq!(count_on(&mut c), 1);
    let client = c.get_ref().local_addr().unwrap();
    c.get_mut().write_all(b"GET /count HTTP/1.1\r\nHo").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || unread_on_server(addr, client)
            == Some(0)),
        "heird did not read the half request"
    );
    let stored = stop_and_take_store(&mut h, &mut n);
    let names = names(&stored);
    assert!(stored.len() <= 3, "{names:?}\n{}", h.describe());
    assert!(names.contains(&"heird-state"), "{names:?}\n{}", h.describe());
    assert!(
        !names
            .iter()
            .any(|k| k.starts_with("conn-") || k.starts_with("cbuf-")),
        "{names:?}\n{}",
        h.describe()
    );
    assert!(h.stderr().contains("moved=0 not_moved=1"), "{}", h.describe());
}
