//! The core: sockets from systemd / --fd / bind, READY and STOPPING, graceful stop, and the
//! hostile environment matrix. Every test spawns the real binary.

mod support;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use support::proc::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn systemd_style_tcp_and_unix_listeners_serve_with_names_and_sources() {
    let dir = tmp();
    let (tcp, addr) = tcp_listener();
    let upath = dir.path().join("http.sock");
    let unix: OwnedFd = std::os::unix::net::UnixListener::bind(&upath).unwrap().into();
    let mut sp = Spawn::new(dir.path(), &["serve"]);
    sp.fds = vec![tcp.as_raw_fd(), unix.as_raw_fd()];
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "web:local")
        .start();
    drop((tcp, unix));
    wait_serving(addr, &h);
    let (st, r) = get_unix(&upath, "/").unwrap();
    assert_eq!((st, body(&r)), (200, "Hello World"), "{}", h.describe());
    let v = info(addr);
    assert_eq!(v["pid"].as_u64().unwrap() as u32, h.pid());
    assert_eq!(v["generation"], 1);
    let ls = v["listeners"].as_array().unwrap();
    assert_eq!(ls.len(), 2, "{v}");
    assert_eq!(ls[0]["name"], "web");
    assert_eq!(ls[0]["source"], "systemd");
    assert_eq!(ls[0]["address"], addr.to_string());
    assert_eq!(ls[1]["name"], "local");
    assert_eq!(ls[1]["address"], format!("unix:{}", upath.display()));
}

#[test]
fn inherited_fd_3_serves() {
    let dir = tmp();
    let (tcp, addr) = tcp_listener();
    let mut sp = Spawn::new(dir.path(), &["serve", "--fd", "3"]);
    sp.fds = vec![tcp.as_raw_fd()];
    let h = sp.start();
    drop(tcp);
    wait_serving(addr, &h);
    let v = info(addr);
    assert_eq!(v["listeners"][0]["source"], "inherited", "{v}");
}

#[test]
fn fresh_bind_serves_tcp_and_unix() {
    let dir = tmp();
    let addr = free_addr();
    let upath = dir.path().join("b.sock");
    // A stale socket file that nobody listens on is replaced.
    drop(std::os::unix::net::UnixListener::bind(&upath).unwrap());
    let h = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--listen",
            &addr.to_string(),
            "--listen",
            &format!("unix:{}", upath.display()),
        ],
    )
    .start();
    wait_serving(addr, &h);
    let (st, _) = get_unix(&upath, "/healthz").unwrap();
    assert_eq!(st, 200);
    let v = info(addr);
    assert_eq!(v["listeners"][0]["source"], "bound");
    assert_eq!(v["listeners"][1]["source"], "bound");
}

#[test]
fn listen_pid_of_another_process_is_ignored_and_logged() {
    let dir = tmp();
    let (tcp, taddr) = tcp_listener();
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]);
    sp.fds = vec![tcp.as_raw_fd()];
    let h = sp.env("LISTEN_FDS", "1").env("LISTEN_PID", "1").start();
    drop(tcp);
    wait_serving(addr, &h);
    assert!(h.stderr().contains("not for us"), "{}", h.describe());
    // fd 3 was not taken: only the bound listener serves.
    let v = info(addr);
    assert_eq!(v["listeners"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["listeners"][0]["source"], "bound", "{v}");
    assert_ne!(v["listeners"][0]["address"], taddr.to_string());
}

#[test]
fn ready_before_first_request_and_stopping_on_sigterm() {
    let dir = tmp();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    let ready = n.wait_for(Duration::from_secs(10), |_, m| m.lines().any(|l| l == "READY=1"));
    assert!(ready.is_some(), "no READY=1: {:?}\n{}", n.seen, h.describe());
    // READY=1 means serving: the very first request must succeed.
    let (st, _) = get(addr, "/").unwrap();
    assert_eq!(st, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = n.wait_for(Duration::from_secs(10), |_, m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    assert!(stopping.is_some(), "no STOPPING=1: {:?}", n.seen);
    let st = h.wait_timeout(Duration::from_secs(10)).expect("exit");
    assert!(st.success(), "{st:?}\n{}", h.describe());
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let dir = tmp();
    let addr = free_addr();
    let mut h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]).start();
    wait_serving(addr, &h);
    // Returns once the request is read, so in the handler: in flight when the signal comes.
    let req = get_read_by(addr, "/sleep?duration=2s", h.pid());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (st, r) = req.join().unwrap().unwrap();
    assert_eq!(st, 200, "{r}\n{}", h.describe());
    assert_eq!(body(&r), "Hello World");
    assert!(r.contains(&format!("x-heird-pid: {}", h.pid())), "{r}");
    let st = h.wait_timeout(Duration::from_secs(10)).expect("exit");
    assert!(st.success(), "{st:?}");
}

#[test]
fn half_sent_header_does_not_hold_the_exit_past_drain_timeout() {
    let Setup {
        addr,
        mut h,
        dir: _dir,
        ..
    } = start_heird("drain_timeout = \"1s\"\n", false);
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    // The case: heird holds the connection and has read the half head when the stop comes (not
    // a connection still in the backlog, which the stop would never see).
    let local = slow.local_addr().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || read_by(h.pid(), addr, local)),
        "heird never read the half-sent head\n{}",
        h.describe()
    );
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = h.wait_timeout(Duration::from_secs(10)).expect("did not exit");
    assert!(st.success(), "{st:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "exit took {:?}",
        t0.elapsed()
    );
    drop(slow);
}

#[test]
fn check_validates_config() {
    let dir = tmp();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "greeting = \"hi\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "greeting = \"hi\"\nbogus = 1\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let out = std::process::Command::new(BIN)
        .args(["check"])
        .env("HEIRD_CONFIG", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

/// Each hostile environment exits 78 with a message naming the problem, and never panics.
#[test]
fn hostile_environments_exit_78_with_a_clear_message() {
    let dir = tmp();
    let file = std::fs::File::create(dir.path().join("plain-file")).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unlistened: OwnedFd = socket2_unlistened();
    let (tcp, _) = tcp_listener();
    struct Case {
        name: &'static str,
        env: Vec<(&'static str, &'static str)>,
        fds: Vec<i32>,
        expect: &'static str,
    }
    let cases = vec![
        Case {
            name: "LISTEN_FDS=abc",
            env: vec![("LISTEN_FDS", "abc")],
            fds: vec![],
            expect: "LISTEN_FDS=\"abc\"",
        },
        Case {
            name: "count past open fds",
            env: vec![("LISTEN_FDS", "3")],
            fds: vec![tcp.as_raw_fd()],
            expect: "fd 4",
        },
        Case {
            name: "not a socket",
            env: vec![("LISTEN_FDS", "1")],
            fds: vec![file.as_raw_fd()],
            expect: "not a socket",
        },
        Case {
            name: "udp socket",
            env: vec![("LISTEN_FDS", "1")],
            fds: vec![udp.as_raw_fd()],
            expect: "datagram",
        },
        Case {
            name: "not listening",
            env: vec![("LISTEN_FDS", "1")],
            fds: vec![unlistened.as_raw_fd()],
            expect: "not listening",
        },
        Case {
            name: "name count mismatch",
            env: vec![("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "a:b")],
            fds: vec![tcp.as_raw_fd()],
            expect: "LISTEN_FDNAMES has 2 names",
        },
    ];
    for c in cases {
        let mut sp = Spawn::new(dir.path(), &["serve", "--listen", "127.0.0.1:1"]);
        sp.fds = c.fds.clone();
        sp.listen_pid_self = true;
        for (k, v) in &c.env {
            sp = sp.env(k, v);
        }
        let mut h = sp.start();
        let st = h
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{}: still running", c.name));
        let err = h.stderr();
        assert_eq!(st.code(), Some(78), "{}: {st:?}\n{}", c.name, h.describe());
        assert!(
            err.contains(c.expect),
            "{}: message lacks {:?}\n{}",
            c.name,
            c.expect,
            h.describe()
        );
        assert!(
            !err.contains("panicked"),
            "{}: panicked\n{}",
            c.name,
            h.describe()
        );
    }
    // --fd pointing at nothing, and a bad config, are environment/config errors too.
    let mut h = Spawn::new(dir.path(), &["serve", "--fd", "9"]).start();
    assert_eq!(
        h.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(78),
        "{}",
        h.describe()
    );
    assert!(h.stderr().contains("fd 9"), "{}", h.describe());
}

/// A TCP socket that is bound but not listening.
fn socket2_unlistened() -> OwnedFd {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};
    let s = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(s.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    s
}

#[test]
fn bad_sleep_durations_get_400() {
    let dir = tmp();
    let addr = free_addr();
    let h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]).start();
    wait_serving(addr, &h);
    for q in ["/sleep?duration=soon", "/sleep?duration=11s", "/sleep"] {
        let (st, r) = get(addr, q).unwrap();
        assert_eq!(st, 400, "{q}: {r}");
    }
    let (st, _) = get(addr, "/sleep?duration=5ms").unwrap();
    assert_eq!(st, 200);
}

#[test]
fn two_instances_on_one_address_second_fails_with_78() {
    let dir = tmp();
    let addr = free_addr();
    let h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]).start();
    wait_serving(addr, &h);
    let dir2 = tmp();
    let mut h2 = Spawn::new(dir2.path(), &["serve", "--listen", &addr.to_string()]).start();
    let st = h2
        .wait_timeout(Duration::from_secs(10))
        .expect("second instance kept running");
    assert_eq!(st.code(), Some(78), "{}", h2.describe());
    assert!(h2.stderr().contains("cannot bind"), "{}", h2.describe());
    assert_eq!(get(addr, "/").unwrap().0, 200);
}

#[test]
fn shipped_config_file_is_valid() {
    let out = std::process::Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/heird.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
