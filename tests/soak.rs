//! Soak: many handoffs under light load. The serving process's fd count, thread count and RSS
//! stay flat, no zombie is left, and no request fails.
//!
//! `cargo test --test soak` runs 100 handoffs; `HEIRD_SOAK_HANDOFFS=1000 cargo test --release
//! --test soak -- --nocapture` runs the long one.

mod support;

use std::time::Duration;

use support::load::{self, LoadConfig};
use support::proc::*;

/// A number from `/proc/PID/status` (`Threads:`, `VmRSS:` in kB). Panics when the file cannot be
/// read or has no such number: a flatness check on zeros would pass on anything.
fn status_field(pid: u32, key: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{path} has no {key}:\n{text}"));
    let value = value.trim().trim_end_matches(" kB").trim();
    value
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {key} {value:?}: {e}"))
}

/// How many fds `pid` has open. Panics when `/proc/PID/fd` cannot be read.
fn fd_count(pid: u32) -> usize {
    let path = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    entries
        .collect::<std::io::Result<Vec<_>>>()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .len()
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: usize,
    threads: u64,
    rss_kib: u64,
}

#[test]
fn soak_handoffs_stay_flat() {
    let n: usize = std::env::var("HEIRD_SOAK_HANDOFFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "").unwrap();
    let marker = cfg.to_string_lossy().to_string();
    let addr = free_addr();
    let h = Spawn::new(
        dir.path(),
        &["serve", "--config", &marker, "--listen", &addr.to_string()],
    )
    .start();
    wait_serving(addr, &h);
    let mut lc = LoadConfig::new(addr);
    lc.path = "/sleep?duration=5ms".into();
    lc.keepalive_clients = 2;
    lc.newconn_clients = 1;
    let load = load::start(lc);
    let mut samples: Vec<Sample> = Vec::new();
    for i in 0..n {
        let (ok, out) = reload(dir.path());
        assert!(ok, "handoff {i}: {out}\n{}", h.stderr());
        // Sample the serving process once its predecessor is gone.
        let pid = info(addr)["pid"].as_u64().unwrap() as u32;
        assert!(
            wait_until(Duration::from_secs(10), || {
                heird_pids_with(&marker)
                    .iter()
                    .filter(|p| !matches!(state(**p), None | Some('Z')))
                    .count()
                    == 1
            }),
            "handoff {i}: the predecessor of {pid} is still running after 10 s\n{}",
            h.stderr()
        );
        samples.push(Sample {
            fds: fd_count(pid),
            threads: status_field(pid, "Threads:"),
            rss_kib: status_field(pid, "VmRSS:"),
        });
        for c in children(pid) {
            assert_ne!(state(c), Some('Z'), "zombie {c} under {pid}");
        }
    }
    let st = load.stop();
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let max = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap();
    eprintln!(
        "soak {n} handoffs: requests ok={} failed={} reconnects={}; fds first={} last={} max={}; threads first={} last={} max={}; RSS KiB first={} last={} max={}",
        st.ok,
        st.failed(),
        st.reconnects,
        first.fds,
        last.fds,
        max(|s| s.fds as u64),
        first.threads,
        last.threads,
        max(|s| s.threads),
        first.rss_kib,
        last.rss_kib,
        max(|s| s.rss_kib),
    );
    assert_eq!(st.failed(), 0, "{st:?}");
    // A few fds come and go with the load's connections; a leak would grow with n.
    assert!(last.fds <= first.fds + 4, "fds {} -> {}", first.fds, last.fds);
    assert!(
        last.threads <= first.threads + 2,
        "threads {} -> {}",
        first.threads,
        last.threads
    );
    assert!(
        last.rss_kib <= first.rss_kib + 4096,
        "RSS {} -> {} KiB",
        first.rss_kib,
        last.rss_kib
    );
}
