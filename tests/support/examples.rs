//! The example programs (examples/), built once per test binary, as a user builds them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, next to the test's own binary. `cargo test` builds the
/// examples, `cargo test --test NAME` does not: build them all once, before any test runs one (a
/// build while another test's example runs would replace the binary a successor is about to
/// exec).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join(name);
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--examples"]);
        if cfg!(feature = "fault-injection") {
            cmd.args(["--features", "fault-injection"]);
        }
        match cmd.status() {
            Ok(st) if st.success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        built.is_ok() && p.exists(),
        "cannot build example {name}: {built:?}"
    );
    p
}
