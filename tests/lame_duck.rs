//! The lame duck (`shutdown_delay`): after a stop, `/healthz` answers 503 for the delay while
//! every other request is served and new connections are accepted; then the usual stop. A
//! reload never goes lame duck. The client is curl.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;

/// The status code curl got for `path` on a fresh connection (0: no answer).
fn curl_status(addr: SocketAddr, path: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_stop_goes_lame_duck_healthz_down_everything_else_served_then_stops() {
    let delay = Duration::from_secs(3);
    let mut s = start_heird("shutdown_delay = \"3s\"\n", false);
    assert_eq!(curl_status(s.addr, "/healthz"), 200);
    let t0 = Instant::now();
    kill(Pid::from_raw(s.h.pid() as i32), Signal::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || curl_status(s.addr, "/healthz") == 503),
        "/healthz never answered 503 after the stop\n{}",
        s.h.describe()
    );
    // Still inside the delay: a request on a new connection is served as usual.
    assert_eq!(curl_status(s.addr, "/"), 200, "{}", s.h.describe());
    assert!(
        t0.elapsed() < delay,
        "the machine was too slow to look inside the lame duck ({:?})",
        t0.elapsed()
    );
    let status = s.notify.wait_for(Duration::from_secs(2), |_, m| {
        m.contains("STOPPING=1") && m.contains("lame duck")
    });
    assert!(
        status.is_some(),
        "no STOPPING=1 naming the lame duck: {:?}",
        s.notify.seen
    );
    let st = s.h.wait_timeout(Duration::from_secs(15));
    assert_eq!(st.and_then(|st| st.code()), Some(0), "{}", s.h.describe());
    assert!(
        t0.elapsed() >= delay,
        "exited {:?} after the stop, before the delay was over",
        t0.elapsed()
    );
}

#[test]
fn a_reload_never_goes_lame_duck() {
    let mut s = start_heird("shutdown_delay = \"3s\"\n", false);
    let old = s.h.pid();
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                codes.push(curl_status(addr, "/healthz"));
            }
            codes
        }
    });
    let t0 = Instant::now();
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    assert!(wait_new_pid(addr, old, Duration::from_secs(5)).is_some());
    let st = s.h.wait_timeout(Duration::from_secs(10));
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let codes = poller.join().unwrap();
    assert_eq!(st.and_then(|st| st.code()), Some(0), "{}", s.h.describe());
    assert!(
        took < Duration::from_secs(3),
        "the old process took {took:?} to leave after a reload: a lame duck?\n{}",
        s.h.describe()
    );
    assert!(!codes.is_empty());
    assert!(
        codes.iter().all(|c| *c == 200),
        "/healthz during the reload: {codes:?}"
    );
}
