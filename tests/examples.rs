//! The examples are programs a user copies: each is built by `cargo test` and run here, the way
//! its doc says, with real sockets and signals.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::examples::example;
use support::proc::*;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// minimal's "Try" line, as written: socket activation by `systemd-socket-activate`, then
/// `minimal reload --pid` and `minimal stop --pid` outside systemd.
#[test]
fn minimal_runs_as_its_doc_says() {
    let find = || {
        ["/usr/bin/systemd-socket-activate", "/bin/systemd-socket-activate"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    support::deps::require("systemd-socket-activate", &["systemd"], || find().is_some());
    let activate = find().expect("systemd-socket-activate, just found");
    let bin = example("minimal");
    let addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(activate)
        .args(["-l", &addr.to_string()])
        .arg(&bin)
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = Killed(child);
    // The first connection makes systemd-socket-activate exec the app with the socket.
    let mut first = None;
    assert!(wait_until(Duration::from_secs(10), || {
        first = get(addr, "/").ok();
        first.is_some()
    }));
    let (st, body) = first.unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("hello from a systemd-native axum app"), "{body}");
    let (code, out) = client_command(&bin, &["reload", "--pid", &pid.to_string()]);
    assert_eq!(code, Some(0), "{out}");
    let new: u32 = out
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"));
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "the old process did not exit"
    );
    assert_eq!(get(addr, "/").unwrap().0, 200);
    let (code, out) = client_command(&bin, &["stop", "--pid", &new.to_string()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(wait_gone(new, Duration::from_secs(10)));
}

/// readiness: no READY=1 and no connection served before the gate passes; a gate that fails in
/// the successor fails the reload with its reason, and the old process serves on; the
/// background job runs only in the primary.
#[test]
fn readiness_gate_holds_ready_and_fails_a_reload_visibly() {
    let bin = example("readiness");
    let dir = tempfile::tempdir().unwrap();
    let dep = dir.path().join("dep");
    let mut notify = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &[&addr.to_string()])
        .env("READY_FILE", dep.to_str().unwrap())
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap());
    sp.bin = bin.clone();
    let h = sp.start();
    // The gate waits for the dependency: nothing is ready, nothing is served.
    assert!(
        notify
            .wait_for(Duration::from_millis(500), |_, m| m.contains("READY=1"))
            .is_none(),
        "READY before the gate passed: {:?}",
        notify.seen
    );
    std::fs::write(&dep, "ok\n").unwrap();
    assert!(
        notify
            .wait_for(Duration::from_secs(10), |_, m| m.contains("READY=1"))
            .is_some(),
        "{}",
        h.describe()
    );
    let (st, body) = get(addr, "/").unwrap();
    assert_eq!(st, 200);
    assert!(body.contains("status=Primary"), "{body}");
    assert!(wait_until(Duration::from_secs(5), || {
        get(addr, "/").is_ok_and(|(_, b)| !b.contains("ticks=0\n"))
    }));
    // The dependency fails: the successor's gate fails, and so does the reload.
    std::fs::write(&dep, "down\n").unwrap();
    let (ok, out) = reload(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("dependency") && out.contains("down"), "{out}");
    let (_, body) = get(addr, "/").unwrap();
    assert!(body.contains(&format!("pid={}", h.pid())), "{body}");
    // Back up: the reload works, and the successor is primary.
    std::fs::write(&dep, "ok\n").unwrap();
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}\n{}", h.describe());
    let new = wait_new_pid_in_body(addr, h.pid());
    assert_ne!(new, h.pid());
}

fn wait_new_pid_in_body(addr: std::net::SocketAddr, old: u32) -> u32 {
    let mut seen = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        if let Ok((200, b)) = get(addr, "/")
            && let Some(p) = b.split("pid=").nth(1).and_then(|s| s.split_whitespace().next())
        {
            seen = p.parse().unwrap_or(0);
        }
        seen != 0 && seen != old
    }));
    seen
}

fn count(addr: std::net::SocketAddr) -> (u32, u64) {
    let (st, r) = get(addr, "/count").unwrap();
    assert_eq!(st, 200, "{r}");
    let b = body(&r);
    let field = |k: &str| {
        b.split(&format!("{k}="))
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {k} in {b:?}"))
    };
    (field("pid") as u32, field("count"))
}

/// state: the counter keeps counting across handoffs (the handoff channel) and across a
/// restart through the fd store (a fake store here, as systemd's would be).
#[test]
fn state_survives_handoffs_and_a_restart() {
    use std::os::fd::AsRawFd;
    let bin = example("state");
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &[&addr.to_string()])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", "16");
    sp.bin = bin.clone();
    let mut h = sp.start();
    wait_serving(addr, &h);
    let mut expected = 0;
    let mut pids = vec![];
    for round in 0..3 {
        for _ in 0..3 {
            let (pid, c) = count(addr);
            expected += 1;
            assert_eq!(c, expected, "round {round}\n{}", h.describe());
            pids.push(pid);
        }
        let (ok, out) = reload(dir.path());
        assert!(ok, "{out}");
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "three processes counted: {pids:?}");
    // A stop keeps the state in the store; the next process (what systemd would start after a
    // restart, with the store's fds) goes on counting.
    let (last, c) = count(addr);
    expected += 1;
    assert_eq!(c, expected);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(last as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_gone(last, Duration::from_secs(10)));
    n.drain_for(Duration::from_millis(100));
    let stored: Vec<(String, std::os::fd::OwnedFd)> = std::mem::take(&mut *n.store.lock().unwrap());
    let names: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"heird-state"), "{names:?}");
    let mut sp = Spawn::new(dir.path(), &[&addr.to_string()]);
    sp.bin = bin;
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h2 = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop(stored);
    wait_serving(addr, &h2);
    let (pid, c) = count(addr);
    assert_eq!(pid, h2.pid());
    assert_eq!(c, expected + 1, "{}", h2.describe());
    let _ = h.wait_timeout(Duration::from_secs(1));
}

/// admin: one socket unit passes `http` and `admin`; each listener has its own router.
#[test]
fn admin_serves_a_router_per_named_listener() {
    use std::os::fd::AsRawFd;
    let bin = example("admin");
    let dir = tempfile::tempdir().unwrap();
    let (http_fd, http) = tcp_listener();
    let (admin_fd, admin) = tcp_listener();
    let mut sp = Spawn::new(dir.path(), &[]);
    sp.bin = bin;
    sp.fds = vec![http_fd.as_raw_fd(), admin_fd.as_raw_fd()];
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "http:admin")
        .start();
    assert!(
        wait_until(Duration::from_secs(10), || get(http, "/")
            .is_ok_and(|(s, _)| s == 200)),
        "{}",
        h.describe()
    );
    let (st, r) = get(admin, "/metrics").unwrap();
    assert_eq!(st, 200, "{r}");
    assert!(body(&r).starts_with("api_requests "), "{r}");
    assert_eq!(
        get(http, "/metrics").unwrap().0,
        404,
        "the API does not serve metrics"
    );
    assert_eq!(
        get(admin, "/").unwrap().0,
        404,
        "the admin port does not serve the API"
    );
    // After a handoff, the same split, and a kept-alive admin connection moved to the successor
    // still reaches the admin router.
    let stream = std::net::TcpStream::connect(admin).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = std::io::BufReader::new(stream);
    std::io::Write::write_all(&mut w, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}\n{}", h.describe());
    assert!(wait_gone(h.pid(), Duration::from_secs(10)), "{}", h.describe());
    std::io::Write::write_all(&mut w, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, b) = read_response(&mut r);
    assert!(
        head.starts_with("HTTP/1.1 200") && b.starts_with("api_requests"),
        "{head}{b}"
    );
    assert_eq!(get(http, "/metrics").unwrap().0, 404);
}

/// The command line of an app on `heird::cli::Dispatch` (minimal): `--help` and `--version`
/// print and exit 0 instead of serving, naming the binary as started and the app's own version;
/// `reload --help` says `Usage: minimal reload`; an unknown command or flag is a usage error
/// (exit 2).
#[test]
fn minimal_answers_help_version_and_usage_errors_without_serving() {
    let bin = example("minimal");
    let run = |args: &[&str]| -> (Option<i32>, String, String) {
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "minimal {args:?} still running after 10 s (serving?): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = run(&["--help"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("Usage: minimal\n") && out.contains("reload"),
        "{out}"
    );
    let (code, out, err) = run(&["--version"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), format!("minimal {}", env!("CARGO_PKG_VERSION")));
    let (code, out, err) = run(&["reload", "--help"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("Usage: minimal reload "), "{out}");
    for args in [&["--bogus"][..], &["serve"], &["reload", "--bogus"]] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(2), "minimal {args:?}: {out}{err}");
        assert!(err.contains("Usage: minimal"), "minimal {args:?}: {err}");
    }
}

/// ws: one WebSocket (python3-websockets) across 3 handoffs: the same connection, never closed,
/// `n` counting on without a gap while `pid` changes at each handoff (the connection and `n`
/// moved to the successor).
#[test]
fn ws_moves_one_connection_across_handoffs() {
    support::python::check_python();
    let bin = example("ws");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &[&addr.to_string()]);
    sp.bin = bin;
    let h = sp.start();
    wait_serving(addr, &h);
    // Send, and after each reply send SIGUSR2 to the pid that answered until three handoffs
    // happened; every reply must carry the next n.
    let script = format!(
        r#"
import asyncio, os, signal, sys, websockets
async def main():
    ws = await websockets.connect("ws://{addr}/counter")
    pids, n, asked = [], 0, None
    while len(pids) < 4:
        await ws.send("m%d" % (n + 1))
        reply = dict(kv.split("=", 1) for kv in (await asyncio.wait_for(ws.recv(), 20)).split(" "))
        n += 1
        if int(reply["n"]) != n or reply["echo"] != "m%d" % n:
            sys.exit("gap or wrong echo: expected n=%d, got %r" % (n, reply))
        pid = int(reply["pid"])
        if not pids or pids[-1] != pid:
            pids.append(pid)
        if len(pids) < 4 and asked != pid:
            asked = pid
            os.kill(pid, signal.SIGUSR2)
        await asyncio.sleep(0.02)
    print("pids", len(set(pids)), "n", n, "closed", ws.close_code, flush=True)
    await ws.close()
asyncio.run(main())
"#
    );
    let out = Command::new(support::python::PYTHON)
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\n{}", h.describe());
    assert!(
        text.contains("pids 4 n ") && text.contains("closed None"),
        "one connection, four processes, never closed:\n{text}\n{}",
        h.describe()
    );
}

/// websocket: two chat clients (python3-websockets) hear each other; a handoff closes both
/// with 1012, and they can reconnect to the successor and chat on.
#[test]
fn websocket_chat_closes_with_1012_at_a_handoff() {
    support::python::check_python();
    let bin = example("websocket");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &[&addr.to_string()]);
    sp.bin = bin;
    let h = sp.start();
    wait_serving(addr, &h);
    // Both connect; A speaks, B hears; then B waits for the close, and A sends SIGUSR2 to the
    // server: both must see 1012. Then one reconnects and hears itself on the successor.
    let script = format!(
        r#"
import asyncio, os, signal, websockets
URL = "ws://{addr}/chat"
async def main():
    a = await websockets.connect(URL)
    b = await websockets.connect(URL)
    await a.send("hello from a")
    print("b heard", await asyncio.wait_for(b.recv(), 10), flush=True)
    os.kill({pid}, signal.SIGUSR2)
    for name, ws in (("a", a), ("b", b)):
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 20)
        except websockets.ConnectionClosed as e:
            print(name, "closed", e.rcvd.code if e.rcvd else -1, flush=True)
    c = await websockets.connect(URL)
    await c.send("again")
    print("c heard", await asyncio.wait_for(c.recv(), 10), flush=True)
    await c.close()
asyncio.run(main())
"#,
        pid = h.pid()
    );
    let out = Command::new(support::python::PYTHON)
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\n{}", h.describe());
    for line in [
        "b heard hello from a",
        "a closed 1012",
        "b closed 1012",
        "c heard again",
    ] {
        assert!(
            text.contains(line),
            "missing {line:?} in:\n{text}\n{}",
            h.describe()
        );
    }
    assert!(
        wait_gone(h.pid(), Duration::from_secs(10)),
        "the old process did not exit"
    );
}

/// tls: HTTPS on the first address, plain HTTP on the second (per-listener choice); a reload
/// rotates the certificate, and a session ticket from the old process resumes with the new one
/// (the keys were handed over); a bad certificate fails the reload visibly while the old
/// process serves on; the app's own rustls config serves too.
#[test]
fn tls_serves_https_beside_http_rotates_by_reload_and_resumes_tickets() {
    use support::tls::{client_config, connect, https_get, make_pair, request};
    let bin = example("tls");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (make_pair(dir.path(), "a", 30), make_pair(dir.path(), "b", 30));
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let (https, http) = (free_addr(), free_addr());
    let mut sp = Spawn::new(dir.path(), &[&https.to_string(), &http.to_string()])
        .env("TLS_CERT", cert.to_str().unwrap())
        .env("TLS_KEY", key.to_str().unwrap());
    sp.bin = bin.clone();
    let h = sp.start();
    let mut body_http = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            body_http = get(http, "/").map(|(_, b)| b).unwrap_or_default();
            !body_http.is_empty()
        }),
        "{}",
        h.describe()
    );
    assert!(body_http.ends_with("over http\n"), "{body_http}");
    // Trusting a and b: resumption does not look at the certificate again.
    let both = client_config(&[&a.cert_pem, &b.cert_pem], &[b"http/1.1"]);
    let only_a = client_config(&[&a.cert_pem], &[b"http/1.1"]);
    let (head, body) = https_get(https, &only_a, "/").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, format!("pid {} over https\n", h.pid()));
    // A ticket from this process (read with the response).
    let mut c = connect(https, &both).unwrap();
    assert_eq!(c.conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    request(&mut c, "/").unwrap();
    drop(c);

    // Rotation: the renewed pair in place, then a reload.
    std::fs::copy(&b.cert, &cert).unwrap();
    std::fs::copy(&b.key, &key).unwrap();
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}\n{}", h.describe());
    let only_b = client_config(&[&b.cert_pem], &[b"http/1.1"]);
    let mut new_pid = String::new();
    assert!(wait_until(Duration::from_secs(10), || {
        new_pid = https_get(https, &only_b, "/").map(|(_, b)| b).unwrap_or_default();
        !new_pid.is_empty() && !new_pid.contains(&format!("pid {} ", h.pid()))
    }));
    // A new client (no ticket to resume with) sees the new certificate only.
    let fresh_a = client_config(&[&a.cert_pem], &[b"http/1.1"]);
    assert!(
        https_get(https, &fresh_a, "/").is_err(),
        "the old certificate is still served"
    );
    // The old process's ticket resumes with the successor.
    let mut c = connect(https, &both).unwrap();
    assert_eq!(
        c.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the successor did not take the ticket keys\n{}",
        h.describe()
    );
    let (_, body) = request(&mut c, "/").unwrap();
    assert_eq!(body, new_pid);

    // A bad certificate: the reload fails with the reason, the process serving stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let (ok, out) = reload(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("tls.crt"), "{out}");
    let (_, body) = https_get(https, &only_b, "/").unwrap();
    assert_eq!(body, new_pid);

    // The app's own rustls config (HTTP/1.1 only).
    let own = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut sp = Spawn::new(own.path(), &[&addr.to_string(), &free_addr().to_string()])
        .env("TLS_CERT", a.cert.to_str().unwrap())
        .env("TLS_KEY", a.key.to_str().unwrap())
        .env("TLS_OWN_CONFIG", "1");
    sp.bin = bin;
    let h2 = sp.start();
    let h2_alpn = client_config(&[&a.cert_pem], &[b"h2", b"http/1.1"]);
    let mut served = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            served = connect(addr, &h2_alpn).ok();
            served.is_some()
        }),
        "{}",
        h2.describe()
    );
    let mut c = served.unwrap();
    assert_eq!(c.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (_, body) = request(&mut c, "/").unwrap();
    assert_eq!(body, format!("pid {} over https\n", h2.pid()));
}
