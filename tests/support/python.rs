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

/// `ws_client.py steady`: N connections to `ws://ADDR/ws`, each echoing for SECS seconds; its
/// one JSON summary line comes on the child's stdout.
pub fn steady(addr: std::net::SocketAddr, n: u32, secs: u32) -> std::process::Child {
    check_python();
    Command::new(PYTHON)
        .args([CLIENT, "steady"])
        .arg(format!("ws://{addr}/ws"))
        .args([n.to_string(), secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
