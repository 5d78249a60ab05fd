//! Outside systemd, the pid moves at every handoff: `--pid-file` keeps one file naming the
//! process to address (the primary, or the supervisor), as nginx's and HAProxy's `-p` do, and the
//! last stop removes it and the control socket's file.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;

/// The pid the file names, or `None` while it does not exist.
fn named(pid_file: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("pid file holds {text:?}")),
    )
}

/// The files in heird's private directory (`$XDG_RUNTIME_DIR/heird`).
fn private_files(xdg: &Path) -> Vec<String> {
    std::fs::read_dir(xdg.join("heird"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The one control socket in the private directory.
fn control_socket(xdg: &Path) -> PathBuf {
    let socks: Vec<String> = private_files(xdg)
        .into_iter()
        .filter(|n| n.starts_with("control-"))
        .collect();
    assert_eq!(socks.len(), 1, "{socks:?}");
    xdg.join("heird").join(&socks[0])
}

fn reload_socket(socket: &Path) -> (bool, String) {
    let (code, text) = client(
        Path::new("/nonexistent"),
        &["reload", "--timeout", "20s", "--socket", socket.to_str().unwrap()],
    );
    (code == Some(0), text)
}

/// `heird ARGS` as run from a shell (no `$RUNTIME_DIRECTORY`, no `$MAINPID`), with `xdg` as
/// `$XDG_RUNTIME_DIR`; returns the exit code and stdout + stderr.
fn client(xdg: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("MAINPID")
        .env("XDG_RUNTIME_DIR", xdg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A heird started from a shell (no `$RUNTIME_DIRECTORY`), its private directory in the test's.
fn start(dir: &Path, pid_file: &Path, extra: &[&str]) -> (Heird, std::net::SocketAddr) {
    let addr = free_addr();
    let mut args = vec!["serve", "--listen"];
    let a = addr.to_string();
    args.push(&a);
    args.extend(["--pid-file", pid_file.to_str().unwrap()]);
    args.extend(extra);
    let mut sp = Spawn::new(dir, &args).env("XDG_RUNTIME_DIR", dir.to_str().unwrap());
    sp.no_runtime_directory = true;
    let h = sp.start();
    wait_serving(addr, &h);
    (h, addr)
}

/// The file names the first process once it serves, then each successor by the time `reload`
/// answers; SIGTERM to the pid it names stops the service, and the stop removes the pid file
/// and the control socket's file, which a successor inherited from the first process.
#[test]
fn the_pid_file_follows_the_primary_and_the_last_stop_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("app.pid");
    let (h, addr) = start(dir.path(), &pid_file, &[]);
    assert!(
        wait_until(Duration::from_secs(5), || named(&pid_file) == Some(h.pid())),
        "pid file {:?}, first pid {}\n{}",
        named(&pid_file),
        h.pid(),
        h.describe()
    );
    let socket = control_socket(dir.path());
    let mut pid = h.pid();
    for round in 0..2 {
        // By the socket's path, then with nothing at all: the one live socket in the private
        // directory (named after the first pid, gone since).
        let (ok, out) = if round == 0 {
            reload_socket(&socket)
        } else {
            let (code, out) = client(dir.path(), &["reload", "--timeout", "20s"]);
            (code == Some(0), out)
        };
        assert!(ok, "round {round}: {out}\n{}", h.describe());
        let new: u32 = out
            .split("pid=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {out:?}"));
        assert_ne!(new, pid);
        // Right when reload answers, not eventually.
        assert_eq!(named(&pid_file), Some(new), "round {round}\n{}", h.describe());
        assert!(wait_gone(pid, Duration::from_secs(10)), "{}", h.describe());
        assert_eq!(
            named(&pid_file),
            Some(new),
            "the old process's exit left it alone"
        );
        pid = new;
    }
    assert_eq!(wait_new_pid(addr, 0, Duration::from_secs(5)), Some(pid));
    // The pid file is the handle: reload by it, then stop by it.
    let pf = pid_file.to_str().unwrap();
    let (code, out) = client(
        Path::new("/nonexistent"),
        &["reload", "--timeout", "20s", "--pid-file", pf],
    );
    assert_eq!(code, Some(0), "{out}\n{}", h.describe());
    assert!(wait_gone(pid, Duration::from_secs(10)), "{}", h.describe());
    pid = named(&pid_file).expect("the successor is named");
    let (code, out) = client(
        Path::new("/nonexistent"),
        &["stop", "--timeout", "20s", "--pid-file", pf],
    );
    assert_eq!(code, Some(0), "{out}\n{}", h.describe());
    assert!(wait_gone(pid, Duration::from_secs(10)), "{}", h.describe());
    assert!(
        !pid_file.exists(),
        "the last stop removes the pid file\n{}",
        h.describe()
    );
    assert_eq!(
        private_files(dir.path()),
        Vec::<String>::new(),
        "the last stop (of a successor) removes the control socket\n{}",
        h.describe()
    );
}

/// Under `--supervise` the file names the supervisor, whose pid never moves; its workers leave
/// it (and the control socket's file, which is the supervisor's) alone, and the supervisor's exit
/// removes both.
#[test]
fn under_a_supervisor_the_pid_file_names_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("app.pid");
    let (mut h, addr) = start(dir.path(), &pid_file, &["--supervise"]);
    assert!(
        wait_until(Duration::from_secs(5), || named(&pid_file) == Some(h.pid())),
        "{}",
        h.describe()
    );
    let socket = control_socket(dir.path());
    let worker = wait_new_pid(addr, h.pid(), Duration::from_secs(5)).unwrap();
    let (ok, out) = reload_socket(&socket);
    assert!(ok, "{out}\n{}", h.describe());
    assert!(wait_gone(worker, Duration::from_secs(10)), "{}", h.describe());
    assert_eq!(named(&pid_file), Some(h.pid()), "{}", h.describe());
    assert!(
        socket.exists(),
        "the worker's exit leaves the supervisor's socket"
    );
    kill(Pid::from_raw(h.pid() as i32), Signal::SIGTERM).unwrap();
    let st = h.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", h.describe());
    assert!(!pid_file.exists(), "{}", h.describe());
    assert!(!socket.exists(), "{}", h.describe());
}

/// `reload` with no pid and no `$MAINPID` from a shell: with no service running, or with two,
/// it cannot tell which is meant, a usage error (exit 2) that says so; so is `stop` with no pid.
#[test]
fn without_a_pid_none_or_several_services_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = client(dir.path(), &["reload"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no heird service of this user runs here"), "{out}");
    let (code, out) = client(dir.path(), &["stop"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no pid"), "{out}");
    let missing = dir.path().join("none.pid");
    let (code, out) = client(dir.path(), &["reload", "--pid-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("none.pid") && out.contains("is the service running"),
        "{out}"
    );
    let (h1, _) = start(dir.path(), &dir.path().join("one.pid"), &[]);
    let (h2, _) = start(dir.path(), &dir.path().join("two.pid"), &[]);
    let (code, out) = client(dir.path(), &["reload"]);
    assert_eq!(code, Some(2), "{out}\n{}\n{}", h1.describe(), h2.describe());
    assert!(
        out.contains("2 heird services") && out.contains(&format!("control-{}.sock", h1.pid())),
        "{out}"
    );
    // Killed, the second leaves its socket's file behind; a file nobody listens on is not a
    // service, so the first is the one.
    kill(Pid::from_raw(h2.pid() as i32), Signal::SIGKILL).unwrap();
    assert!(wait_gone(h2.pid(), Duration::from_secs(10)));
    assert_eq!(
        private_files(dir.path())
            .iter()
            .filter(|n| n.starts_with("control-"))
            .count(),
        2
    );
    let (code, out) = client(dir.path(), &["reload", "--timeout", "20s"]);
    assert_eq!(code, Some(0), "{out}\n{}", h1.describe());
    assert!(
        wait_gone(h1.pid(), Duration::from_secs(10)),
        "the first one handed over"
    );
}
