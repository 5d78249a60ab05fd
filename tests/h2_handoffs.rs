//! HTTP/2 across handoffs, measured with a GOAWAY-aware client: Go's x/net/http2 Transport
//! (tests/clients/h2retry), which retries a stream the server did not process on a new
//! connection, as browsers do (RFC 9113 §6.8). Calibrated on nginx reloads: 0 failed.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::proc::*;

/// Where Debian's golang-golang-x-net-dev puts golang.org/x/net (GOPATH mode).
const GOPATH: &str = "/usr/share/gocode";

/// Builds the client with Debian's Go and x/net (offline, GOPATH mode). As root, installs them
/// when they are missing (tests/support/deps.rs); panics naming the packages otherwise.
fn build_client() -> PathBuf {
    support::deps::require(
        "Go and golang.org/x/net",
        &["golang-go", "golang-golang-x-net-dev"],
        || {
            support::deps::succeeds(Command::new("go").arg("version"))
                && Path::new(GOPATH).join("src/golang.org/x/net/http2").is_dir()
        },
    );
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bin = tmp.join("h2retry");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/h2retry/main.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(src)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", tmp.join("gocache"))
        .env("GOFLAGS", "")
        .output();
    match out {
        Ok(o) if o.status.success() => bin,
        other => panic!(
            "this test needs Go and golang.org/x/net (apt-get install golang-go golang-golang-x-net-dev); \
             go build {src}: {other:?}"
        ),
    }
}

struct Client {
    child: Child,
    ok: Arc<AtomicU64>,
}

impl Client {
    fn start(bin: &PathBuf, url: &str, conns: u32, workers: u32, extra: &[&str]) -> Client {
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
    fn wait_progress(&self, more: u64, h: &Heird) {
        let from = self.ok.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok.load(Ordering::SeqCst) < from + more {
            assert!(Instant::now() < deadline, "the h2 load stalled\n{}", h.describe());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the client (closes its stdin) and returns its summary.
    fn stop(mut self) -> serde_json::Value {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }
}

#[test]
fn many_concurrent_h2_streams_across_20_handoffs_none_fails() {
    let bin = build_client();
    let s = start_heird("", false);
    let url = format!("http://{}/sleep?duration=10ms", s.addr);
    // 64 streams at a time over 8 connections; each stream spends 10 ms in the handler, so
    // streams are open at every handoff.
    let client = Client::start(&bin, &url, 8, 64, &[]);
    client.wait_progress(200, &s.h);
    let handoffs = 20;
    for _ in 0..handoffs {
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "{out}");
        client.wait_progress(200, &s.h);
    }
    let v = client.stop();
    eprintln!("h2 across {handoffs} handoffs: {v}");
    assert_eq!(v["failed"], 0, "{v}\n{}", s.h.describe());
    assert!(v["ok"].as_u64().unwrap() > 200 * handoffs, "{v}");
    // Every generation served some of it, and the client had to reconnect at the handoffs.
    assert_eq!(v["pids"].as_array().unwrap().len() as u64, handoffs + 1, "{v}");
    assert!(v["dials"].as_u64().unwrap() >= 8 * handoffs, "{v}");
}

#[test]
fn h2_over_tls_across_20_handoffs_none_fails() {
    let bin = build_client();
    let (s, pair) = support::tls::start_tls("");
    let url = format!("https://127.0.0.1:{}/sleep?duration=10ms", s.addr.port());
    // The client insists on ALPN h2 (it fails a connection that agreed on anything else).
    let client = Client::start(&bin, &url, 8, 64, &["-cacert", pair.cert.to_str().unwrap()]);
    client.wait_progress(200, &s.h);
    let handoffs = 20;
    for _ in 0..handoffs {
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "{out}");
        client.wait_progress(200, &s.h);
    }
    let v = client.stop();
    eprintln!("h2 over TLS across {handoffs} handoffs: {v}");
    assert_eq!(v["failed"], 0, "{v}\n{}", s.h.describe());
    assert!(v["ok"].as_u64().unwrap() > 200 * handoffs, "{v}");
    assert_eq!(v["pids"].as_array().unwrap().len() as u64, handoffs + 1, "{v}");
    assert!(v["dials"].as_u64().unwrap() >= 8 * handoffs, "{v}");
}
