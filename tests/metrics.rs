//! `/metrics` against the real binary, scraped by curl (a client nobody here wrote) every
//! 100 ms on keep-alive connections, across ten reloads and a restart through a fake fd store:
//! every counter only goes up, whichever process answers; the handoffs are counted, failed ones
//! too.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::proc::*;

type Sample = BTreeMap<String, f64>;

/// One scrape's samples by name (labels included).
fn parse(text: &str) -> Sample {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Whether a sample must never go down: counters, and a histogram's parts.
fn is_counter(name: &str) -> bool {
    let base = name.split('{').next().unwrap_or(name);
    ["_total", "_count", "_sum", "_bucket"]
        .iter()
        .any(|s| base.ends_with(s))
}

/// curl scraping `/metrics` every 100 ms until stopped: 20 URLs per curl, one keep-alive
/// connection (curl opens another when the server closes one).
struct Scraper {
    scrapes: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Scraper {
        let scrapes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (scrapes.clone(), stop.clone());
        let url = format!("http://{addr}/metrics");
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let out = Command::new("curl")
                    .args(["-s", "--max-time", "5", "--rate", "10/s"])
                    .args(std::iter::repeat_n(&url, 20))
                    .output()
                    .expect("curl runs");
                let text = String::from_utf8_lossy(&out.stdout);
                // Each whole exposition ends with `# EOF`; a cut one is left out.
                let mut parts: Vec<&str> = text.split("# EOF\n").collect();
                parts.pop();
                s.lock().unwrap().extend(parts.into_iter().map(parse));
            }
        });
        Scraper {
            scrapes,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.scrapes.lock().unwrap().len()
    }

    /// Waits for `more` scrapes than now.
    fn wait_more(&self, more: usize, h: &Heird) {
        let want = self.count() + more;
        assert!(
            wait_until(Duration::from_secs(20), || self.count() >= want),
            "only {} scrapes of {want}\n{}",
            self.count(),
            h.describe()
        );
    }

    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.scrapes.lock().unwrap())
    }
}

/// Requests (`GET /healthz`, a new connection each) until stopped; counts those answered.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if matches!(get(addr, "/healthz"), Ok((200, _))) {
                ok.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn check_curl() {
    support::deps::require("curl", &["curl"], || {
        support::deps::succeeds(Command::new("curl").arg("--version"))
    });
}

/// Every counter, in every pair of consecutive scrapes, stays or goes up.
fn assert_monotonic(scrapes: &[Sample]) {
    for (i, pair) in scrapes.windows(2).enumerate() {
        for (name, before) in pair[0].iter().filter(|(n, _)| is_counter(n)) {
            let after = pair[1].get(name).copied().unwrap_or(f64::NAN);
            assert!(
                after >= *before,
                "{name} went from {before} to {after} between scrapes {i} and {}",
                i + 1
            );
        }
    }
}

/// Stops the primary as systemd would at a restart (SIGTERM, it stores what it keeps), then
/// starts the next process with everything the fake fd store holds.
fn restart(dir: &Path, addr: SocketAddr, n: &FakeNotify, cfg: &Path) -> Heird {
    let primary = info(addr)["pid"].as_u64().unwrap() as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(primary as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_gone(primary, Duration::from_secs(10)),
        "{primary} still runs"
    );
    let stored: Vec<(String, std::os::fd::OwnedFd)> = std::mem::take(&mut *n.store.lock().unwrap());
    let names: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"heird-metrics"), "{names:?}");
    let mut sp = Spawn::new(
        dir,
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ],
    );
    sp.fds = stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", &stored.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"))
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FDSTORE", "128")
        .start();
    drop(stored);
    wait_serving(addr, &h);
    h
}

#[test]
fn counters_never_go_down_across_reloads_and_a_restart() {
    check_curl();
    let dir = tempfile::tempdir().unwrap();
    let n = FakeNotify::new(dir.path());
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "").unwrap();
    let addr = free_addr();
    let h = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ],
    )
    .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
    .env("FDSTORE", "128")
    .start();
    wait_serving(addr, &h);
    let scraper = Scraper::start(addr);
    let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let loader = load(addr, stop.clone(), ok.clone());
    scraper.wait_more(3, &h);
    for i in 0..10 {
        let (done, out) = reload(dir.path());
        assert!(done, "reload {i}: {out}\n{}", h.describe());
        scraper.wait_more(2, &h);
    }
    // The restart once the last predecessor is gone: one process serves.
    let marker = cfg.to_str().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || heird_pids_with(marker).len() == 1),
        "{:?}",
        heird_pids_with(marker)
    );
    let before_restart = scraper.count();
    let h2 = restart(dir.path(), addr, &n, &cfg);
    scraper.wait_more(5, &h2);
    stop.store(true, Ordering::SeqCst);
    loader.join().unwrap();
    let requests_made = ok.load(Ordering::SeqCst);
    let mut scrapes = scraper.stop();
    // One last scrape, after every request above and every other scrape.
    let out = Command::new("curl")
        .arg("-s")
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    let last = parse(&String::from_utf8_lossy(&out.stdout));
    scrapes.push(last.clone());
    assert_monotonic(&scrapes);
    let v = |s: &Sample, k: &str| s.get(k).copied().unwrap_or_else(|| panic!("no {k} in {s:?}"));
    let answered = scrapes.len() as f64;
    assert!(
        v(&last, "heird_requests_total") >= requests_made as f64 + answered,
        "{} requests counted, {requests_made} made and {answered} scrapes answered",
        v(&last, "heird_requests_total")
    );
    assert!(requests_made > 0);
    assert_eq!(v(&last, "heird_handoffs_started_total"), 10.0, "{last:?}");
    assert_eq!(v(&last, "heird_handoffs_succeeded_total"), 10.0, "{last:?}");
    assert_eq!(v(&last, "heird_handoffs_failed_total"), 0.0, "{last:?}");
    // Ten drains after the handoffs, and the one at the stop.
    assert_eq!(v(&last, "heird_drain_duration_seconds_count"), 11.0, "{last:?}");
    // The generation went up at each handoff, to 11; the process after the restart is a
    // generation 1 again.
    let gens: Vec<f64> = scrapes[..before_restart]
        .iter()
        .map(|s| v(s, "heird_generation"))
        .collect();
    assert!(gens.windows(2).all(|w| w[0] <= w[1]), "{gens:?}");
    assert_eq!((gens[0], *gens.last().unwrap()), (1.0, 11.0), "{gens:?}");
    assert_eq!(v(&last, "heird_generation"), 1.0);
    drop(h2);
    drop(h);
}

/// A successor that fails (the binary replaced by a script that exits 1) counts as failed, and
/// the old process, which serves on, says so.
#[test]
fn a_failed_handoff_is_counted_as_failed() {
    check_curl();
    let s = start_heird("", true);
    let tmp = s.bin.with_extension("new");
    std::fs::write(&tmp, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &s.bin).unwrap();
    let (done, out) = reload(s.dir.path());
    assert!(!done, "{out}");
    let out = Command::new("curl")
        .arg("-s")
        .arg(format!("http://{}/metrics", s.addr))
        .output()
        .unwrap();
    let m = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(m.get("heird_handoffs_started_total"), Some(&1.0), "{m:?}");
    assert_eq!(m.get("heird_handoffs_failed_total"), Some(&1.0), "{m:?}");
    assert_eq!(m.get("heird_handoffs_succeeded_total"), Some(&0.0), "{m:?}");
    assert_eq!(m.get("heird_generation"), Some(&1.0), "{m:?}");
}

/// A `heird-metrics` in the fd store that is not heird's counters (here: text) is logged and
/// replaced: the process serves fresh counters and stores its own memfd under that name.
#[test]
fn a_foreign_memfd_in_the_store_is_replaced_by_fresh_counters() {
    check_curl();
    let dir = tempfile::tempdir().unwrap();
    let mut n = FakeNotify::new(dir.path());
    let (tcp, addr) = tcp_listener();
    let junk = nix::sys::memfd::memfd_create(c"junk", nix::sys::memfd::MFdFlags::empty()).unwrap();
    std::io::Write::write_all(
        &mut std::fs::File::from(junk.try_clone().unwrap()),
        b"not counters",
    )
    .unwrap();
    let mut sp = Spawn::new(dir.path(), &["serve"]);
    sp.fds = vec![tcp.as_raw_fd(), junk.as_raw_fd()];
    sp.listen_pid_self = true;
    let h = sp
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "http:heird-metrics")
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    drop((tcp, junk));
    wait_serving(addr, &h);
    let out = Command::new("curl")
        .arg("-s")
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    let m = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        m.get("heird_handoffs_started_total"),
        Some(&0.0),
        "{m:?}\n{}",
        h.describe()
    );
    assert!(h.stderr().contains("not a counters memfd"), "{}", h.describe());
    let stored = |m: &str| m.contains("FDSTORE=1") && m.contains("FDNAME=heird-metrics");
    assert!(
        n.wait_for(Duration::from_secs(5), |_, m| stored(m)).is_some(),
        "{:?}",
        n.seen
    );
    assert!(
        n.seen
            .iter()
            .any(|(_, m)| m.contains("FDSTOREREMOVE=1") && m.contains("FDNAME=heird-metrics")),
        "the foreign one stays in the store: {:?}",
        n.seen
    );
}
