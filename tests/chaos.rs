//! Fault injection at every step of a handoff (needs `--features fault-injection`): for each
//! step and each fault (SIGKILL or SIGSTOP of the old or the new process), under load:
//! - no connection is ever refused (someone always holds the listening socket);
//! - the service ends up served by exactly one process, the one `docs/FAULTS.md` names;
//! - the next handoff works;
//! - no zombie and no stray process is left.
//!
//! Failed requests can only be those in flight on a killed or stopped process; each case prints
//! its count.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::load::{self, LoadConfig};
use support::proc::*;

/// A stopped process stays stopped longer than handoff_timeout (2 s, in the config below).
const STOP_FOR: Duration = Duration::from_millis(2500);

/// Who serves at the end, per docs/FAULTS.md.
fn expected_survivor(step: &str, action: &str) -> &'static str {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FAULTS.md")).unwrap();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 4 && cells[1] == format!("`{step}`") && cells[2] == format!("`{action}`") {
            return match cells[3] {
                "old" => "old",
                "new" => "new",
                other => panic!("docs/FAULTS.md: survivor {other:?} for {step} {action}"),
            };
        }
    }
    panic!("docs/FAULTS.md has no row for {step} {action}");
}

fn pid_of(addr: SocketAddr) -> Option<u32> {
    let (st, r) = get(addr, "/info").ok()?;
    if st != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(body(&r)).ok()?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

fn live(marker: &str) -> Vec<u32> {
    heird_pids_with(marker)
        .into_iter()
        .filter(|p| !matches!(state(*p), None | Some('Z')))
        .collect()
}

fn case(step: &str, action: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "handoff_timeout = \"2s\"\ndrain_timeout = \"1s\"\n").unwrap();
    let marker = cfg.to_string_lossy().to_string();
    let addr = free_addr();
    let h = Spawn::new(
        dir.path(),
        &["serve", "--config", &marker, "--listen", &addr.to_string()],
    )
    .env("HEIRD_FAULT", &format!("{step}:{action}"))
    .start();
    wait_serving(addr, &h);
    let old = h.pid();
    let mut lc = LoadConfig::new(addr);
    lc.path = "/sleep?duration=10ms".into();
    lc.keepalive_clients = 4;
    lc.newconn_clients = 2;
    lc.request_timeout = Duration::from_secs(10);
    let load = load::start(lc);
    assert!(load.wait_until(Duration::from_secs(5), |s| s.ok > 20));
    // The drain only reaches its deadline with a request that outlasts it.
    let long = (step == "drain-deadline").then(|| get_accepted_by(addr, "/sleep?duration=3s", old));
    kill(Pid::from_raw(old as i32), Signal::SIGUSR2).unwrap();

    // Resume whatever the fault stopped, once it has been stopped past handoff_timeout.
    if action.starts_with("stop") {
        let t0 = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        while t0.elapsed() < Duration::from_secs(8) {
            let stopped: Vec<u32> = live(&marker)
                .into_iter()
                .filter(|p| state(*p) == Some('T'))
                .collect();
            if !stopped.is_empty() {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= STOP_FOR {
                    for p in stopped {
                        let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
                    }
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Let the handoff, the drain (1 s) and any take-back settle.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && live(&marker).len() != 1 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The load goes on being served after the dust settled.
    let ok_now = load.snapshot().ok;
    assert!(
        load.wait_until(Duration::from_secs(10), |s| s.ok > ok_now + 10),
        "{step} {action}: nobody serves the load\n{}",
        h.stderr()
    );
    let st = load.stop();
    if let Some(l) = long {
        let _ = l.join();
    }
    let alive = live(&marker);
    let serving = pid_of(addr);
    let survivor = match serving {
        Some(p) if p == old => "old",
        Some(_) => "new",
        None => "nobody",
    };
    let stderr = h.stderr();
    eprintln!(
        "| `{step}` | `{action}` | {survivor} | ok={} failed={} (refused={} reset={} closed={} timeout={}) reconnects={} |",
        st.ok,
        st.failed(),
        st.refused,
        st.reset,
        st.closed_before_response,
        st.timeout,
        st.reconnects
    );
    assert_eq!(
        st.refused, 0,
        "{step} {action}: connections refused: {st:?}\n{stderr}"
    );
    assert_eq!(
        alive.len(),
        1,
        "{step} {action}: live heird processes {alive:?}\n{stderr}"
    );
    assert_eq!(
        serving,
        Some(alive[0]),
        "{step} {action}: /info pid vs live process\n{stderr}"
    );
    assert_eq!(
        survivor,
        expected_survivor(step, action),
        "{step} {action}\n{stderr}"
    );
    // A dead successor is reaped (within moments: the old process first reads what it said).
    assert!(
        wait_until(Duration::from_secs(5), || children(alive[0])
            .into_iter()
            .all(|c| state(c) != Some('Z'))),
        "{step} {action}: zombie among {:?}",
        children(alive[0])
    );
    // The next handoff works (the fault fires only at the first one).
    let (ok, out) = reload(dir.path());
    assert!(ok, "{step} {action}: next reload: {out}\n{}", h.stderr());
    let next = pid_of(addr).unwrap();
    assert_ne!(next, alive[0], "{step} {action}: pid did not change");
    drop(h);
    for p in live(&marker) {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
}

macro_rules! cases {
    ($($name:ident: $step:literal, $action:literal;)*) => {
        $(#[test] fn $name() { case($step, $action); })*
    };
}

cases! {
    spawned_kill_old: "successor-spawned", "kill-old";
    spawned_kill_new: "successor-spawned", "kill-new";
    spawned_stop_old: "successor-spawned", "stop-old";
    spawned_stop_new: "successor-spawned", "stop-new";
    took_fds_kill_old: "successor-took-fds", "kill-old";
    took_fds_kill_new: "successor-took-fds", "kill-new";
    took_fds_stop_old: "successor-took-fds", "stop-old";
    took_fds_stop_new: "successor-took-fds", "stop-new";
    serving_kill_old: "serving", "kill-old";
    serving_kill_new: "serving", "kill-new";
    serving_stop_old: "serving", "stop-old";
    serving_stop_new: "serving", "stop-new";
    ready_written_kill_old: "ready-written", "kill-old";
    ready_written_kill_new: "ready-written", "kill-new";
    ready_written_stop_old: "ready-written", "stop-old";
    ready_written_stop_new: "ready-written", "stop-new";
    mainpid_kill_old: "mainpid-sent", "kill-old";
    mainpid_kill_new: "mainpid-sent", "kill-new";
    mainpid_stop_old: "mainpid-sent", "stop-old";
    mainpid_stop_new: "mainpid-sent", "stop-new";
    barrier_kill_old: "barrier-done", "kill-old";
    barrier_kill_new: "barrier-done", "kill-new";
    barrier_stop_old: "barrier-done", "stop-old";
    barrier_stop_new: "barrier-done", "stop-new";
    drain_started_kill_old: "drain-started", "kill-old";
    drain_started_kill_new: "drain-started", "kill-new";
    drain_started_stop_old: "drain-started", "stop-old";
    drain_started_stop_new: "drain-started", "stop-new";
    drain_deadline_kill_old: "drain-deadline", "kill-old";
    drain_deadline_kill_new: "drain-deadline", "kill-new";
    drain_deadline_stop_old: "drain-deadline", "stop-old";
    drain_deadline_stop_new: "drain-deadline", "stop-new";
}
