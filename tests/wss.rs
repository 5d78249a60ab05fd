//! WebSockets over TLS (`wss://`): heird's resumable `/ws` with a client nobody here wrote
//! (Python's `websockets`, Debian's /usr/bin/python3, tests/clients/ws_client.py) and by hand
//! over rustls. A TLS connection never moves, so a handoff closes its WebSocket with 1012 and the
//! client's next connection reaches the successor.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;
use support::python::{CLIENT, PYTHON, check_python};
use support::tls::*;

fn client(args: &[&str], ca: &std::path::Path) -> Command {
    check_python();
    let mut c = Command::new(PYTHON);
    c.arg(CLIENT).args(args).env("WS_CA", ca);
    c
}

/// Three messages over `wss://`, each answered by `pid`, in order.
fn echo_from(s: &Https, ca: &std::path::Path, pid: u32) {
    let out = client(&["echo", &format!("wss://{}/ws", s.addr)], ca)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "echo: {}\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.h.describe()
    );
    let replies: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sent = ["hello", "wörld", r#"{"quoted": "json"}"#];
    assert_eq!(replies.len(), 3, "{stdout}");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["pid"].as_u64(), Some(pid as u64), "{stdout}");
        assert_eq!(r["n"].as_u64(), Some(i as u64 + 1), "{stdout}");
        assert_eq!(r["echo"], sent[i], "{stdout}");
    }
}

#[test]
fn a_resumable_websocket_over_tls_is_served_and_a_handoff_closes_it_with_1012() {
    let (s, pair) = start_tls("");
    let old = s.h.pid();
    echo_from(&s, &pair.cert, old);

    let mut until_close = client(&["until-close", &format!("wss://{}/ws", s.addr)], &pair.cert)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(until_close.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("no {what} line from the client ({e})\n{}", s.h.describe()))
    };
    assert_eq!(line("open"), format!("open {old}"));
    kill(Pid::from_raw(old as i32), Signal::SIGUSR2).unwrap();
    assert_eq!(line("closed"), "closed 1012", "{}", s.h.describe());
    assert!(until_close.wait().unwrap().success());

    let mut new = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            new = https_info(s.addr, &s.client)["pid"].as_u64().unwrap() as u32;
            new != old
        }),
        "no successor answers\n{}",
        s.h.describe()
    );
    echo_from(&s, &pair.cert, new);
}

/// A frame sent in the same TLS record as the upgrade request reaches the handler: the bytes
/// hyper read past the request are replayed before the rest of the connection.
#[test]
fn a_frame_in_the_same_record_as_the_upgrade_request_is_answered() {
    let (s, _pair) = start_tls("");
    let mut c = connect(s.addr, &s.client).unwrap();
    let mut out = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    // A masked text frame "early" (zero mask), in the same write.
    out.extend_from_slice(&[0x81, 0x85, 0, 0, 0, 0]);
    out.extend_from_slice(b"early");
    c.write_all(&out).unwrap();
    c.flush().unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("closed during the handshake ({e}): {head:?}"));
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut frame = [0u8; 2];
    c.read_exact(&mut frame).unwrap();
    assert_eq!(frame[0], 0x81, "not a text frame: {frame:?}");
    assert!(frame[1] < 126);
    let mut body = vec![0u8; frame[1] as usize];
    c.read_exact(&mut body).unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["echo"], "early", "{reply}");
    assert_eq!(reply["n"].as_u64(), Some(1), "{reply}");
    assert_eq!(reply["pid"].as_u64(), Some(s.h.pid() as u64), "{reply}");
}
