//! WebSocket with a client nobody here wrote: Python's `websockets` (Debian's
//! python3-websockets, run by Debian's /usr/bin/python3; see tests/clients/ws_client.py).

mod support;

use std::io::BufRead;
use std::process::Command;

use support::proc::*;
use support::python::{CLIENT, PYTHON, check_python};

/// Runs the client; panics (loudly naming what to install) when Python or the library is missing.
fn ws_client(args: &[&str]) -> String {
    check_python();
    let out = Command::new(PYTHON).arg(CLIENT).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{CLIENT} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn echo_replies_carry_pid_count_and_the_message() {
    let s = start_heird("", false);
    let out = ws_client(&["echo", &format!("ws://{}/ws", s.addr)]);
    let replies: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sent = ["hello", "wörld", r#"{"quoted": "json"}"#];
    assert_eq!(replies.len(), 3, "{out}");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["pid"].as_u64(), Some(s.h.pid() as u64), "{out}");
        assert_eq!(r["n"].as_u64(), Some(i as u64 + 1), "{out}");
        assert_eq!(r["echo"], sent[i], "{out}");
    }
}

/// Handoffs while messages flow: each connection ends with 1012, the client's reconnect
/// reaches the next process, and every message is answered exactly once, in order, across all.
fn handoffs_lose_nothing(k: usize) {
    let s = start_heird("", false);
    let old = s.h.pid();
    let out = ws_client(&[
        "handoffs",
        &format!("ws://{}/ws-close", s.addr),
        "20",
        &k.to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), k + 1, "{out}");
    let mut pids = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        // Every connection but the last was closed by the server with 1012; the client closed
        // the last one.
        let code = if i < k {
            serde_json::json!(1012)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(c["close_code"], code, "connection {i}: {out}");
        let p = c["pids"].as_array().unwrap();
        assert_eq!(p.len(), 1, "connection {i} answered by one process: {out}");
        pids.push(p[0].as_u64().unwrap());
        // The server counted every message it answered, 1, 2, 3 ... on each connection.
        let ns: Vec<u64> = c["ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        assert!(ns.len() >= 20, "{out}");
        assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>(), "{out}");
    }
    assert_eq!(pids[0], old as u64, "{out}");
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        k + 1,
        "each reconnect reached the next process: {pids:?}"
    );
    // No message lost or answered twice: what was acknowledged is exactly what was sent.
    assert_eq!(v["acked"], v["sent"], "{out}");
    eprintln!(
        "websocket across {k} handoffs: {} messages, all answered once, {} connections",
        v["sent"].as_array().unwrap().len(),
        conns.len()
    );
    // The old process's drain ended with the WebSocket (the default deadline is 30 s).
    assert!(
        wait_gone(old, std::time::Duration::from_secs(10)),
        "old process never exited\n{}",
        s.h.describe()
    );
}

#[test]
fn a_handoff_closes_with_1012_and_the_reconnect_reaches_the_new_pid_losing_nothing() {
    handoffs_lose_nothing(1);
}

#[test]
fn ten_handoffs_in_a_row_lose_no_message() {
    handoffs_lose_nothing(10);
}

/// A stop does what a handoff does: the WebSocket closes with 1012, and the process exits
/// without waiting for the deadline (30 s by default).
#[test]
fn a_stop_closes_with_1012_too() {
    stop_closes_with_1012("/ws-close");
}

/// A resumable WebSocket at a stop without the fd store has nowhere to go: the library closes it
/// with 1012, as the handlers that do not opt in do.
#[test]
fn a_stop_without_the_store_closes_a_resumable_websocket_with_1012() {
    stop_closes_with_1012("/ws");
}

fn stop_closes_with_1012(path: &str) {
    check_python();
    let mut s = start_heird("", false);
    let mut client = Command::new(PYTHON)
        .args([CLIENT, "until-close", &format!("ws://{}{path}", s.addr)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let open = lines.next().unwrap().unwrap();
    assert_eq!(open, format!("open {}", s.h.pid()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let closed = lines.next().unwrap().unwrap();
    assert_eq!(closed, "closed 1012", "{}", s.h.describe());
    assert!(client.wait().unwrap().success());
    let status = s.h.wait_timeout(std::time::Duration::from_secs(10));
    assert!(
        status.is_some_and(|st| st.success()),
        "{status:?}\n{}",
        s.h.describe()
    );
}

// ---- Resumable WebSockets (`heird::ws`, the demo's `/ws`): they move, they do not close. ----

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{out}")))
        .collect()
}

fn u64s(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// One client, a message every 10 ms and a ping every 25 ms, across 50 handoffs: one TCP
/// connection, no close, every message answered exactly once and in order, `n` continuous,
/// every ping answered, 51 pids.
#[test]
fn one_websocket_moves_across_50_handoffs_without_a_close_or_a_gap() {
    let s = start_heird("", false);
    continuous_across_handoffs(&format!("ws://{}/ws", s.addr), s.h.pid(), 50, &s.h);
}

/// The same over a Unix socket (5 handoffs).
#[test]
fn a_websocket_on_a_unix_socket_moves_too() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let upath = dir.path().join("ws.sock");
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
    continuous_across_handoffs(&format!("unix:{}", upath.display()), h.pid(), 5, &h);
}

fn continuous_across_handoffs(url: &str, old: u32, k: usize, h: &Heird) {
    let out = ws_client(&["continuous", url, &k.to_string(), "10"]);
    let v = &json_lines(&out)[0];
    let brief = format!(
        "close_code={} timeout={} sent={} echoes={} pids={} pings={} pongs={}\n{}",
        v["close_code"],
        v["timeout"],
        v["sent"].as_array().unwrap().len(),
        v["echoes"].as_array().unwrap().len(),
        v["pids"],
        v["pings"],
        v["pongs"],
        h.stderr()
    );
    assert_eq!(v["close_code"], serde_json::Value::Null, "{brief}");
    assert_eq!(v["timeout"], serde_json::Value::Null, "{brief}");
    assert_eq!(v["port_start"], v["port_end"], "{brief}");
    assert_eq!(
        v["echoes"], v["sent"],
        "every message answered once, in order: {brief}"
    );
    let ns = u64s(&v["ns"]);
    assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>(), "{brief}");
    let pids = u64s(&v["pids"]);
    assert_eq!(pids.len(), k + 1, "{brief}");
    assert_eq!(pids[0], old as u64, "{brief}");
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), k + 1, "a pid came back: {brief}");
    assert!(v["pings"].as_u64().unwrap() > 0);
    assert_eq!(v["pongs"], v["pings"], "every ping got its pong: {brief}");
    eprintln!(
        "resumable websocket on {url} across {k} handoffs: {} messages, {} pings, one connection, no close",
        ns.len(),
        v["pings"]
    );
}

/// 100 clients, half of them in the middle of a fragmented message when the handoff starts:
/// those finish it on the old process, then move; none is closed, every message is answered.
#[test]
fn a_fragmented_message_finishes_on_the_old_process_then_the_socket_moves() {
    let s = start_heird("", false);
    let old = s.h.pid() as u64;
    let out = ws_client(&["fragments", &format!("ws://{}/ws", s.addr), "100"]);
    let results = json_lines(&out);
    assert_eq!(results.len(), 100, "{out}");
    let mut new_pids = std::collections::BTreeSet::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r["close_code"],
            serde_json::Value::Null,
            "client {i}: {r}\n{}",
            s.h.stderr()
        );
        assert_eq!(r["echoes"], r["sent"], "client {i}: {r}");
        let ns = u64s(&r["ns"]);
        assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>(), "client {i}: {r}");
        let pids = u64s(&r["pids"]);
        assert_eq!(pids[0], old, "client {i}: {r}");
        let last = *pids.last().unwrap();
        assert_ne!(last, old, "client {i} never moved: {r}");
        new_pids.insert(last);
        if r["fragmented"] == true {
            // The fragmented message was answered by the process that had its first part.
            assert_eq!(pids[1], old, "client {i}: {r}");
        }
    }
    assert_eq!(new_pids.len(), 1, "{new_pids:?}");
}

/// A successor that fails: nothing moves, no WebSocket is closed, the old process answers.
#[test]
fn a_failed_successor_moves_no_websocket() {
    check_python();
    let s = start_heird("", false);
    let mut client = Command::new(PYTHON)
        .args([CLIENT, "idle", &format!("ws://{}/ws", s.addr), "20"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert_eq!(ready, format!("ready {}", s.h.pid()));
    std::fs::write(&s.cfg, "broken = [").unwrap();
    let (ok, out) = reload(s.dir.path());
    assert!(!ok, "{out}");
    use std::io::Write;
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let summary: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(client.wait().unwrap().success());
    assert_eq!(summary["closed"], 0, "{summary}\n{}", s.h.stderr());
    assert_eq!(summary["answered"], 20, "{summary}");
    assert_eq!(summary["ns_ok"], true, "{summary}");
    assert_eq!(summary["pids"][s.h.pid().to_string()], 20, "{summary}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Seconds since midnight of a log line's timestamp (`2026-12-02T10:10:47.233258Z  INFO ...`).
fn log_time(line: &str) -> Option<f64> {
    let t = line
        .split_whitespace()
        .next()?
        .split_once('T')?
        .1
        .trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// 1000 idle WebSockets move in one handoff. Prints the time from the successor becoming primary
/// until the old process has handed every socket on (both from their log lines), and memory;
/// asserts that every one moved and none closed.
#[test]
fn a_thousand_idle_websockets_move_in_one_handoff() {
    check_python();
    let s = start_heird("", false);
    let old = s.h.pid();
    let rss_idle = rss_kib(old);
    let mut client = Command::new(PYTHON)
        .args([CLIENT, "idle", &format!("ws://{}/ws", s.addr), "1000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert_eq!(ready, format!("ready {old}"));
    let rss_before = rss_kib(old);
    let t0 = std::time::Instant::now();
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    let primary = t0.elapsed();
    assert!(
        wait_gone(old, std::time::Duration::from_secs(30)),
        "{}",
        s.h.describe()
    );
    let all_moved = t0.elapsed();
    let new = info(s.addr)["pid"].as_u64().unwrap() as u32;
    let rss_after = rss_kib(new);
    use std::io::Write;
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let summary: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(client.wait().unwrap().success());
    assert_eq!(summary["closed"], 0, "{summary}");
    assert_eq!(summary["answered"], 1000, "{summary}");
    assert_eq!(
        summary["ns_ok"], true,
        "n went on from the moved state: {summary}"
    );
    assert_eq!(summary["pids"][new.to_string()], 1000, "{summary}");
    let log = s.h.stderr();
    let line = |needle: &str| log.lines().find(|l| l.contains(needle)).and_then(log_time);
    let moved_line = log
        .lines()
        .find(|l| l.contains("connections moved"))
        .unwrap_or("");
    assert!(
        moved_line.contains("moved=1000 not_moved=0"),
        "{moved_line}\n{log}"
    );
    // The old process's drain ends ("drained") once the last socket has been handed on.
    let primary_to_moved = match (line("now primary"), line("heird::drain: drained")) {
        (Some(a), Some(b)) => format!("{:.1} ms", (b - a) * 1e3),
        _ => "unknown (log lines missing)".to_string(),
    };
    eprintln!(
        "1000 idle websockets: primary → all moved {primary_to_moved} (from the log lines); reload \
         answered after {:.1} ms, old process gone {:.1} ms after the reload started; RSS of the old \
         process idle {rss_idle} KiB, with them {rss_before} KiB; successor with them {rss_after} KiB",
        primary.as_secs_f64() * 1e3,
        all_moved.as_secs_f64() * 1e3,
    );
}

/// Across a stop and a start under systemd (a fake notify socket holding the fd store): the
/// WebSockets wait in the store (`wsconn-…` with their state and unread bytes in `wsmsg-…`),
/// messages sent while no process runs are answered by the next one, `n` goes on, none closes.
/// With room for fewer, the rest are closed with 1012 (counted against `$FDSTORE`).
fn websockets_through_the_store(fdstore: &str, clients: usize, expect_stored: usize) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    check_python();
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut h = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", fdstore)
        .start();
    wait_serving(addr, &h);
    let mut client = Command::new(PYTHON)
        .args([CLIENT, "idle", &format!("ws://{addr}/ws"), &clients.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), format!("ready {}", h.pid()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        h.wait_timeout(std::time::Duration::from_secs(10))
            .unwrap()
            .success(),
        "{}",
        h.describe()
    );
    // The clients send now, while nothing serves: the bytes wait in the sockets.
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    n.drain_for(std::time::Duration::from_millis(200));
    let stored: Vec<(String, std::os::fd::OwnedFd)> = std::mem::take(&mut *n.store.lock().unwrap());
    let names: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    let socks = names.iter().filter(|k| k.starts_with("wsconn-")).count();
    let msgs = names.iter().filter(|k| k.starts_with("wsmsg-")).count();
    assert_eq!(
        (socks, msgs),
        (expect_stored, expect_stored),
        "{names:?}\n{}",
        h.stderr()
    );
    let mut sp = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()]);
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h2 = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", fdstore)
        .start();
    drop(stored);
    let summary: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(client.wait().unwrap().success());
    assert_eq!(summary["answered"], expect_stored, "{summary}\n{}", h2.describe());
    assert_eq!(summary["closed"], clients - expect_stored, "{summary}");
    // Those the store had no room for were closed properly, with 1012.
    let codes = summary["close_codes"].as_array().unwrap();
    assert!(codes.iter().all(|c| c == 1012), "{summary}");
    assert_eq!(
        summary["ns_ok"], true,
        "n went on from the stored state: {summary}"
    );
    if expect_stored > 0 {
        assert_eq!(summary["pids"][h2.pid().to_string()], expect_stored, "{summary}");
    }
    // The next process took them out of the store.
    n.drain_for(std::time::Duration::from_millis(300));
    let removed = n
        .seen
        .iter()
        .filter(|(_, m)| m.contains("FDSTOREREMOVE=1") && m.contains("FDNAME=ws"))
        .count();
    assert_eq!(removed, 2 * expect_stored, "{:?}", n.seen);
}

#[test]
fn websockets_wait_in_the_fd_store_across_a_restart() {
    websockets_through_the_store("128", 10, 10);
}

#[test]
fn websockets_in_the_fd_store_count_against_its_size() {
    // 8 fds, one for the listener: 3 WebSockets (2 fds each) fit, 2 are closed.
    websockets_through_the_store("8", 5, 3);
}

/// Opens a WebSocket on `path` by hand and returns the socket once the 101 has been read.
fn raw_ws(addr: std::net::SocketAddr, path: &str) -> std::net::TcpStream {
    raw_ws_then(addr, path, b"")
}

/// [`raw_ws`], with `then` sent in the same write as the upgrade request.
fn raw_ws_then(addr: std::net::SocketAddr, path: &str, then: &[u8]) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(then);
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "closed during the handshake: {head:?}"
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked text frame (zero mask).
fn text_frame(payload: &str) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut v = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    v.extend_from_slice(payload.as_bytes());
    v
}

/// Reads one unmasked server text frame (short).
fn read_text(s: &mut std::net::TcpStream) -> serde_json::Value {
    use std::io::Read;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "not a text frame: {head:?}");
    assert!(head[1] < 126);
    let mut body = vec![0u8; head[1] as usize];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// The start of the next frame, read together with the previous one, is not parsed yet when the
/// connection parks: it travels with the fd, and the successor completes the frame with the rest.
#[test]
fn the_start_of_a_frame_read_before_the_move_travels_with_it() {
    use std::io::Write;
    let s = start_heird("", false);
    let old = s.h.pid();
    let mut ws = raw_ws(s.addr, "/ws");
    let second = text_frame("second");
    // One write: a whole frame and the first byte of the next.
    let mut out = text_frame("first");
    out.push(second[0]);
    ws.write_all(&out).unwrap();
    let r1 = read_text(&mut ws);
    assert_eq!(
        (r1["n"].as_u64(), r1["pid"].as_u64()),
        (Some(1), Some(old as u64)),
        "{r1}"
    );
    let (ok, text) = reload(s.dir.path());
    assert!(ok, "{text}");
    let new = wait_new_pid(s.addr, old, std::time::Duration::from_secs(10)).expect("a new pid");
    ws.write_all(&second[1..]).unwrap();
    let r2 = read_text(&mut ws);
    assert_eq!(r2["echo"], "second", "{r2}");
    assert_eq!(
        (r2["n"].as_u64(), r2["pid"].as_u64()),
        (Some(2), Some(new as u64)),
        "{r2}"
    );
    // And on: the connection is the successor's now.
    ws.write_all(&text_frame("third")).unwrap();
    let r3 = read_text(&mut ws);
    assert_eq!(
        (r3["n"].as_u64(), r3["pid"].as_u64()),
        (Some(3), Some(new as u64)),
        "{r3}"
    );
}

/// A frame sent in the same write as the upgrade request (hyper reads both) is answered: the
/// bytes hyper read past the request go to the WebSocket first.
#[test]
fn a_frame_in_the_same_write_as_the_upgrade_request_is_answered() {
    let s = start_heird("", false);
    let mut ws = raw_ws_then(s.addr, "/ws", &text_frame("early"));
    let r = read_text(&mut ws);
    assert_eq!(r["echo"], "early", "{r}");
    assert_eq!(r["n"].as_u64(), Some(1), "{r}");
}

/// Reads one server close frame and returns its code.
fn read_close(s: &mut std::net::TcpStream) -> u16 {
    use std::io::Read;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x88, "not a close frame: {head:?}");
    assert!((2..126).contains(&head[1]), "{head:?}");
    let mut body = vec![0u8; head[1] as usize];
    s.read_exact(&mut body).unwrap();
    u16::from_be_bytes([body[0], body[1]])
}

/// The handler of a resumed WebSocket sees the drain of the process that serves it now, not
/// only the first one: `/ws-drain` (the `/ws` echo whose handler also selects on `Draining`)
/// says `"draining"` at the first handoff, at the second (from the successor, which resumed
/// the connection), and at the stop of the third process, each time before the connection
/// moves or closes.
#[test]
fn a_resumed_websockets_handler_sees_the_next_drain() {
    use std::io::Write;
    use std::time::Duration;
    let s = start_heird("", false);
    let mut pids = vec![s.h.pid()];
    let mut ws = raw_ws(s.addr, "/ws-drain");
    for (n, word) in ["one", "two"].into_iter().enumerate() {
        let pid = *pids.last().unwrap() as u64;
        ws.write_all(&text_frame(word)).unwrap();
        let r = read_text(&mut ws);
        assert_eq!(
            (r["pid"].as_u64(), r["n"].as_u64()),
            (Some(pid), Some(2 * n as u64 + 1)),
            "{r}"
        );
        let (ok, text) = reload(s.dir.path());
        assert!(ok, "{text}");
        let new = wait_new_pid(s.addr, pid as u32, Duration::from_secs(10)).expect("a new pid");
        pids.push(new);
        // What comes first after the handoff: the old process's note, then the echo of the next
        // message from the new one.
        ws.write_all(&text_frame("after")).unwrap();
        let note = read_text(&mut ws);
        assert_eq!(
            (note["pid"].as_u64(), note["draining"].as_str()),
            (Some(pid), Some("handoff")),
            "handoff {} ({pids:?}): the handler of pid {pid} did not see its drain; got {note}\n{}",
            n + 1,
            s.h.describe()
        );
        let r = read_text(&mut ws);
        assert_eq!(
            (r["pid"].as_u64(), r["echo"].as_str()),
            (Some(new as u64), Some("after")),
            "{r}"
        );
    }
    // The third process stops (no fd store here): the note, then the library's 1012.
    let last = *pids.last().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(last as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let note = read_text(&mut ws);
    assert_eq!(
        (
            note["pid"].as_u64(),
            note["draining"].as_str(),
            note["n"].as_u64()
        ),
        (Some(last as u64), Some("stop"), Some(4)),
        "{note}\n{}",
        s.h.describe()
    );
    assert_eq!(read_close(&mut ws), 1012);
    assert!(
        wait_gone(last, Duration::from_secs(10)),
        "pid {last} still running after SIGTERM"
    );
}
