//! Hostile input and resources: slow-header clients, running out of fds, and the control
//! socket against other users and garbage.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;

/// Whether any thread of `pid` is running or runnable (state `R`) right now.
fn any_thread_running(pid: u32) -> bool {
    let tasks = format!("/proc/{pid}/task");
    std::fs::read_dir(&tasks)
        .unwrap_or_else(|e| panic!("{tasks}: {e}"))
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('R')))
                .unwrap_or(false)
        })
}

/// How many sockets `pid` holds.
fn sockets_held(pid: u32) -> usize {
    fd_table(pid)
        .iter()
        .filter(|(_, t)| t.starts_with("socket:"))
        .count()
}

/// 200 connections that send one header byte a second.
fn slowloris(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(addr).ok()).collect();
        let header = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < header.len() {
            conns.retain_mut(|c| c.write_all(&header[i..i + 1]).is_ok());
            i += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn slowloris_does_not_starve_others_and_the_drain_still_ends_by_its_deadline() {
    let Setup { dir, addr, mut h, .. } = start_heird("drain_timeout = \"2s\"\n", false);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = slowloris(addr, stop.clone());
    // Once heird holds the slow connections, others are still served (how fast:
    // bench/hostile.sh).
    assert!(
        wait_until(Duration::from_secs(10), || sockets_held(h.pid()) >= 200),
        "heird never held the 200 slow connections ({} sockets)\n{}",
        sockets_held(h.pid()),
        h.describe()
    );
    for i in 0..20 {
        let r = get(addr, "/");
        assert!(
            matches!(r, Ok((200, _))),
            "request {i} under slowloris: {r:?}\n{}",
            h.describe()
        );
    }
    // A handoff under slowloris works, and its drain ends by the deadline.
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}");
    assert_eq!(get(addr, "/").unwrap().0, 200);
    assert!(
        wait_gone(h.pid(), Duration::from_secs(5)),
        "old process still draining after 5 s"
    );
    // SIGTERM while slowloris continues: exits within the deadline (2 s) plus a margin.
    let new = info(addr)["pid"].as_u64().unwrap() as u32;
    kill(Pid::from_raw(new as i32), Signal::SIGTERM).unwrap();
    assert!(
        wait_gone(new, Duration::from_secs(5)),
        "did not exit under slowloris"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    slow.join().unwrap();
    let _ = h.wait_timeout(Duration::from_secs(1));
}

#[test]
fn out_of_fds_neither_spins_nor_dies_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]);
    sp.bin = "/bin/sh".into();
    sp.args = vec![
        "-c".into(),
        format!("ulimit -n 64 && exec {BIN} serve --listen {addr}"),
    ];
    let h = sp.start();
    wait_serving(addr, &h);
    let pid = h.child.id();
    // 300 concurrent clients that hold their connection open: far more than its 64 fds.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 300 && Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            held.push(s);
        }
    }
    // It ran out of fds (the case under test), and says so.
    assert!(
        wait_until(Duration::from_secs(10), || h.stderr().contains("accept failed")
            && h.stderr().contains("Too many open files")),
        "no EMFILE from accept with {} connections held\n{}",
        held.len(),
        h.describe()
    );
    // It does not spin: while accepts keep failing, its threads are asleep nearly all the time,
    // whereas a loop that retries at once keeps one of them running or runnable (state R) in
    // every sample, however busy the machine is. How much CPU it uses: bench/hostile.sh.
    let samples = 200;
    let mut running = 0;
    for _ in 0..samples {
        if any_thread_running(pid) {
            running += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "fd flood: {} connections held; a thread of heird runnable in {running} of {samples} samples",
        held.len()
    );
    assert!(
        state(pid).is_some_and(|s| s != 'Z'),
        "server died\n{}",
        h.describe()
    );
    assert!(
        running < samples / 2,
        "the accept loop spins: a thread runnable in {running} of {samples} samples\n{}",
        h.describe()
    );
    drop(held);
    // Once the flood stops, it answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = get(addr, "/") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the flood\n{}",
            h.describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn control_socket_refuses_other_users_and_survives_garbage() {
    let dir = tempfile::tempdir().unwrap();
    // A directory other users can enter, so that only the socket's own mode protects it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let addr = free_addr();
    let h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]).start();
    wait_serving(addr, &h);
    let sock = dir.path().join("control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // As `nobody`: no reload, no answer.
    let out = Command::new(BIN)
        .args(["reload", "--timeout", "5s", "--socket"])
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission denied") || err.contains("permission denied"),
        "{err}"
    );
    assert_eq!(
        info(addr)["pid"].as_u64().unwrap() as u32,
        h.pid(),
        "a reload happened"
    );
    // Garbage, a silent client, and a flood of bytes: the service stays up and answers.
    let silent_since = Instant::now();
    let mut silent = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    for junk in [
        &b"\x00\xff\xfe garbage\n"[..],
        b"reload now please\n",
        &[b'x'; 100_000][..],
    ] {
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = c.write_all(junk);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(!answer.starts_with("ok"), "{answer}");
    }
    assert_eq!(get(addr, "/").unwrap().0, 200);
    // A real reload works while the silent client waits, and the silent client is answered
    // `error timeout` and closed 2 s after it connected (not earlier; the deadline below only
    // bounds the wait).
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}");
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = String::new();
    let r = silent.read_to_string(&mut buf);
    assert!(
        r.is_ok(),
        "the silent client was not closed within 10 s: {r:?}, got {buf:?}\n{}",
        h.describe()
    );
    assert!(
        silent_since.elapsed() >= Duration::from_secs(2),
        "the silent client was dropped after {:?}",
        silent_since.elapsed()
    );
    assert_eq!(buf, "error timeout\n", "{}", h.describe());
}

#[test]
fn a_slow_header_or_a_long_idle_connection_is_closed_after_the_header_read_timeout() {
    let setup = start_heird("header_read_timeout = \"300ms\"\n", false);
    let addr = setup.addr;
    // A head that never completes: closed after one to two periods (0.3-0.6 s), well before 5 s.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    // A keep-alive connection that is served, then stays idle.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    for (name, c) in [("slow header", &mut slow), ("idle keep-alive", &mut idle)] {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        let r = c.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        // Closed: EOF, or a reset (the kernel answers with RST when what the client sent was
        // not all read); a read timeout means it was not closed.
        let closed = match &r {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "{name}: not closed within 5 s: {r:?}, got {text:?}");
        if name == "idle keep-alive" {
            assert!(text.starts_with("HTTP/1.1 200"), "{name}: {r:?} {text:?}");
        } else {
            assert!(all.is_empty(), "{name}: {text:?}");
        }
    }
    eprintln!("both closed after {:?}", t0.elapsed());
    // A client that keeps sending requests more often than the period is never cut off.
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..8 {
        busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = busy.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
