//! Python's `websockets` (python3-websockets) as a WebSocket client nobody here wrote: Debian's
//! /usr/bin/python3 runs tests/clients/ws_client.py (the `python3` on PATH may be another build,
//! without Debian's modules).
#![allow(dead_code)]

use std::process::Command;

use super::deps;

pub const PYTHON: &str = "/usr/bin/python3";
pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_client.py");

/// Makes sure Debian's Python has the library: installs python3-websockets as root when it is
/// missing (tests/support/deps.rs); panics naming the package otherwise.
pub fn check_python() {
    deps::require(
        &format!("Debian's {PYTHON} with python3-websockets"),
        &["python3-websockets"],
        || deps::succeeds(Command::new(PYTHON).args(["-c", "import websockets"])),
    );
}
