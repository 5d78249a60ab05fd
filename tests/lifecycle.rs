//! The lifecycle's rules that bugs broke once, each against the real binary: a stop during a
//! handoff, a stop after the handover, `move_connections = false`, `heird reload` retrying,
//! the control socket outside systemd, `heird stop`'s input, what a successor inherits.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

fn replace_binary(bin: &Path, script: &str) {
    let tmp = bin.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, bin).unwrap();
}

fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z')
}

/// Bug: a stop during a handoff left the successor running. A successor that has not taken
/// over is stopped and reaped before the old process exits: nothing is left serving.
#[test]
fn a_stop_during_a_handoff_leaves_nothing_running() {
    let mut s = start_heird("", true);
    let real = s.dir.path().join("heird.real");
    std::fs::copy(BIN, &real).unwrap();
    // The successor takes 3 s to start (a slow wrapper), so the stop arrives in the middle.
    replace_binary(
        &s.bin,
        &format!("#!/bin/sh\nsleep 3\nexec {} \"$@\"\n", real.display()),
    );
    let old = s.h.pid();
    signal(old, Signal::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(5), || !children(old).is_empty()),
        "no successor started\n{}",
        s.h.describe()
    );
    let successor = children(old)[0];
    signal(old, Signal::SIGTERM);
    let st = s.h.wait_timeout(Duration::from_secs(10));
    assert_eq!(st.and_then(|st| st.code()), Some(0), "{}", s.h.describe());
    assert!(
        !alive(successor),
        "successor {successor} still runs after the stop\n{}",
        s.h.describe()
    );
    // And it never comes back to serve on its own: nothing answers on the port. (The fake fd
    // store holds the listener, as systemd would: let it go.)
    s.notify.store.lock().unwrap().clear();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        TcpStream::connect(s.addr).is_err(),
        "something still serves\n{}",
        s.h.describe()
    );
    assert!(heird_pids_with(s.dir.path().to_str().unwrap()).is_empty());
}

/// The rule for a stop that reaches the old process after the handover (docs/FAULTS.md): it
/// changes nothing. The successor is not touched, and the old process finishes its requests.
#[test]
fn a_stop_after_the_handover_lets_the_old_process_finish_and_leaves_the_successor() {
    let mut s = start_heird("", false);
    let old = s.h.pid();
    let addr = s.addr;
    let stream = TcpStream::connect(addr).unwrap();
    let local = stream.local_addr().unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(b"GET /sleep?duration=1500ms HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The old process has accepted it (and so serves it) before the handoff starts.
    assert!(wait_until(Duration::from_secs(5), || accepted_by(
        old, addr, local
    )));
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    let new = wait_new_pid(addr, old, Duration::from_secs(5)).expect("successor serves");
    signal(old, Signal::SIGTERM);
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "Hello World");
    assert!(head.contains(&format!("x-heird-pid: {old}")), "{head}");
    let st = s.h.wait_timeout(Duration::from_secs(10));
    assert_eq!(st.and_then(|st| st.code()), Some(0), "{}", s.h.describe());
    assert!(alive(new), "the successor was stopped too");
    assert_eq!(info(addr)["pid"].as_u64(), Some(new as u64));
}

/// Bug: `move_connections = false` was parsed but ignored. With it, a keep-alive client gets
/// `Connection: close` on its next response after a handoff, and no connection moves.
#[test]
fn move_connections_false_closes_instead_of_moving() {
    let s = start_heird("move_connections = false\n", false);
    let stream = TcpStream::connect(s.addr).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (h1, _) = read_response(&mut r);
    assert!(!h1.to_ascii_lowercase().contains("connection: close"), "{h1}");
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    w.write_all(b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (h2, b2) = read_response(&mut r);
    assert!(h2.to_ascii_lowercase().contains("connection: close"), "{h2}");
    let v: serde_json::Value = serde_json::from_str(&b2).unwrap();
    assert_eq!(v["connection_moves"], 0, "{b2}");
    assert_eq!(
        v["pid"].as_u64(),
        Some(s.h.pid() as u64),
        "answered by the old process"
    );
}

/// Bug: `heird reload` gave up on a `retry` answer. It asks again and reports the answer of
/// the process that takes the request. A stand-in server answers `retry` first.
#[test]
fn reload_asks_again_after_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    // Answers up to three requests; gives up when the client stops asking.
    let server = std::thread::spawn(move || {
        let mut asked = 0;
        for answer in [
            "retry handed over to pid 1",
            "retry handed over to pid 2",
            "ok pid=77 generation=3",
        ] {
            let mut accepted = None;
            wait_until(Duration::from_secs(5), || {
                accepted = listener.accept().ok();
                accepted.is_some()
            });
            let Some((s, _)) = accepted else { break };
            s.set_nonblocking(false).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert_eq!(line, "reload\n");
            (&s).write_all(format!("{answer}\n").as_bytes()).unwrap();
            asked += 1;
        }
        asked
    });
    let out = Command::new(BIN)
        .args(["reload", "--timeout", "10s", "--socket"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(server.join().unwrap(), 3, "the client did not ask three times");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pid=77 generation=3"), "{text}");
}

/// Bug: without `RUNTIME_DIRECTORY` there was no control socket. Now there is one in
/// `$XDG_RUNTIME_DIR/heird/`, `heird reload --pid P` finds it, and a bad config still fails the
/// reload with the parse error.
#[test]
fn reload_by_pid_works_outside_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "").unwrap();
    let addr = free_addr();
    let mut sp = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ],
    )
    .env("XDG_RUNTIME_DIR", xdg.to_str().unwrap());
    sp.no_runtime_directory = true;
    let h = sp.start();
    wait_serving(addr, &h);
    let reload_pid = |pid: u32| {
        client_command(
            std::path::Path::new(BIN),
            &["reload", "--timeout", "20s", "--pid", &pid.to_string()],
        )
    };
    let (code, text) = reload_pid(h.pid());
    assert_eq!(code, Some(0), "{text}\n{}", h.describe());
    let new = wait_new_pid(addr, h.pid(), Duration::from_secs(5)).unwrap();
    let dir_mode = std::fs::metadata(xdg.join("heird")).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    // The successor holds the same socket, found through its pid.
    std::fs::write(&cfg, "drain_timeout = \"not a duration\"\n").unwrap();
    let (code, text) = reload_pid(new);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("drain_timeout"), "{text}");
    assert_eq!(info(addr)["pid"].as_u64(), Some(new as u64), "still serving");
}

/// A private directory that is not private is refused: no control socket, and a clear log line.
#[test]
fn a_shared_control_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let uid = nix::unistd::geteuid().as_raw();
    let shared = tmp.join(format!("heird-{uid}"));
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let addr = free_addr();
    let mut sp = Spawn::new(dir.path(), &["serve", "--listen", &addr.to_string()])
        .env("TMPDIR", tmp.to_str().unwrap());
    sp.no_runtime_directory = true;
    sp.env.push(("XDG_RUNTIME_DIR".into(), String::new()));
    let h = sp.start();
    wait_serving(addr, &h);
    assert!(h.stderr().contains("not a private directory"), "{}", h.describe());
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}

/// Bug: `heird stop --pid 4294967295` became kill(-1). Pids out of range are refused as a usage
/// error (exit 2); an empty `$MAINPID` (no main process) means there is nothing to stop.
#[test]
fn stop_refuses_pids_out_of_range_and_accepts_an_empty_mainpid() {
    for pid in ["4294967295", "2147483648", "0"] {
        let out = Command::new(BIN).args(["stop", "--pid", pid]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--pid {pid}: {err}");
        assert!(err.contains("out of range"), "{err}");
    }
    let out = Command::new(BIN).arg("stop").env("MAINPID", "").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to stop"));
}

/// Bug: the successor was exec'd with SIGPIPE ignored (Rust ignores it) and the parent's signal
/// mask. A wrapper records what it started with.
#[test]
fn the_successor_starts_with_default_signals() {
    let s = start_heird("", true);
    let real = s.dir.path().join("heird.real");
    std::fs::copy(BIN, &real).unwrap();
    let record = s.dir.path().join("signals");
    replace_binary(
        &s.bin,
        &format!(
            // Shell builtins only: the shell reads its own status, no child in between.
            "#!/bin/sh\nwhile read -r l; do case $l in SigBlk*|SigIgn*) echo \"$l\";; esac; done < /proc/$$/status > {}\nexec {} \"$@\"\n",
            record.display(),
            real.display()
        ),
    );
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&record).unwrap();
    let mask = |name: &str| {
        let v = text.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim();
        u64::from_str_radix(v, 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{text}");
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        mask("SigIgn:") & sigpipe,
        0,
        "SIGPIPE ignored in the successor: {text}"
    );
}

/// Bug: causes were printed twice (`… (os error 2): … (os error 2)`).
#[test]
fn check_prints_the_cause_once() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
