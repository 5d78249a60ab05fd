//! heird as PID 1 of a pid namespace (`unshare --pid --fork`, as in a container) and with
//! `--supervise`: the supervisor keeps its pid for the service's whole life, the handoff happens
//! between its workers, it reaps orphans, restarts a killed worker without refusing a
//! connection, and exits with the worker's status after a stop.
//!
//! Needs root (unshare). The podman runs are in tests/podman.rs.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::load::{self, LoadConfig};
use support::proc::*;

/// A heird started as PID 1 of a new pid namespace; `h` is the `unshare` process.
struct Pid1 {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    h: Heird,
    /// The supervisor's pid as the host sees it.
    supervisor: u32,
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/supervise.rs needs root for unshare --pid (run the test command as root)"
    );
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// Starts `unshare --pid --fork --mount-proc --kill-child heird serve …`.
fn start_pid1(config: &str, extra: &[&str]) -> Pid1 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, config).unwrap();
    let addr = free_addr();
    let listen = addr.to_string();
    let mut args = vec!["serve", "--config", cfg.to_str().unwrap(), "--listen", &listen];
    args.extend_from_slice(extra);
    in_pid_namespace(dir, addr, BIN, &args)
}

/// Starts `unshare --pid --fork --mount-proc --kill-child PROGRAM ARGS…` serving on `addr`.
fn in_pid_namespace(dir: tempfile::TempDir, addr: SocketAddr, program: &str, program_args: &[&str]) -> Pid1 {
    require_root();
    let mut args = vec!["--pid", "--fork", "--mount-proc", "--kill-child", program];
    args.extend_from_slice(program_args);
    let mut spawn = Spawn::new(dir.path(), &args);
    spawn.bin = "/usr/bin/unshare".into();
    let h = spawn.start();
    wait_serving(addr, &h);
    let supervisor = children(h.pid())[0];
    Pid1 {
        dir,
        addr,
        h,
        supervisor,
    }
}

/// The generation that answers a fresh connection.
fn generation(addr: SocketAddr) -> u64 {
    info(addr)["generation"].as_u64().unwrap()
}

/// Waits until a fresh connection is served by generation `g` or later.
fn wait_generation(addr: SocketAddr, g: u64, h: &Heird) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            get(addr, "/info").is_ok_and(|(st, r)| {
                st == 200
                    && serde_json::from_str::<serde_json::Value>(body(&r))
                        .is_ok_and(|v| v["generation"].as_u64() >= Some(g))
            })
        }),
        "generation {g} never served\n{}",
        h.describe()
    );
}

/// The worker that serves now, as the host sees it: the child of the supervisor whose
/// namespace pid `/info` reports.
fn serving_worker(p: &Pid1) -> u32 {
    let ns_pid = info(p.addr)["pid"].as_u64().unwrap();
    descendants(p.supervisor)
        .into_iter()
        .find(|host| {
            std::fs::read_to_string(format!("/proc/{host}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|v| v.split_whitespace().last().map(str::to_string))
                    == Some(ns_pid.to_string())
            })
        })
        .expect("the serving worker is a descendant of the supervisor")
}

#[test]
fn twenty_reloads_as_pid_1_lose_nothing_and_pid_1_stays() {
    let p = start_pid1("drain_timeout = \"5s\"\n", &[]);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/status", p.supervisor))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap()
            .split_whitespace()
            .last(),
        Some("1"),
        "heird is PID 1 of its namespace"
    );
    let mut lc = LoadConfig::new(p.addr);
    lc.path = "/sleep?duration=5ms".into();
    lc.keepalive_clients = 8;
    lc.newconn_clients = 2;
    let load = load::start(lc);
    assert!(
        load.wait_until(Duration::from_secs(10), |s| s.ok > 50),
        "{}",
        p.h.describe()
    );
    let ws = support::python::steady(p.addr, 4, 12);
    let h2 = support::h2client::build_client();
    let h2 =
        support::h2client::Client::start(&h2, &format!("http://{}/sleep?duration=5ms", p.addr), 4, 16, &[]);
    h2.wait_progress(50, &p.h);
    let reloads = 20;
    for i in 0..reloads {
        let ok_before = load.snapshot().ok;
        signal(p.supervisor, Signal::SIGUSR2);
        wait_generation(p.addr, 2 + i, &p.h);
        assert!(
            load.wait_until(Duration::from_secs(10), |s| s.ok > ok_before + 20),
            "the load stalled after reload {i}\n{}",
            p.h.describe()
        );
        h2.wait_progress(20, &p.h);
    }
    let stats = load.stop();
    let h2 = h2.stop();
    let out = ws.wait_with_output().unwrap();
    let ws_summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ws client: {e}: {:?}", String::from_utf8_lossy(&out.stdout)));
    eprintln!(
        "as PID 1, {reloads} reloads: ok {} failed {} reconnects {}; h2 {h2}; websockets {ws_summary}",
        stats.ok,
        stats.failed(),
        stats.reconnects
    );
    assert_eq!(stats.failed(), 0, "{:?}\n{}", stats.errors, p.h.describe());
    assert_eq!(stats.reconnects, 0, "{}", p.h.describe());
    assert!(
        stats.pids.len() as u64 > reloads / 2,
        "most generations served: {:?}",
        stats.pids
    );
    assert_eq!(h2["failed"], 0, "h2: {h2}\n{}", p.h.describe());
    assert!(
        h2["pids"].as_array().unwrap().len() as u64 > reloads / 2,
        "h2 served by most generations: {h2}"
    );
    assert_eq!(ws_summary["closed"], 0, "{ws_summary}");
    assert_eq!(ws_summary["in_order"], true, "{ws_summary}");
    assert_eq!(ws_summary["n_continuous"], true, "{ws_summary}");
    assert!(
        ws_summary["min_pids_per_client"].as_u64() >= Some(2),
        "moved: {ws_summary}"
    );
    // The same PID 1 all along, and nothing but it and one worker left once the drains ended.
    assert_eq!(children(p.h.pid()), vec![p.supervisor]);
    assert!(
        wait_until(Duration::from_secs(10), || children(p.supervisor).len() == 1),
        "old workers left: {:?}",
        children(p.supervisor)
    );
}

#[test]
fn an_orphaned_grandchild_is_reaped() {
    let p = start_pid1("", &[]);
    // A shell inside the namespace starts a `cat` that waits on a fifo, and exits: the cat is
    // orphaned to PID 1. It exits when the test writes to the fifo.
    let fifo = p.dir.path().join("hold");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let script = format!("cat {} >/dev/null 2>&1 </dev/null & exit 0", fifo.display());
    let status = Command::new("nsenter")
        .args(["-t", &p.supervisor.to_string(), "-p", "-m", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "nsenter: {status}");
    let orphan = || {
        children(p.supervisor)
            .into_iter()
            .find(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "cat"))
    };
    assert!(
        wait_until(Duration::from_secs(10), || orphan().is_some()),
        "the orphan never became PID 1's child"
    );
    // Let it exit; then it must be reaped: neither alive nor a zombie under PID 1.
    std::fs::write(&fifo, b"done\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || orphan().is_none()),
        "the orphan is still PID 1's child (state {:?})\n{}",
        orphan().and_then(state),
        p.h.describe()
    );
    assert_eq!(generation(p.addr), 1);
}

#[test]
fn a_killed_worker_is_replaced_and_no_connection_is_refused() {
    let p = start_pid1("", &[]);
    let mut lc = LoadConfig::new(p.addr);
    lc.path = "/".into();
    lc.keepalive_clients = 2;
    lc.newconn_clients = 4;
    let load = load::start(lc);
    assert!(load.wait_until(Duration::from_secs(10), |s| s.ok > 50));
    let worker = serving_worker(&p);
    let ns_before = info(p.addr)["pid"].as_u64().unwrap();
    signal(worker, Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || {
            get(p.addr, "/info").is_ok_and(|(st, r)| {
                st == 200
                    && serde_json::from_str::<serde_json::Value>(body(&r))
                        .is_ok_and(|v| v["pid"].as_u64() != Some(ns_before))
            })
        }),
        "no new worker serves\n{}",
        p.h.describe()
    );
    let ok_now = load.snapshot().ok;
    assert!(load.wait_until(Duration::from_secs(10), |s| s.ok > ok_now + 50));
    let stats = load.stop();
    eprintln!(
        "kill -9 of the worker: ok {} refused {} failed {}",
        stats.ok,
        stats.refused,
        stats.failed()
    );
    // Requests on the killed worker's connections may fail; a new connection never is refused.
    assert_eq!(stats.refused, 0, "{:?}\n{}", stats.errors, p.h.describe());
    assert!(state(p.supervisor).is_some(), "PID 1 survived");
    assert!(p.h.stderr().contains("restarting in") || p.h.stderr().contains("worker started"));
}

#[test]
fn sigterm_drains_and_pid_1_exits_0() {
    let mut p = start_pid1("drain_timeout = \"10s\"\n", &[]);
    let worker = serving_worker(&p);
    let slow = get_accepted_by(p.addr, "/sleep?duration=1s", worker);
    signal(p.supervisor, Signal::SIGTERM);
    let (st, _) = slow.join().unwrap().unwrap();
    assert_eq!(st, 200, "the request in flight was answered\n{}", p.h.describe());
    let status = p.h.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "PID 1 (and unshare) exit 0 after the drain\n{}",
        p.h.describe()
    );
    assert!(p.h.stderr().contains("supervisor exiting"), "{}", p.h.describe());
}

/// `--supervise` outside a namespace (a supervisor that watches one pid): the pid stays, a
/// failed reload leaves the worker serving and `heird reload` fails visibly, and our notify
/// socket hears READY and RELOADING but never a MAINPID.
#[test]
fn supervise_keeps_the_pid_and_a_failed_reload_fails_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("heird.toml");
    std::fs::write(&cfg, "greeting = \"one\"\n").unwrap();
    let mut notify = FakeNotify::new(dir.path());
    let addr = free_addr();
    let h = Spawn::new(
        dir.path(),
        &[
            "serve",
            "--supervise",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ],
    )
    .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
    .start();
    wait_serving(addr, &h);
    assert!(
        notify
            .wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
            .is_some()
    );
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}\n{}", h.describe());
    assert_eq!(generation(addr), 2);
    // A broken config: the new worker exits 78, the reload fails, generation 2 serves on.
    std::fs::write(&cfg, "greeting = [\n").unwrap();
    let (ok, out) = reload(dir.path());
    assert!(!ok, "a failed reload must fail: {out}");
    assert!(out.contains("heird.toml"), "the reason names the file: {out}");
    assert_eq!(generation(addr), 2);
    std::fs::write(&cfg, "greeting = \"three\"\n").unwrap();
    let (ok, out) = reload(dir.path());
    assert!(ok, "{out}");
    assert_eq!(generation(addr), 3);
    assert!(state(h.pid()).is_some(), "the supervisor's pid never changed");
    notify.drain_for(Duration::from_millis(100));
    let msgs: Vec<&str> = notify.seen.iter().map(|(_, m)| m.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("RELOADING=1")), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m.contains("MAINPID=")),
        "no MAINPID from a supervisor: {msgs:?}"
    );
    assert!(
        notify.seen.iter().all(|(pid, _)| *pid == h.pid()),
        "only the supervisor speaks to our manager: {:?}",
        notify.seen
    );
}

/// The library: an app built on heird (examples/state.rs) that runs as PID 1 supervises itself,
/// its own binary re-executed as the worker, and its state goes on counting across a reload.
#[test]
fn an_app_on_the_library_supervises_itself_as_pid_1() {
    let state = support::examples::example("state");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let p = in_pid_namespace(dir, addr, state.to_str().unwrap(), &[&addr.to_string()]);
    let count = || {
        let (st, r) = get(addr, "/count").unwrap();
        assert_eq!(st, 200, "{r}");
        let b = body(&r).trim().to_string();
        let n = b.rsplit_once("count=").unwrap().1.parse::<u64>().unwrap();
        let pid = b
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("pid=")
            .to_string();
        (pid, n)
    };
    let (first, _) = count();
    let (_, n) = count();
    assert_eq!(n, 2);
    assert_ne!(first, "1", "PID 1 is the supervisor; a worker serves");
    signal(p.supervisor, Signal::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(10), || count().0 != first),
        "no new worker after SIGUSR2 to PID 1\n{}",
        p.h.describe()
    );
    let (_, n) = count();
    assert!(n >= 4, "the count went on across the handoff: {n}");
    assert_eq!(children(p.h.pid()), vec![p.supervisor], "PID 1 stayed");
}
