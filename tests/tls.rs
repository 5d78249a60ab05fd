//! HTTPS: clients nobody here wrote (curl, `openssl s_client`) over h1 and h2, certificate
//! rotation by a reload under load, a bad pair that fails the reload, `heird check`, systemd
//! credentials, TLS on named listeners only, and bad input on a TLS port. Certificates are made
//! by each test (rcgen).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use support::proc::*;
use support::tls::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

/// curl against `https://localhost:<port><path>` trusting `ca`; returns (success, output).
fn curl(addr: SocketAddr, ca: &std::path::Path, path: &str, flags: &[&str]) -> (bool, String) {
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15", "--resolve", &resolve, "--cacert"])
        .arg(ca)
        .args(flags)
        .arg(format!("https://localhost:{}{path}", addr.port()))
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

/// `heird reload` for the service in `dir`: (exit code, stdout+stderr).
fn reload_code(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["reload", "--timeout", "20s", "--socket"])
        .arg(dir.join("control.sock"))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits until `pred` holds, or fails with `what` and the process's stderr.
fn wait_until(h: &Heird, d: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if pred() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}\n{}", h.describe());
}

#[test]
fn curl_and_openssl_negotiate_h1_and_h2_over_tls_1_2_and_1_3() {
    let (s, a) = start_tls("");
    for (flags, protocol) in [
        (&["--http2"][..], "HTTP/2.0"),
        (&["--http1.1"][..], "HTTP/1.1"),
        (&["--http2", "--tlsv1.2", "--tls-max", "1.2"][..], "HTTP/2.0"),
        (&["--http1.1", "--tlsv1.2", "--tls-max", "1.2"][..], "HTTP/1.1"),
    ] {
        let mut f = flags.to_vec();
        f.extend(["-w", "\n%{http_version} %{ssl_verify_result}"]);
        let (ok, out) = curl(s.addr, &a.cert, "/info", &f);
        assert!(ok, "curl {flags:?}: {out}\n{}", s.h.describe());
        let (body, tail) = out.rsplit_once('\n').unwrap();
        assert_eq!(json(body)["protocol"], protocol, "curl {flags:?}: {out}");
        let expect = if protocol == "HTTP/2.0" { "2 0" } else { "1.1 0" };
        assert_eq!(tail, expect, "curl {flags:?}: {out}");
    }
    // openssl s_client offering h2 only: the server picks h2, and the chain verifies.
    let ca = a.cert.to_str().unwrap();
    let out = s_client(
        s.addr,
        &["-servername", "localhost", "-CAfile", ca, "-alpn", "h2"],
        b"",
    );
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // ... and http/1.1, with a request on it.
    let out = s_client(
        s.addr,
        &[
            "-servername",
            "localhost",
            "-CAfile",
            ca,
            "-alpn",
            "http/1.1",
            "-quiet",
        ],
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.contains("HTTP/1.1 200") && out.contains("\r\n\r\nok"),
        "{out}"
    );
    // A client that offers no ALPN at all gets HTTP/1.1.
    let out = s_client(
        s.addr,
        &["-servername", "localhost", "-CAfile", ca, "-quiet"],
        b"GET /info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(out.contains("\"protocol\":\"HTTP/1.1\""), "{out}");
    assert_eq!(served_fingerprint(s.addr), a.sha256);
}

#[test]
fn a_reload_rotates_the_certificate_under_load_with_no_failed_request_and_tls_connections_never_move() {
    // A long idle grace keeps the old process's idle TLS connection open after the handoff, so
    // that its next request shows what a drain does to it.
    let (s, a) = start_tls("idle_close_grace = \"20s\"\n");
    let old = s.h.pid();
    assert_eq!(served_fingerprint(s.addr), a.sha256);
    let mut keep = connect(s.addr, &s.client).unwrap();
    let (_, body) = request(&mut keep, "/info").unwrap();
    assert_eq!(json(&body)["pid"].as_u64(), Some(old as u64));

    let b = make_pair(s.dir.path(), "b", 90);
    let both = client_config(&[&a.cert_pem, &b.cert_pem], &[b"http/1.1"]);
    let mut cfg = support::load::LoadConfig::new(s.addr);
    cfg.tls = Some(both.clone());
    cfg.keepalive_clients = 4;
    cfg.newconn_clients = 2;
    let load = support::load::start(cfg);
    assert!(
        load.wait_until(Duration::from_secs(10), |st| st.ok > 200),
        "the TLS load never warmed up: {:?}\n{}",
        load.snapshot().errors,
        s.h.describe()
    );

    // Rotate: the new pair replaces the files the service was started with.
    std::fs::rename(&b.cert, &a.cert).unwrap();
    std::fs::rename(&b.key, &a.key).unwrap();
    let (code, out) = reload_code(s.dir.path());
    assert_eq!(code, Some(0), "{out}\n{}", s.h.describe());

    // The idle connection of the old process is answered there, with `Connection: close`
    // (it cannot move: its TLS state lives in the old process), then closed.
    let (head, body) = request(&mut keep, "/info").unwrap();
    assert_eq!(json(&body)["pid"].as_u64(), Some(old as u64), "{head}");
    assert_eq!(json(&body)["connection_moves"], 0);
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert!(request(&mut keep, "/").is_err(), "the old connection is closed");

    // New connections get the new certificate from the successor.
    assert_eq!(served_fingerprint(s.addr), b.sha256);
    let b_only = client_config(&[&b.cert_pem], &[b"http/1.1"]);
    let v = https_info(s.addr, &b_only);
    assert_ne!(v["pid"].as_u64(), Some(old as u64), "{v}");
    // (b's files now carry a's names.)
    let (ok, out) = curl(s.addr, &a.cert, "/healthz", &["--http2"]);
    assert!(ok && out == "ok", "{out}");

    let at = load.snapshot().ok;
    assert!(
        load.wait_until(Duration::from_secs(10), |st| st.ok > at + 200),
        "the load stalled after the handoff"
    );
    let stats = load.stop();
    assert_eq!(stats.failed(), 0, "{:?}\n{}", stats.errors, s.h.describe());
    assert!(stats.ok > 400, "{}", stats.ok);
    assert!(
        wait_gone(old, Duration::from_secs(15)),
        "the old process never exited"
    );
    let log = s.h.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_reload_with_a_bad_or_mismatched_pair_fails_and_the_old_process_keeps_its_certificate() {
    let (s, a) = start_tls("");
    let pid = s.h.pid();
    let a_key = std::fs::read(&a.key).unwrap();
    let b = make_pair(s.dir.path(), "b", 90);

    // b's key beside a's certificate.
    std::fs::copy(&b.key, &a.key).unwrap();
    let (code, out) = reload_code(s.dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not match the certificate"), "{out}");
    assert_eq!(https_info(s.addr, &s.client)["pid"].as_u64(), Some(pid as u64));
    assert_eq!(served_fingerprint(s.addr), a.sha256);

    // Not a certificate at all.
    std::fs::write(&a.key, &a_key).unwrap();
    std::fs::write(&a.cert, "not a certificate\n").unwrap();
    let (code, out) = reload_code(s.dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no certificate in it"), "{out}");
    // A file that is gone.
    std::fs::remove_file(&a.cert).unwrap();
    let (code, out) = reload_code(s.dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot read tls certificate"), "{out}");
    assert_eq!(https_info(s.addr, &s.client)["pid"].as_u64(), Some(pid as u64));
    assert_eq!(served_fingerprint(s.addr), a.sha256);
}

/// `heird check` with `args`: (exit code, stdout, stderr).
fn check(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("HEIRD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_the_pair_and_warns_about_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = make_pair(d, "good", 90);
    let soon = make_pair(d, "soon", 5);
    let expired = make_pair(d, "expired", -1);
    let other = make_pair(d, "other", 90);
    let args = |p: &Pair| {
        vec![
            "--tls-cert".to_string(),
            p.cert.display().to_string(),
            "--tls-key".into(),
            p.key.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| check(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);

    let (code, out, err) = run(args(&good));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("match") && out.contains(&good.sha256), "{out}");
    assert!(!err.contains("warning"), "{err}");

    let (code, out, err) = run(args(&soon));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("warning") && err.contains("expires in 4 days"),
        "{err}"
    );

    let (code, out, err) = run(args(&expired));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("warning") && err.contains("expired on"), "{err}");

    let mut mismatched = args(&good);
    mismatched[3] = other.key.display().to_string();
    let (code, out, err) = run(mismatched);
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(err.contains("does not match"), "{err}");

    // Half a pair on the command line is a usage error.
    let (code, _, err) = check(&["--tls-cert", good.cert.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");

    // The same from the config file, with paths relative to it.
    let cfg = d.join("heird.toml");
    std::fs::write(&cfg, "[tls]\ncert = \"good.crt\"\nkey = \"other.key\"\n").unwrap();
    let (code, _, err) = check(&["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("other.key") && err.contains("does not match"),
        "{err}"
    );

    // systemd credentials, without any path.
    let creds = d.join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(&expired.cert, creds.join("tls.crt")).unwrap();
    std::fs::copy(&expired.key, creds.join("tls.key")).unwrap();
    let (code, out, err) = check(&[], &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("creds/tls.crt") && out.contains(&expired.sha256),
        "{out}"
    );
    assert!(err.contains("expired on"), "{err}");
}

#[test]
fn credentials_and_tls_on_named_listeners_only() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let pair = make_pair(&creds, "tls", 90);
    let cfg = dir.path().join("heird.toml");
    let start = |listeners: &str| {
        std::fs::write(&cfg, format!("[tls]\nlisteners = [{listeners}]\n")).unwrap();
        let (http, http_addr) = tcp_listener();
        let (https, https_addr) = tcp_listener();
        let mut sp = Spawn::new(dir.path(), &["serve", "--config", cfg.to_str().unwrap()]);
        sp.fds = vec![http.as_raw_fd(), https.as_raw_fd()];
        sp.listen_pid_self = true;
        let h = sp
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", "http:https")
            .env("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())
            .start();
        (h, http_addr, https_addr)
    };
    let (h, http, https) = start("\"https\"");
    wait_serving(http, &h);
    let client = client_config(&[&pair.cert_pem], &[b"http/1.1"]);
    wait_serving_tls(https, &client, &h);
    let (st, r) = get(https, "/").unwrap();
    assert_eq!(st, 400, "plain HTTP on the TLS listener: {r}");
    assert!(
        https_get(http, &client, "/").is_err(),
        "TLS on the plain listener"
    );
    assert!(h.stderr().contains("tls.crt"), "{}", h.describe());
    drop(h);

    // A name that is no listener is an error, not plain HTTP where HTTPS was meant.
    let (mut h, _, _) = start("\"htps\"");
    let st = h.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some_and(|s| !s.success()), "{}", h.describe());
    assert!(h.stderr().contains("\"htps\""), "{}", h.describe());
}

/// A connection that sends the start of a TLS record announcing 512 bytes, then nothing.
fn stalled_handshake(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    s
}

/// True when the server closed `s` (EOF or reset) within `d`.
fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    s.set_read_timeout(Some(d)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn bad_input_on_a_tls_port_gets_a_log_line_each_and_the_others_are_served() {
    let (s, _a) = start_tls("[tls]\nhandshake_timeout = \"1s\"\n");
    // Plain HTTP: a 400 in plain text.
    let (st, r) = get(s.addr, "/").unwrap();
    assert_eq!(st, 400, "{r}");
    assert!(body(&r).contains("speaks HTTPS"), "{r}");
    // Garbage that is not a TLS record.
    let mut g = TcpStream::connect(s.addr).unwrap();
    g.write_all(b"\x00\x01\x02garbage\r\n\r\n").unwrap();
    assert!(closed_within(&mut g, Duration::from_secs(5)));
    // A TLS record that is no ClientHello.
    let mut g = TcpStream::connect(s.addr).unwrap();
    g.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    assert!(closed_within(&mut g, Duration::from_secs(5)));
    // An unknown server name: served (the client decides), and logged.
    let out = s_client(s.addr, &["-servername", "unknown.example"], b"");
    assert!(out.contains("BEGIN CERTIFICATE"), "{out}");
    // A client that stops in the middle of the handshake is closed at the handshake timeout,
    // and others are served meanwhile.
    let mut stalled: Vec<TcpStream> = (0..20).map(|_| stalled_handshake(s.addr)).collect();
    assert_eq!(
        https_info(s.addr, &s.client)["pid"].as_u64(),
        Some(s.h.pid() as u64)
    );
    for c in &mut stalled {
        assert!(closed_within(c, Duration::from_secs(10)), "{}", s.h.describe());
    }
    let log = s.h.stderr();
    for line in [
        "tls: plain HTTP sent to a TLS listener; answered 400",
        "tls: not a TLS handshake; closed",
        "tls: not a valid ClientHello; closed",
        "tls: server name not in the certificate; serving it anyway",
        "sni=unknown.example",
        "tls: ClientHello incomplete at the handshake timeout; closed",
    ] {
        assert!(log.contains(line), "no log line {line:?}\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn two_hundred_stalled_handshakes_neither_hold_a_drain_nor_keep_their_fds() {
    // A drain deadline far longer than the handshake timeout: the stalled clients must not be
    // what ends the drain.
    let (s, _a) = start_tls("drain_timeout = \"120s\"\n[tls]\nhandshake_timeout = \"3s\"\n");
    let pid = s.h.pid();
    // (`base` may still count the connection that saw the server ready: hence 190, not 200.)
    let base = fd_table(pid).len();
    // Half stop inside the ClientHello, half never send a byte.
    let mut clients: Vec<TcpStream> = (0..100).map(|_| stalled_handshake(s.addr)).collect();
    clients.extend((0..100).map(|_| TcpStream::connect(s.addr).unwrap()));
    wait_until(
        &s.h,
        Duration::from_secs(10),
        "the server holds the 200 connections",
        || fd_table(pid).len() >= base + 190,
    );
    // Without a drain, the handshake timeout frees them.
    wait_until(
        &s.h,
        Duration::from_secs(15),
        "the stalled connections are closed",
        || fd_table(pid).len() < base + 10,
    );
    for c in &mut clients {
        assert!(closed_within(c, Duration::from_secs(1)));
    }

    // At a handoff, 200 more do not hold the old process.
    let mut clients: Vec<TcpStream> = (0..100).map(|_| stalled_handshake(s.addr)).collect();
    clients.extend((0..100).map(|_| TcpStream::connect(s.addr).unwrap()));
    wait_until(
        &s.h,
        Duration::from_secs(10),
        "the server holds the 200 connections",
        || fd_table(pid).len() >= base + 190,
    );
    let (code, out) = reload_code(s.dir.path());
    assert_eq!(code, Some(0), "{out}");
    let t0 = Instant::now();
    assert!(
        wait_gone(pid, Duration::from_secs(30)),
        "the old process is still draining"
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    let v = https_info(s.addr, &s.client);
    assert_ne!(v["pid"].as_u64(), Some(pid as u64));
    drop(clients);
}

/// `openssl s_client` with a session file: `-sess_out` (save) or `-sess_in` (resume); returns
/// ("New" or "Reused", the pid that answered `/info`).
fn s_client_session(
    addr: SocketAddr,
    ca: &str,
    flag: &str,
    file: &std::path::Path,
    tls12: bool,
) -> (String, String) {
    let mut args = vec![
        "-servername",
        "localhost",
        "-CAfile",
        ca,
        flag,
        file.to_str().unwrap(),
    ];
    if tls12 {
        args.push("-tls1_2");
    }
    let out = s_client(addr, &args, b"GET /info HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let how = out
        .lines()
        .find(|l| l.starts_with("New, ") || l.starts_with("Reused, "))
        .unwrap_or_else(|| panic!("no New/Reused line: {out}"))
        .to_string();
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("x-heird-pid: "))
        .unwrap_or_else(|| panic!("no x-heird-pid: {out}"))
        .trim()
        .to_string();
    (how, pid)
}

#[test]
fn a_session_ticket_from_the_old_process_resumes_with_the_successor() {
    let (s, a) = start_tls("");
    let ca = a.cert.to_str().unwrap();
    let old = s.h.pid().to_string();
    let (f13, f12) = (s.dir.path().join("s13"), s.dir.path().join("s12"));
    for (f, tls12) in [(&f13, false), (&f12, true)] {
        let (how, pid) = s_client_session(s.addr, ca, "-sess_out", f, tls12);
        assert!(how.starts_with("New"), "{how}");
        assert_eq!(pid, old);
    }
    // Within the process, of course.
    let (how, _) = s_client_session(s.addr, ca, "-sess_in", &f13, false);
    assert!(how.starts_with("Reused, TLSv1.3"), "{how}");

    let (code, out) = reload_code(s.dir.path());
    assert_eq!(code, Some(0), "{out}");
    let new = wait_new_pid_tls(&s, &old);
    for (f, tls12, version) in [(&f13, false, "TLSv1.3"), (&f12, true, "TLSv1.2")] {
        let (how, pid) = s_client_session(s.addr, ca, "-sess_in", f, tls12);
        assert_eq!(pid, new, "answered by the successor");
        assert!(
            how.starts_with(&format!("Reused, {version}")),
            "{how}\n{}",
            s.h.describe()
        );
    }
    assert!(
        s.h.stderr().contains("session_ticket_keys=the predecessor"),
        "{}",
        s.h.describe()
    );

    // A process that did not inherit the keys cannot resume it: the test can tell.
    let (other, _) = start_tls("");
    let (how, _) = s_client_session(other.addr, ca, "-sess_in", &f13, false);
    assert!(how.starts_with("New"), "{how}");
}

/// Waits until `/info` over HTTPS reports a pid other than `old`; returns it.
fn wait_new_pid_tls(s: &Https, old: &str) -> String {
    let mut new = String::new();
    wait_until(&s.h, Duration::from_secs(10), "the successor answers", || {
        let v = https_info(s.addr, &s.client);
        new = v["pid"].to_string();
        new != old
    });
    new
}

#[test]
fn session_ticket_keys_wait_in_the_fd_store_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "a", 90);
    let ca = pair.cert.to_str().unwrap();
    let client = client_config(&[&pair.cert_pem], &[b"http/1.1"]);
    let mut n = FakeNotify::new(dir.path());
    let addr = free_addr();
    let tls_args = [
        "--tls-cert",
        pair.cert.to_str().unwrap(),
        "--tls-key",
        pair.key.to_str().unwrap(),
    ];
    let mut args = vec!["serve", "--listen"];
    let addr_s = addr.to_string();
    args.push(&addr_s);
    args.extend(tls_args);
    let mut h = Spawn::new(dir.path(), &args)
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    wait_serving_tls(addr, &client, &h);
    n.wait_for(Duration::from_secs(5), |_, m| {
        m.contains("FDNAME=tls-ticket-keys")
    })
    .unwrap_or_else(|| panic!("keys never stored: {:?}\n{}", n.seen, h.describe()));
    let sess = dir.path().join("sess");
    let (how, first) = s_client_session(addr, ca, "-sess_out", &sess, false);
    assert!(how.starts_with("New"), "{how}");

    // A stop (what `systemctl restart` does first), then a start with what the store holds,
    // the way systemd passes it back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        h.wait_timeout(Duration::from_secs(15))
            .is_some_and(|s| s.success()),
        "{}",
        h.describe()
    );
    let stored: Vec<(String, std::os::fd::OwnedFd)> = n
        .store
        .lock()
        .unwrap()
        .iter()
        .map(|(name, fd)| (name.clone(), fd.try_clone().unwrap()))
        .collect();
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"tls-ticket-keys"), "{names:?}");
    let mut sp = Spawn::new(dir.path(), &args);
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h2 = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop(stored);
    wait_serving_tls(addr, &client, &h2);
    let (how, pid) = s_client_session(addr, ca, "-sess_in", &sess, false);
    assert_ne!(pid, first, "a new process answers");
    assert!(how.starts_with("Reused, TLSv1.3"), "{how}\n{}", h2.describe());
    assert!(
        h2.stderr()
            .contains("session ticket keys taken from the fd store"),
        "{}",
        h2.describe()
    );
    // The keys stay in the store for the next restart.
    n.drain_for(Duration::from_millis(200));
    assert!(
        n.store
            .lock()
            .unwrap()
            .iter()
            .any(|(name, _)| name == "tls-ticket-keys"),
        "{:?}",
        n.seen
    );
}
