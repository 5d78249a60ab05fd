//! Fault injection at every step of a handoff (needs `--features fault-injection`): for each
//! step and each fault (SIGKILL or SIGSTOP of the old or the new process), under load:
//! - no connection is ever refused (someone always holds the listening socket);
//! - the service ends up served by exactly one process, the one `docs/FAULTS.md` names;
//! - the next handoff works;
//! - no zombie and no stray process is left.
//!
//! Failed requests can only be those in flight on a killed or stopped process; each case prints
//! its count.
//!
//! Each case first proves that its fault fired, since a handoff without it ends with the new
//! process serving, as 20 of the 32 rows expect: the `fault injection` log line names the step,
//! the action and the target (the old process, or the successor the old one started), a killed
//! target ended by SIGKILL, and a stopped one was seen stopped (state `T`).

mod support;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
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

/// The targets of the fault's log lines, `fault injection step="<step>" action="<action>"
/// target=<pid>` (src/fault.rs), in the stderr that every generation shares.
fn fault_targets(stderr: &str, step: &str, action: &str) -> Vec<u32> {
    let needle = format!("fault injection step=\"{step}\" action=\"{action}\" target=");
    stderr
        .lines()
        .filter_map(|l| l.split_once(&needle)?.1.trim().parse().ok())
        .collect()
}

/// The pid of the first successor, from the old process's `successor started pid=<pid>
/// generation=2` line.
fn first_successor(stderr: &str) -> Option<u32> {
    stderr.lines().find_map(|l| {
        let rest = l.split_once("successor started pid=")?.1;
        let (pid, rest) = rest.split_once(' ')?;
        rest.starts_with("generation=2").then(|| pid.parse().ok())?
    })
}

/// True when a line other than the fault's own says that `pid` was killed by SIGKILL (what the
/// old process logs when it reaps its successor: `... (killed by SIGKILL)` or
/// `status=killed by SIGKILL`).
fn reaped_killed(stderr: &str, pid: u32) -> bool {
    let pid = pid.to_string();
    stderr.lines().any(|l| {
        !l.contains("fault injection")
            && l.contains("killed by SIGKILL")
            && l.split(|c: char| !c.is_ascii_digit()).any(|w| w == pid)
    })
}

fn case(step: &str, action: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "handoff_timeout = \"2s\"\ndrain_timeout = \"1s\"\n").unwrap();
    let marker = cfg.to_string_lossy().to_string();
    let addr = free_addr();
    let mut h = Spawn::new(
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

    // The fault fired, once, at the process it names. Waiting for it also keeps what follows
    // from looking at the service before the handoff has even begun.
    let fired = || !fault_targets(&h.stderr(), step, action).is_empty();
    assert!(
        wait_until(Duration::from_secs(10), fired),
        "{step} {action}: the fault never fired (no `fault injection` line)\n{}",
        h.describe()
    );
    let stderr = h.stderr();
    let targets = fault_targets(&stderr, step, action);
    assert_eq!(targets.len(), 1, "{step} {action}: fired {targets:?}\n{stderr}");
    let target = targets[0];
    if action.ends_with("-old") {
        assert_eq!(
            target, old,
            "{step} {action}: the fault hit {target}, not the old process\n{stderr}"
        );
    } else {
        let new = first_successor(&stderr);
        assert_eq!(
            Some(target),
            new,
            "{step} {action}: the fault hit {target}, not the successor\n{stderr}"
        );
    }

    // Resume whatever the fault stopped, once it has been stopped past handoff_timeout.
    if action.starts_with("stop") {
        let t0 = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        let mut seen_stopped = std::collections::BTreeSet::new();
        while t0.elapsed() < Duration::from_secs(8) {
            let stopped: Vec<u32> = live(&marker)
                .into_iter()
                .filter(|p| state(*p) == Some('T'))
                .collect();
            seen_stopped.extend(stopped.iter().copied());
            if !stopped.is_empty() {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= STOP_FOR {
                    for p in stopped {
                        let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
                    }
                    break;
                }
            } else if stopped_at.is_some() {
                // The stopped process is gone (killed while stopped): nothing to resume.
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            seen_stopped.contains(&target),
            "{step} {action}: {target} was never seen stopped (seen: {seen_stopped:?})\n{}",
            h.stderr()
        );
    }
    // Let the handoff, the drain (1 s) and any take-back settle: one live process, and the one
    // that answers.
    wait_until(Duration::from_secs(10), || {
        let alive = live(&marker);
        alive.len() == 1 && pid_of(addr) == Some(alive[0])
    });
    // A killed target ended by SIGKILL, not on its own: the old process is our child; the
    // successor is the old process's, which logs how it ended when it reaps it.
    if action == "kill-old" {
        let status = h.wait_timeout(Duration::from_secs(5));
        assert_eq!(
            status.and_then(|s| s.signal()),
            Some(Signal::SIGKILL as i32),
            "{step} {action}: the old process ended with {status:?}\n{}",
            h.stderr()
        );
    } else if action == "kill-new" {
        assert!(
            wait_until(Duration::from_secs(5), || reaped_killed(&h.stderr(), target)),
            "{step} {action}: no line says that successor {target} was killed by SIGKILL\n{}",
            h.stderr()
        );
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
