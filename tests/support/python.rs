//! Python's `websockets` (python3-websockets) as a WebSocket client nobody here wrote: Debian's
//! /usr/bin/python3 runs tests/clients/ws_client.py (the `python3` on PATH may be another build,
//! without Debian's modules).
#![allow(dead_code)]

use std::process::Command;

pub const PYTHON: &str = "/usr/bin/python3";
pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_client.py");

/// Panics, naming what to install, when Python or the library is missing.
pub fn check_python() {
    let probe = Command::new(PYTHON).args(["-c", "import websockets"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs Debian's {PYTHON} with python3-websockets (apt-get install python3-websockets): {probe:?}"
    );
}
