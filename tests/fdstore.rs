//! The fd store, seen from heird's side with a fake notify socket: self-bound listeners are
//! stored, stored ones come back by name and are reused, stale ones are removed, and socket-unit
//! fds are never stored. (The real systemd side is in tests/systemd/.)

mod support;

use std::os::fd::AsRawFd;
use std::time::Duration;

use support::proc::*;

fn has(n: &FakeNotify, pred: impl Fn(&str) -> bool) -> bool {
    n.seen.iter().any(|(_, m)| pred(m))
}

#[test]
fn self_bound_listener_is_stored_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    wait_serving(addr, &h);
    n.wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("READY");
    let name = format!("bound-tcp-{}", addr.to_string().replace(':', "_"));
    assert!(
        has(&n, |m| m.contains("FDSTORE=1")
            && m.contains(&format!("FDNAME={name}"))),
        "{:?}\n{}",
        n.seen,
        h.describe()
    );
}

#[test]
fn stored_listener_is_reused_and_stale_one_removed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    // What systemd passes back after a restart: the stored listener of the configured address,
    // and one of an address the config no longer lists.
    let (kept, kept_addr) = tcp_listener();
    let (stale, stale_addr) = tcp_listener();
    let kept_name = format!("bound-tcp-{}", kept_addr.to_string().replace(':', "_"));
    let stale_name = format!("bound-tcp-{}", stale_addr.to_string().replace(':', "_"));
    let mut sp = Spawn::new(dir.path(), &["serve", "--listen", &kept_addr.to_string()]);
    sp.fds = vec![kept.as_raw_fd(), stale.as_raw_fd()];
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", &format!("{kept_name}:{stale_name}"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop((kept, stale));
    // The configured address is served from the stored socket (a fresh bind would fail: the
    // address is still bound by that very socket).
    wait_serving(kept_addr, &h);
    n.wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("READY");
    let v = info(kept_addr);
    assert_eq!(v["listeners"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["listeners"][0]["name"], kept_name.as_str());
    assert!(
        has(&n, |m| m.contains("FDSTOREREMOVE=1")
            && m.contains(&format!("FDNAME={stale_name}"))),
        "{:?}",
        n.seen
    );
    assert!(
        !has(&n, |m| m.contains("FDSTORE=1")
            && !m.contains("FDNAME=heird-metrics")),
        "re-stored a reused socket: {:?}",
        n.seen
    );
    // The stale socket is closed: nobody accepts there any more.
    assert!(
        std::net::TcpStream::connect(stale_addr).is_err(),
        "stale address still open"
    );
}

#[test]
fn socket_unit_fds_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let (tcp, addr) = tcp_listener();
    let mut sp = Spawn::new(dir.path(), &["serve"]);
    sp.fds = vec![tcp.as_raw_fd()];
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http")
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop(tcp);
    wait_serving(addr, &h);
    n.wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("READY");
    n.drain_for(Duration::from_millis(200));
    // (heird's metrics counters are kept there: not a socket.)
    assert!(
        !has(&n, |m| m.contains("FDSTORE")
            && !m.contains("FDNAME=heird-metrics")),
        "{:?}",
        n.seen
    );
}

#[test]
fn handoff_leaves_the_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    wait_serving(addr, &h);
    n.wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("READY");
    let stores_before = n.seen.iter().filter(|(_, m)| m.contains("FDSTORE")).count();
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}");
    n.drain_for(Duration::from_millis(300));
    let stores_after = n.seen.iter().filter(|(_, m)| m.contains("FDSTORE")).count();
    assert_eq!(stores_before, stores_after, "{:?}", n.seen);
}

/// A restart under systemd: at SIGTERM the old process leaves its idle keep-alive connection in
/// the fd store (with the half request it had read, in a memfd); the next process gets both back
/// in LISTEN_FDS, serves the connection on the same TCP connection, and removes them from the
/// store.
#[test]
fn idle_connection_survives_a_restart_through_the_store() {
    use std::io::{BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", "128")
        .start();
    wait_serving(addr, &h);
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let ask_with = |w: &mut std::net::TcpStream, r: &mut BufReader<std::net::TcpStream>, req: &[u8]| {
        w.write_all(req).unwrap();
        serde_json::from_str::<serde_json::Value>(&read_response(r).1).unwrap()
    };
    let v1 = ask_with(&mut w, &mut r, b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(v1["pid"].as_u64().unwrap() as u32, h.pid());
    // Half a request is on its way when the stop comes: its bytes are stored too (a memfd).
    // Stop only once heird has read them: bytes still in the socket would travel with the
    // socket itself, and no memfd would be needed.
    let half = b"GET /info HTTP/1.1\r\nHo";
    w.write_all(half).unwrap();
    let local = w.local_addr().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || read_by(h.pid(), addr, local)),
        "heird did not read the half request (unread: {:?})\n{}",
        server_side_unread(addr, local),
        h.describe()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        h.wait_timeout(Duration::from_secs(10)).unwrap().success(),
        "{}",
        h.describe()
    );
    // The connection is stored after its bytes, so once it is in, both are.
    n.wait_for(Duration::from_secs(5), |_, m| {
        m.contains("FDSTORE=1") && m.contains("FDNAME=conn-tcp-1-")
    })
    .unwrap_or_else(|| panic!("connection never stored: {:?}\n{}", n.seen, h.describe()));
    // What systemd would pass to the next process: everything in the store, by name.
    let stored: Vec<(String, std::os::fd::OwnedFd)> = std::mem::take(&mut *n.store.lock().unwrap());
    let names: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.iter().any(|k| k.starts_with("bound-")), "{names:?}");
    let conn_name = names
        .iter()
        .find(|k| k.starts_with("conn-tcp-1-"))
        .expect("connection stored")
        .to_string();
    // Its half request, in a memfd named `cbuf-<the connection's id>`.
    let buf_name = format!("cbuf-{}", &conn_name["conn-tcp-1-".len()..]);
    let (_, buf) = stored
        .iter()
        .find(|(k, _)| *k == buf_name)
        .unwrap_or_else(|| panic!("no {buf_name} beside {conn_name}: {names:?}"));
    let link = std::fs::read_link(format!("/proc/self/fd/{}", buf.as_raw_fd())).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:"),
        "{buf_name} is {link:?}"
    );
    let mut held = vec![0u8; 256];
    // pread: the next process reads the same open file, so its offset stays put.
    let n_read =
        std::os::unix::fs::FileExt::read_at(&std::fs::File::from(buf.try_clone().unwrap()), &mut held, 0)
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&held[..n_read]),
        String::from_utf8_lossy(half),
        "{buf_name} holds something else"
    );
    let mut sp = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]);
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h2 = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop(stored);
    wait_serving(addr, &h2);
    let v2 = ask_with(&mut w, &mut r, b"st: t\r\n\r\n");
    assert_eq!(
        v2["pid"].as_u64().unwrap() as u32,
        h2.pid(),
        "{v2}\n{}",
        h2.describe()
    );
    assert_eq!(v2["connection_moves"], 1, "{v2}");
    for name in [&conn_name, &buf_name] {
        let removed = |m: &str| m.contains("FDSTOREREMOVE=1") && m.contains(&format!("FDNAME={name}"));
        assert!(
            has(&n, removed) || n.wait_for(Duration::from_secs(5), |_, m| removed(m)).is_some(),
            "{name} not removed from the store: {:?}",
            n.seen
        );
    }
}

/// A stored unix listener whose socket file is gone (systemd removed its RuntimeDirectory= at
/// the stop) cannot be reached by path: heird binds the path anew, replaces the stored socket,
/// and serves there.
#[test]
fn stored_unix_listener_without_its_file_is_bound_anew() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let path = dir.path().join("http.sock");
    let old: std::os::fd::OwnedFd = std::os::unix::net::UnixListener::bind(&path).unwrap().into();
    std::fs::remove_file(&path).unwrap();
    let name = format!("bound-unix-{}", path.display());
    let tcp_addr = free_addr();
    let mut sp = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--listen",
            &tcp_addr.to_string(),
            "--listen",
            &format!("unix:{}", path.display()),
        ],
    );
    sp.fds = vec![old.as_raw_fd()];
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", &name)
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop(old);
    wait_serving(tcp_addr, &h);
    assert_eq!(get_unix(&path, "/healthz").unwrap().0, 200, "{}", h.describe());
    n.wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("READY");
    let remove = n
        .seen
        .iter()
        .position(|(_, m)| m.contains("FDSTOREREMOVE=1") && m.contains(&name));
    let store = n
        .seen
        .iter()
        .position(|(_, m)| m.contains("FDSTORE=1\n") && m.contains(&name));
    assert!(
        remove.is_some() && store.is_some() && remove < store,
        "{:?}",
        n.seen
    );
}

/// Without `$FDSTORE` (systemd 252 and a unit that does not promise a store), a stop does not
/// hand connections to a store that may drop them: it drains gently, and a request on a kept
/// connection is answered with `Connection: close`.
#[test]
fn without_fdstore_env_a_stop_closes_connections_gently() {
    use std::io::{BufReader, Write};
    // `dir` is kept: dropping it would delete the notify socket and the log under the process.
    let Setup {
        addr,
        mut h,
        notify: mut n,
        dir: _dir,
        ..
    } = start_heird("idle_close_grace = \"2s\"\n", false);
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_response(&mut r);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // The drain has started once the process said STOPPING=1.
    assert!(
        n.wait_for(Duration::from_secs(5), |_, m| m.contains("STOPPING=1"))
            .is_some(),
        "{:?} {}",
        n.seen,
        h.stderr()
    );
    // (`/`, not `/healthz`: that one says 503 from the stop on, for load balancers.)
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut r);
    assert_eq!(body, "Hello World");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert!(h.wait_timeout(Duration::from_secs(10)).unwrap().success());
    n.drain_for(Duration::from_millis(200));
    assert!(!has(&n, |m| m.contains("FDNAME=conn-")), "{:?}", n.seen);
}

/// The store takes what `$FDSTORE` allows: with room for 3 fds, 1 stored listener and the
/// metrics' counters (the demo serves `/metrics`), one of three idle connections is stored at a
/// stop; the other two are closed, and the log counts them.
#[test]
fn stored_connections_respect_the_store_size() {
    use std::io::{BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", "3")
        .start();
    wait_serving(addr, &h);
    let conns: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            read_response(&mut BufReader::new(s.try_clone().unwrap()));
            s
        })
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(h.wait_timeout(Duration::from_secs(10)).unwrap().success());
    n.drain_for(Duration::from_millis(200));
    let stored = n
        .store
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("conn-"))
        .count();
    assert_eq!(stored, 1, "{:?}", n.seen);
    let log = h.stderr();
    assert!(log.contains("moved=1") && log.contains("not_moved=2"), "{log}");
    drop(conns);
}
