//! Every protocol axum serves, with clients nobody here wrote: HTTP/2 with prior knowledge and
//! SSE with curl, `ConnectInfo` for TCP and Unix, and an upgrade request to a route that does
//! not upgrade.

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::proc::*;

/// Runs curl with `args`; returns (exit success, stdout); panics when curl is missing.
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .args(args)
        .output()
        .expect("curl is needed (apt-get install curl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

#[test]
fn curl_http2_prior_knowledge_and_http1_on_the_same_socket_report_protocol_and_peer() {
    let s = start_heird("", false);
    let url = format!("http://{}/info", s.addr);
    for (flag, protocol) in [("--http2-prior-knowledge", "HTTP/2.0"), ("--http1.1", "HTTP/1.1")] {
        // curl prints the body, then its own end of the connection.
        let (ok, out) = curl(&[flag, "-w", "\n%{local_ip}:%{local_port} %{http_version}", &url]);
        assert!(ok, "{out}\n{}", s.h.describe());
        let (body, local) = out.rsplit_once('\n').unwrap();
        let (local, version) = local.split_once(' ').unwrap();
        let v = json(body);
        assert_eq!(v["protocol"], protocol, "{body}");
        assert_eq!(v["peer"], local, "{body}");
        assert_eq!(version, if protocol == "HTTP/2.0" { "2" } else { "1.1" });
        assert!(v.get("peer_credentials").is_none(), "{body}");
    }
}

#[test]
fn connect_info_peer_is_the_clients_local_address() {
    let s = start_heird("", false);
    let stream = TcpStream::connect(s.addr).unwrap();
    let local: SocketAddr = stream.local_addr().unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (_, body) = read_response(&mut r);
    assert_eq!(json(&body)["peer"], local.to_string(), "{body}");
}

#[test]
fn connect_info_on_a_unix_socket_carries_the_clients_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let sock = dir.path().join("h.sock");
    let unix = format!("unix:{}", sock.display());
    let h = Spawn::new(
        dir.path(),
        &["serve", "--listen", &addr.to_string(), "--listen", &unix],
    )
    .start();
    wait_serving(addr, &h);
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "15", "--unix-socket"])
        .arg(&sock)
        .arg("http://localhost/info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is needed");
    let curl_pid = child.id() as i64;
    let out = child.wait_with_output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{body}\n{}", h.describe());
    let v = json(&body);
    assert_eq!(v["peer"], "unix", "{body}");
    let cred = &v["peer_credentials"];
    assert_eq!(cred["pid"].as_i64(), Some(curl_pid), "{body}");
    assert_eq!(
        cred["uid"].as_u64(),
        Some(nix::unistd::geteuid().as_raw() as u64),
        "{body}"
    );
    assert_eq!(
        cred["gid"].as_u64(),
        Some(nix::unistd::getegid().as_raw() as u64),
        "{body}"
    );
    assert_eq!(v["protocol"], "HTTP/1.1");
    // HTTP/2 over the Unix socket too.
    let (ok, out) = curl(&[
        "--http2-prior-knowledge",
        "--unix-socket",
        sock.to_str().unwrap(),
        "http://localhost/info",
    ]);
    assert!(ok, "{out}");
    assert_eq!(json(&out)["protocol"], "HTTP/2.0", "{out}");
}

#[test]
fn an_upgrade_request_to_a_route_that_does_not_upgrade_gets_an_ordinary_answer() {
    let s = start_heird("", false);
    let stream = TcpStream::connect(s.addr).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(
        b"GET /info HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["protocol"], "HTTP/1.1");
    // The connection is still an HTTP connection: a second request is answered on it.
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    // A WebSocket route asked for an upgrade to something else refuses it (an ordinary 4xx).
    w.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
}

/// The events of an SSE stream as (id, data JSON).
fn sse_events(text: &str) -> Vec<(u64, serde_json::Value)> {
    text.split("\n\n")
        .filter_map(|ev| {
            let id = ev.lines().find_map(|l| l.strip_prefix("id: "))?.parse().ok()?;
            let data = ev.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((id, json(data)))
        })
        .collect()
}

fn wait_file(path: &Path, d: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + d;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sse_ids_continue_across_a_handoff_after_one_reconnect_with_last_event_id() {
    let s = start_heird("", false);
    let url = format!("http://{}/events", s.addr);
    for http2 in [false, true] {
        let old = info(s.addr)["pid"].as_u64().unwrap();
        let out_path = s.dir.path().join(format!("sse-{http2}.txt"));
        let mut args = vec!["-sSN", "--max-time", "20", "-o", out_path.to_str().unwrap()];
        if http2 {
            args.push("--http2-prior-knowledge");
        }
        args.push(&url);
        let mut first = Command::new("curl").args(&args).spawn().expect("curl");
        let text = wait_file(&out_path, Duration::from_secs(10), |t| sse_events(t).len() >= 3);
        assert!(sse_events(&text).len() >= 3, "no events: {text:?}");
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "{out}");
        // The stream ends by itself (curl exits 0) after a last event.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = first.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the SSE stream did not end at the handoff"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "curl: {status}");
        let events = sse_events(&std::fs::read_to_string(&out_path).unwrap());
        for (i, (id, data)) in events.iter().enumerate() {
            assert_eq!(*id, i as u64 + 1, "ids count up from 1: {events:?}");
            assert_eq!(data["pid"].as_u64(), Some(old), "{events:?}");
        }
        let (last, last_data) = events.last().unwrap();
        assert_eq!(last_data["draining"], true, "the last event says why: {events:?}");
        // One reconnect with Last-Event-ID: the new process continues from the next id.
        let header = format!("Last-Event-ID: {last}");
        let mut args = vec!["-sSN", "--max-time", "0.5", "-H", &header];
        if http2 {
            args.push("--http2-prior-knowledge");
        }
        args.push(&url);
        let (_, text) = curl(&args); // ends at --max-time (exit 28)
        let again = sse_events(&text);
        assert!(!again.is_empty(), "no events after the reconnect: {text:?}");
        assert_eq!(again[0].0, last + 1, "{again:?}");
        let new = again[0].1["pid"].as_u64().unwrap();
        assert_ne!(new, old, "the reconnect reached the old process");
        for w in again.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "{again:?}");
        }
    }
    // A Last-Event-ID that is not a number starts afresh; one at the top does not overflow.
    let (_, text) = curl(&["-sSN", "--max-time", "0.3", "-H", "Last-Event-ID: x", &url]);
    assert_eq!(sse_events(&text).first().map(|e| e.0), Some(1), "{text:?}");
    let top = format!("Last-Event-ID: {}", u64::MAX);
    let (_, text) = curl(&["-sSN", "--max-time", "0.3", "-H", &top, &url]);
    assert_eq!(sse_events(&text).first().map(|e| e.0), Some(u64::MAX), "{text:?}");
}

#[test]
fn an_h2_stream_open_at_the_handoff_finishes_on_the_old_process() {
    let s = start_heird("", false);
    let old = s.h.pid();
    let url = format!("http://{}/sleep?duration=1s", s.addr);
    // curl's -v trace goes to a file, where the test sees the request leave.
    let trace = s.dir.path().join("curl.trace");
    let child = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--max-time",
            "15",
            "--http2-prior-knowledge",
            "-D",
            "-",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&trace).unwrap())
        .spawn()
        .expect("curl");
    // Wait until the request is in the old process's handler: curl has written the request
    // (its trace ends the headers with "> " and curl sleeps, waiting for the answer), and the
    // old process holds the connection and has read everything on it (within curl's own limit:
    // starting curl on a loaded machine takes a while).
    let sent = || {
        let t = std::fs::read_to_string(&trace).unwrap_or_default();
        t.contains("> GET /sleep") && t.lines().any(|l| l.trim_end() == ">")
    };
    let in_handler = || {
        let clients = clients_of(s.addr);
        sent() && state(child.id()) == Some('S') && clients.len() == 1 && read_by(old, s.addr, clients[0])
    };
    assert!(
        wait_until(Duration::from_secs(15), in_handler),
        "the request never reached the old process's handler; curl's trace:\n{}",
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(text.contains(&format!("x-heird-pid: {old}")), "{text}");
    assert!(text.ends_with("Hello World"), "{text}");
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "old process never exited"
    );
}
