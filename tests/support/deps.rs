//! What a test needs from the machine beyond Rust (a client nobody here wrote, a tool), as a
//! Debian package: `require` probes for it the way the test uses it and, when it is missing,
//! installs it as root through tests/support/deps.sh (apt-get, once across every test binary
//! running at the same time, with a line on stderr saying so), or fails naming the package.
#![allow(dead_code)]

use std::process::Command;

/// The installer that the tests, tests/systemd/run.sh and .ci/run share.
pub const INSTALLER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/deps.sh");

/// Makes sure `what` (in the words of the failure message) is there: `present` probes for it;
/// when it says no, as root `packages` are installed with apt-get and `present` must say yes
/// afterwards. Panics naming the packages otherwise (not root, no network, apt-get failed).
pub fn require(what: &str, packages: &[&str], present: impl Fn() -> bool) {
    if present() {
        return;
    }
    let install = format!("apt-get install {}", packages.join(" "));
    assert!(
        is_root(),
        "this test needs {what} ({install}); it is missing, and the tests install it only when \
         run as root"
    );
    // deps.sh writes its lines (and apt-get's output when it fails) to the real stderr, past
    // the test harness's capture, so that an install is seen.
    let run = Command::new("bash").arg(INSTALLER).args(packages).status();
    assert!(
        present(),
        "this test needs {what} ({install}); it is still missing after `{INSTALLER} {}` ({run:?}; \
         its output is above)",
        packages.join(" ")
    );
}

/// The effective user is root (from /proc/self/status: `Uid: real effective saved fs`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// `cmd` runs and exits 0 (its output is discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}
