//! A container root for podman, made offline (no registry is reachable here): the heird binary
//! the tests are built with, as `/heird`, and only what it links (tests/support/image.sh, which
//! the systemd scenario and the container benchmark use too). Include with
//! `#[path = "support/image.rs"] mod image;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The script that makes the directory.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/image.sh");

/// A root directory for `podman run --rootfs` holding `bin` as `/heird`: made (again) once per
/// test binary run, in Cargo's per-target temporary directory, and shared by its tests, which
/// only read it. image.sh replaces the binary by a rename, so a container of another run that
/// still uses the old one keeps it.
pub fn rootfs(bin: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("podman-root");
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(&dir)
            .arg(bin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash {SCRIPT} {} {bin}: {}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}
