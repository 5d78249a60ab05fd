//! WebSocket with a client nobody here wrote: Python's `websockets` (Debian's
//! python3-websockets, run by Debian's /usr/bin/python3; see tests/clients/ws_client.py).

mod support;

use std::io::BufRead;
use std::process::Command;

use support::proc::*;

const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_client.py");

fn check_python() {
    let probe = Command::new(PYTHON).args(["-c", "import websockets"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs Debian's {PYTHON} with python3-websockets (apt-get install python3-websockets): {probe:?}"
    );
}

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
    let out = ws_client(&["handoffs", &format!("ws://{}/ws", s.addr), "20", &k.to_string()]);
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
    check_python();
    let mut s = start_heird("", false);
    let mut client = Command::new(PYTHON)
        .args([CLIENT, "until-close", &format!("ws://{}/ws", s.addr)])
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
