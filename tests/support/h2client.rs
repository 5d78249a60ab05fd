//! Go's x/net/http2 Transport as an HTTP/2 load client nobody here wrote
//! (tests/clients/h2retry): it retries a stream the server did not process on a new
//! connection, as browsers do (RFC 9113 §6.8), so a GOAWAY costs no request.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::proc::Heird;

/// Where Debian's golang-golang-x-net-dev puts golang.org/x/net (GOPATH mode).
const GOPATH: &str = "/usr/share/gocode";

/// Builds the client with Debian's Go and x/net (offline, GOPATH mode), once per test binary. As
/// root, installs them when they are missing (tests/support/deps.rs); panics naming the packages
/// otherwise. Each build writes its own file and renames it into place, so test binaries that
/// build at the same time never run a half-written client.
pub fn build_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    super::deps::require(
        "Go and golang.org/x/net",
        &["golang-go", "golang-golang-x-net-dev"],
        || {
            super::deps::succeeds(Command::new("go").arg("version"))
                && Path::new(GOPATH).join("src/golang.org/x/net/http2").is_dir()
        },
    );
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bin = tmp.join("h2retry");
    let partial = tmp.join(format!("h2retry.{}", std::process::id()));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/h2retry/main.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg(src)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", tmp.join("gocache"))
        .env("GOFLAGS", "")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            std::fs::rename(&partial, &bin).unwrap();
            bin
        }
        other => panic!(
            "this test needs Go and golang.org/x/net (apt-get install golang-go golang-golang-x-net-dev); \
             go build {src}: {other:?}"
        ),
    }
}

pub struct Client {
    child: Child,
    ok: Arc<AtomicU64>,
}

impl Client {
    pub fn start(bin: &PathBuf, url: &str, conns: u32, workers: u32, extra: &[&str]) -> Client {
        let mut child = Command::new(bin)
            .args([
                "-url",
                url,
                "-conns",
                &conns.to_string(),
                "-workers",
                &workers.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ok = Arc::new(AtomicU64::new(0));
        let ok2 = ok.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("progress ok=")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse().ok())
                {
                    ok2.store(n, Ordering::SeqCst);
                }
            }
        });
        Client { child, ok }
    }

    /// Waits until `more` requests have succeeded since now.
    pub fn wait_progress(&self, more: u64, h: &Heird) {
        let from = self.ok.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok.load(Ordering::SeqCst) < from + more {
            assert!(Instant::now() < deadline, "the h2 load stalled\n{}", h.describe());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the client (closes its stdin) and returns its summary.
    pub fn stop(mut self) -> serde_json::Value {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }
}
