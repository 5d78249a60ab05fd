//! The systemd suite, on two systemd versions: `tests/systemd/run.sh` boots a throw-away
//! systemd as PID 1 in Linux namespaces for each scenario in `tests/systemd/scenarios/`,
//! installs this build and the units of `deploy/` there, and checks heird against the real
//! service manager (see `tests/systemd/README.md`).
//!
//! - `systemd_252_suite` boots the host's own systemd (252 on Debian 12, which CI runs).
//! - `systemd_257_suite` boots the systemd 257 of a Debian 13 root that
//!   `tests/systemd/rootfs.sh` builds with mmdebstrap on first use (it downloads Debian 13's
//!   packages from the mirror in apt's sources; the root is about 140 MB) and caches in
//!   /var/cache/heird-sandbox/trixie. When it cannot be built (no mirror reachable, no
//!   mmdebstrap), the test prints `SKIP: systemd 257 suite: <reason>` and passes (with CI set,
//!   it fails).
//!
//! Both need root. Without it (or without unshare, nsenter, curl, a systemd), `run.sh` prints
//! `SKIP: systemd suite: <reason>` and the test passes outside CI: read the output. A scenario
//! that does not apply to a version is NOT APPLICABLE (never a failure); one that cannot run
//! here (a missing tool or build) is a SKIP outside CI.
//!
//! In CI (the environment variable `CI` set and not empty) a suite that cannot run is a
//! failure, not a SKIP: CI runs as root on a machine that has everything. Every output line is
//! prefixed with the systemd version it comes from, and is written straight to stdout (not
//! captured), so progress is visible while the scenarios run.
//!
//! The two suites run at the same time when the machine has 4 or more CPUs, one after the other
//! otherwise (the scenarios put load on heird and time it); `HEIRD_SYSTEMD_PARALLEL=1` or `=0`
//! decides instead.
//!
//! Run only these with `cargo test --test systemd -- --nocapture`; pass scenario names to the
//! script directly: `HEIRD_BIN=target/debug/heird tests/systemd/run.sh reload`, and
//! `SANDBOX_ROOTFS=$(tests/systemd/rootfs.sh)` for 257.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

/// Held while a suite runs when the suites must not run at the same time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The heird binary and the load client (`cargo test` builds the examples too, into
/// target/<profile>/examples beside the binary).
fn build_output() -> (PathBuf, PathBuf) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_heird"));
    let load = bin
        .parent()
        .expect("the heird binary has a parent directory")
        .join("examples")
        .join("heird-load");
    (bin, load)
}

fn parallel() -> bool {
    match std::env::var("HEIRD_SYSTEMD_PARALLEL").as_deref() {
        Ok("1" | "yes" | "true") => true,
        Ok("0" | "no" | "false") => false,
        _ => thread::available_parallelism().is_ok_and(|n| n.get() >= 4),
    }
}

/// One line to the real stdout, bypassing the test harness's capture.
fn say(tag: &str, line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{tag} {line}");
    let _ = out.flush();
}

/// True under CI (`CI` set and not empty): a suite that cannot run fails instead of skipping.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A suite that cannot run here: SKIP (printed loudly), or under CI a failure.
fn skip_or_fail(tag: &str, what: &str, reason: &str) {
    if in_ci() {
        panic!("{tag} {what} cannot run, and CI is set (CI fails instead of skipping): {reason}");
    }
    let bar = "#".repeat(100);
    say(tag, &bar);
    say(tag, &format!("SKIP: {what}: {reason}"));
    say(tag, &bar);
}

/// What `stream` saw: the exit status, stdout (when kept), the last line on stderr, and the
/// reason of a `SKIP: systemd suite: <reason>` line on stdout.
struct Streamed {
    status: ExitStatus,
    stdout: String,
    last_err: String,
    skipped: Option<String>,
}

/// Runs `cmd` with stdout and stderr each streamed line by line with `tag` in front.
fn stream(tag: &str, cmd: &mut Command, keep_stdout: bool) -> Streamed {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let err_tag = tag.to_string();
    let err_reader = thread::spawn(move || {
        let mut last = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            say(&err_tag, &line);
            if !line.trim().is_empty() {
                last = line;
            }
        }
        last
    });
    let mut kept = String::new();
    let mut skipped = None;
    let mut stdout = child.stdout.take().expect("piped stdout");
    if keep_stdout {
        let _ = stdout.read_to_string(&mut kept);
    } else {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            say(tag, &line);
            if let Some(reason) = line.strip_prefix("SKIP: systemd suite: ") {
                skipped = Some(reason.to_string());
            }
        }
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    let last_err = err_reader.join().unwrap_or_default();
    Streamed {
        status,
        stdout: kept,
        last_err,
        skipped,
    }
}

/// Runs the whole suite against the systemd of `rootfs` (the host's when `None`).
fn run_suite(tag: &str, rootfs: Option<&Path>) {
    let (bin, load) = build_output();
    let script = project().join("tests/systemd/run.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).env("HEIRD_BIN", &bin).env("HEIRD_LOAD", &load);
    match rootfs {
        Some(root) => cmd.env("SANDBOX_ROOTFS", root),
        None => cmd.env_remove("SANDBOX_ROOTFS"),
    };

    let _serial = (!parallel()).then(|| ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()));
    let t0 = Instant::now();
    let Streamed { status, skipped, .. } = stream(tag, &mut cmd, false);
    say(
        tag,
        &format!(
            "run.sh exited with {status} after {:.1} s",
            t0.elapsed().as_secs_f64()
        ),
    );

    if let Some(reason) = skipped
        && status.success()
    {
        skip_or_fail(tag, "systemd suite", &reason);
    }
    if !status.success() && !load.exists() {
        panic!(
            "{tag} {} exited with {status}: the load client {} is missing; run `cargo build --examples` \
             (a `cargo test --test systemd` alone does not build the examples)",
            script.display(),
            load.display()
        );
    }
    assert!(
        status.success(),
        "{tag} {cmd:?} exited with {status}; the FAIL lines above name the scenarios, with \
         `systemctl status` and the journal of each failed boot"
    );
}

/// The host's systemd: 252 on Debian 12.
#[test]
fn systemd_252_suite() {
    let tag = "[systemd 252 suite]";
    if let Ok(out) = Command::new("/lib/systemd/systemd").arg("--version").output() {
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        if !first.starts_with("systemd 252 ") {
            say(
                tag,
                &format!("NOTE: the host's systemd is '{first}', not 252: this runs that one"),
            );
        }
    }
    run_suite(tag, None);
}

/// Debian 13's systemd 257, from a root built (once) by tests/systemd/rootfs.sh.
#[test]
fn systemd_257_suite() {
    let tag = "[systemd 257 suite]";
    let script = project().join("tests/systemd/rootfs.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg("trixie");
    let Streamed {
        status,
        stdout,
        last_err: reason,
        ..
    } = stream(tag, &mut cmd, true);
    let root = PathBuf::from(stdout.trim());
    match status.code() {
        Some(0) if root.join("lib/systemd/systemd").exists() => {}
        Some(3) => {
            skip_or_fail(tag, "systemd 257 suite", &format!("no Debian 13 root: {reason}"));
            return;
        }
        _ => panic!(
            "{tag} {} exited with {status} (stdout {stdout:?}): {reason}",
            script.display()
        ),
    }
    run_suite(tag, Some(&root));
}
