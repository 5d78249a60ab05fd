//! The systemd suite: `tests/systemd/run.sh` boots a throw-away systemd as PID 1 in Linux
//! namespaces for each scenario in `tests/systemd/scenarios/`, installs this build and the units
//! of `deploy/` there, and checks heird against the real service manager.
//!
//! It needs root. Without it (or without unshare, nsenter, curl, a systemd), the script prints
//! `SKIP: systemd suite: <reason>` and this test passes: read the output. Run only this suite
//! with `cargo test --test systemd -- --nocapture`; pass scenario names to the script directly:
//! `HEIRD_BIN=target/debug/heird tests/systemd/run.sh reload`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn systemd_suite() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_heird"));
    // `cargo test` builds the examples too, into target/<profile>/examples beside the binary.
    let load = bin
        .parent()
        .expect("the heird binary has a parent directory")
        .join("examples")
        .join("heird-load");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/systemd/run.sh");

    // The script's output goes straight to this process's stdout/stderr (not captured by the
    // test harness), so progress is visible while the scenarios run.
    let mut cmd = Command::new("bash");
    cmd.arg(&script).env("HEIRD_BIN", &bin).env("HEIRD_LOAD", &load);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));

    if !status.success() && !load.exists() {
        panic!(
            "{} exited with {status}: the load client {} is missing; run `cargo build --examples` \
             (a `cargo test --test systemd` alone does not build the examples)",
            script.display(),
            load.display()
        );
    }
    assert!(
        status.success(),
        "{cmd:?} exited with {status}; the FAIL lines above name the scenarios, with \
         `systemctl status` and the journal of each failed boot"
    );
}
