//! Hostile clients of the newer protocols: they must not hold a drain past its deadline.
//! These clients are raw sockets on purpose: no real client misbehaves on demand.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;

const DRAIN: &str = "drain_timeout = \"2s\"\n";

/// An HTTP/2 client that opens `streams` requests for `/`, with a stream window of 0 (so that
/// no response body can be sent), and never reads anything: not the responses, not the
/// server's SETTINGS, not its PING or GOAWAY.
fn stalled_h2_client(addr: std::net::SocketAddr, streams: u32) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // SETTINGS: SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    out.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0x4, 0, 0, 0, 0]);
    for i in 0..streams {
        let id = 1 + 2 * i;
        // HPACK: :method GET, :scheme http, :path /, :authority "t" (literal, not indexed).
        let block = [0x82, 0x86, 0x84, 0x01, 0x01, b't'];
        out.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5]); // HEADERS, END_STREAM|END_HEADERS
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&block);
    }
    s.write_all(&out).unwrap();
    s
}

/// Waits until `pid` is gone; returns how long that took from `t0`.
fn gone_after(pid: u32, t0: Instant, h: &Heird) -> Duration {
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "pid {pid} still running 10 s after the drain started (deadline 2 s)\n{}",
        h.describe()
    );
    t0.elapsed()
}

#[test]
fn an_h2_client_that_never_reads_cannot_hold_a_handoff_or_a_stop_past_the_deadline() {
    let s = start_heird(DRAIN, false);
    let old = s.h.pid();
    let _stalled = stalled_h2_client(s.addr, 10);
    // The streams are open on the old process: /info over h1 still answers meanwhile.
    assert_eq!(info(s.addr)["pid"].as_u64(), Some(old as u64));
    let t0 = Instant::now();
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    let took = gone_after(old, t0, &s.h);
    eprintln!("handoff with a stalled h2 client: old process gone after {took:?}");
    // Held by the stalled streams (not gone at once), cut at the 2 s deadline.
    assert!(
        took >= Duration::from_millis(1500),
        "exited after {took:?}: nothing held the drain?"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");

    // A stop does the same.
    let new = info(s.addr)["pid"].as_u64().unwrap() as u32;
    let _stalled = stalled_h2_client(s.addr, 10);
    assert_eq!(info(s.addr)["pid"].as_u64(), Some(new as u64));
    let t0 = Instant::now();
    kill(Pid::from_raw(new as i32), Signal::SIGTERM).unwrap();
    let took = gone_after(new, t0, &s.h);
    eprintln!("stop with a stalled h2 client: gone after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "exited after {took:?}: nothing held the drain?"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// Opens a WebSocket on /ws-close (axum's, closed with 1012 at a drain) by hand and returns the
/// socket once the 101 has been read.
fn raw_websocket(addr: std::net::SocketAddr) -> TcpStream {
    raw_websocket_on(addr, "/ws-close")
}

fn raw_websocket_on(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

#[test]
fn a_websocket_client_that_never_answers_the_close_is_cut_at_the_deadline() {
    let s = start_heird(DRAIN, false);
    let old = s.h.pid();
    let mut ws = raw_websocket(s.addr);
    let t0 = Instant::now();
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    // The server's close frame arrives at once: 0x88, length, code 1012.
    let mut frame = [0u8; 4];
    ws.read_exact(&mut frame).unwrap();
    assert_eq!(frame[0], 0x88, "{frame:?}");
    assert_eq!(&frame[2..4], &1012u16.to_be_bytes(), "{frame:?}");
    // We never answer it: the old process waits for our close until the deadline, then exits.
    let took = gone_after(old, t0, &s.h);
    eprintln!("websocket without a close reply: old process gone after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "exited after {took:?}: nothing held the drain?"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    // And the socket is closed: after the rest of the close frame (its reason), EOF.
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest);
    assert_eq!(rest.len(), frame[1] as usize - 2, "{rest:?}");
}

#[test]
fn garbage_after_the_h2_preface_or_instead_of_a_request_closes_only_that_connection() {
    let s = start_heird("", false);
    let inputs: [&[u8]; 4] = [
        // The preface, then a frame header announcing 16 MiB of an unknown frame type on stream 0.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xee\x00\x00\x00\x00\x00",
        // The preface, then bytes that are no frame at all.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        // Most of the preface, then something else: HTTP/1.x, and not a valid request.
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
    ];
    for input in inputs {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(input).unwrap();
        let mut out = Vec::new();
        // The server answers (an h2 GOAWAY or an HTTP 400) and closes: read to EOF.
        let r = c.read_to_end(&mut out);
        assert!(
            r.is_ok() || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{input:?}: {r:?}"
        );
        assert!(!out.is_empty() || r.is_err(), "{input:?}: closed without a word");
    }
    // The server is unharmed.
    assert_eq!(
        info(s.addr)["pid"].as_u64(),
        Some(s.h.pid() as u64),
        "{}",
        s.h.describe()
    );
    assert!(state(s.h.pid()).is_some_and(|c| c != 'Z'));
}

/// A masked client frame (a zero mask: the payload goes as it is).
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut v = vec![
        if fin { 0x80 } else { 0 } | opcode,
        0x80 | payload.len() as u8,
        0,
        0,
        0,
        0,
    ];
    v.extend_from_slice(payload);
    v
}

/// A resumable WebSocket (`/ws`) whose client stops in the middle of a fragmented message, or
/// of a frame, cannot move: it gets 1012 shortly before the drain deadline (2 s here), and the
/// old process exits without waiting for the whole deadline.
fn stuck_resumable_websocket_gets_1012(stuck: &[u8]) {
    let s = start_heird(DRAIN, false);
    let old = s.h.pid();
    let mut ws = raw_websocket_on(s.addr, "/ws");
    ws.write_all(&client_frame(true, 1, b"hi")).unwrap();
    let mut head = [0u8; 2];
    ws.read_exact(&mut head).unwrap();
    let mut reply = vec![0u8; head[1] as usize];
    ws.read_exact(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(reply.contains(r#""n":1"#), "{reply}");
    ws.write_all(stuck).unwrap();
    let t0 = Instant::now();
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    // Nothing moves it; 1 s before the deadline the server closes with 1012.
    let mut frame = [0u8; 4];
    ws.read_exact(&mut frame).unwrap();
    let closed_after = t0.elapsed();
    assert_eq!(frame[0], 0x88, "{frame:?}");
    assert_eq!(&frame[2..4], &1012u16.to_be_bytes(), "{frame:?}");
    assert!(
        closed_after >= Duration::from_millis(800),
        "closed after {closed_after:?}"
    );
    let took = gone_after(old, t0, &s.h);
    eprintln!("stuck resumable websocket: 1012 after {closed_after:?}, old process gone after {took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn a_resumable_websocket_stuck_in_a_fragmented_message_gets_1012() {
    stuck_resumable_websocket_gets_1012(&client_frame(false, 1, b"first part"));
}

#[test]
fn a_resumable_websocket_stuck_in_a_frame_gets_1012() {
    let frame = client_frame(true, 1, b"a whole frame never arrives");
    stuck_resumable_websocket_gets_1012(&frame[..10]);
}
