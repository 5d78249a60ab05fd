//! The handoff: successor with the sockets, readiness, MAINPID + barrier, drain, rollback,
//! `heird reload`. Real processes, real signals, a real notify datagram socket.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::proc::*;

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

fn start(config: &str) -> Setup {
    start_heird(config, true)
}

fn current_pid(addr: SocketAddr) -> u32 {
    info(addr)["pid"].as_u64().unwrap() as u32
}

fn dump_stderr(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "stderr") {
            out += &std::fs::read_to_string(e.path()).unwrap_or_default();
        }
    }
    out
}

#[test]
fn load_across_25_handoffs_loses_nothing_and_pid_changes_each_time() {
    let s = start("");
    let load = warm_load(s.addr, "/sleep?duration=10ms", 16, 4, 50);
    let mut pids = vec![current_pid(s.addr)];
    for i in 0..25 {
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "reload {i} failed: {out}\n{}", dump_stderr(s.dir.path()));
        let new = current_pid(s.addr);
        assert!(
            !pids.contains(&new),
            "handoff {i}: pid {new} did not change ({out})"
        );
        pids.push(new);
        // The load reaches the new process before the next handoff.
        assert!(load.wait_until(Duration::from_secs(10), |st| {
            st.pids.get(&new).is_some_and(|n| *n >= 5)
        }));
    }
    let st = load.stop();
    eprintln!(
        "25 handoffs: ok={} failed={} reconnects={} close_seen={} pids={}",
        st.ok,
        st.failed(),
        st.reconnects,
        st.connection_close_seen,
        st.pids.len()
    );
    assert_eq!(st.failed(), 0, "failures: {st:?}\n{}", dump_stderr(s.dir.path()));
    assert!(
        st.pids.len() >= 20,
        "responses came from only {} pids",
        st.pids.len()
    );
}

#[test]
fn request_in_flight_on_the_old_process_completes() {
    let s = start("");
    let old = s.h.pid();
    let addr = s.addr;
    let req = get_accepted_by(addr, "/sleep?duration=2s", old);
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    assert_ne!(current_pid(addr), old);
    let (st, r) = req.join().unwrap().unwrap();
    assert_eq!(st, 200, "{r}");
    assert!(r.contains(&format!("x-heird-pid: {old}")), "{r}");
}

#[test]
fn successor_gets_its_own_listen_pid_and_only_the_expected_fds() {
    let mut s = start("");
    let old = s.h.pid();
    let parent_fds = fd_table(old);
    signal(old, Signal::SIGUSR2);
    let new = wait_new_pid(s.addr, old, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no handoff\n{}", dump_stderr(s.dir.path())));
    assert_eq!(
        env_of(new, "LISTEN_PID").as_deref(),
        Some(new.to_string().as_str())
    );
    assert_eq!(env_of(new, "LISTEN_FDS").as_deref(), Some("1"));
    assert_eq!(env_of(new, "HEIRD_GENERATION").as_deref(), Some("2"));
    assert_eq!(env_of(new, "NOTIFY_SOCKET").as_deref(), s.notify.path.to_str());
    // Nothing of the parent's leaked: the only open files the two share are the listener, the
    // control socket and the metrics' shared counters (and stdio).
    let child_fds = fd_table(new);
    let parent_targets: BTreeSet<&str> = parent_fds
        .iter()
        .filter(|(fd, _)| *fd > 2)
        .map(|(_, t)| t.as_str())
        .collect();
    let shared: Vec<&(i32, String)> = child_fds
        .iter()
        .filter(|(fd, t)| *fd > 2 && !t.starts_with("anon_inode") && parent_targets.contains(t.as_str()))
        .collect();
    let listener = &child_fds.iter().find(|(fd, _)| *fd == 3).unwrap().1;
    let control = &child_fds.iter().find(|(fd, _)| *fd == 5).expect("control fd 5").1;
    let metrics = &child_fds.iter().find(|(fd, _)| *fd == 6).expect("metrics fd 6").1;
    assert!(metrics.starts_with("/memfd:heird-metrics"), "fd 6 -> {metrics}");
    for (fd, t) in &shared {
        assert!(
            t == listener || t == control || t == metrics,
            "fd {fd} -> {t} leaked from the parent\n{child_fds:?}\n{parent_fds:?}"
        );
    }
    // fd 3 is the very listener of the parent (fd 4, the handoff channel, is closed once the
    // parent has exited, so it may be gone by now).
    let parent_listener = &parent_fds.iter().find(|(fd, _)| *fd == 3).unwrap().1;
    assert_eq!(listener, parent_listener);
    s.notify.drain_for(Duration::from_millis(100));
}

#[test]
fn notify_order_reloading_mainpid_ready_barrier_and_no_stopping_from_old() {
    let mut s = start("");
    let old = s.h.pid();
    s.notify
        .wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("initial READY");
    signal(old, Signal::SIGUSR2);
    let new = wait_new_pid(s.addr, old, Duration::from_secs(10)).expect("no handoff");
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "old process did not exit"
    );
    s.notify.drain_for(Duration::from_millis(300));
    let from_old: Vec<&String> = s
        .notify
        .seen
        .iter()
        .filter(|(p, _)| *p == old)
        .map(|(_, m)| m)
        .collect();
    let pos = |pred: &dyn Fn(&str) -> bool| from_old.iter().position(|m| pred(m));
    let reloading = pos(&|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC=")).expect("RELOADING");
    let mainpid = pos(&|m| m.contains(&format!("MAINPID={new}")) && m.contains("READY=1")).expect("MAINPID");
    let barrier = pos(&|m| m.trim() == "BARRIER=1").expect("BARRIER");
    assert!(reloading < mainpid && mainpid < barrier, "{from_old:?}");
    assert!(
        !from_old.iter().any(|m| m.contains("STOPPING=1")),
        "old sent STOPPING: {from_old:?}"
    );
    // Nothing at all after the barrier.
    assert_eq!(barrier, from_old.len() - 1, "{from_old:?}");
    // The successor never sent READY or MAINPID itself.
    assert!(
        !s.notify
            .seen
            .iter()
            .any(|(p, m)| *p == new && (m.contains("READY=1") || m.contains("MAINPID"))),
        "{:?}",
        s.notify.seen
    );
}

/// Replaces the binary the way a package upgrade does (write a new file, rename over).
fn replace_binary(bin: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = bin.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, bin).unwrap();
}

fn restore_binary(bin: &Path) {
    let tmp = bin.with_extension("new");
    std::fs::copy(BIN, &tmp).unwrap();
    std::fs::rename(&tmp, bin).unwrap();
}

#[test]
fn every_failure_kind_keeps_the_old_process_serving_and_the_next_reload_works() {
    let s = start("handoff_timeout = \"1s\"\n");
    let old = s.h.pid();
    let load = warm_load(s.addr, "/sleep?duration=10ms", 4, 2, 20);

    type Break = Box<dyn Fn(&Setup)>;
    type Fix = Box<dyn Fn(&Setup)>;
    let cases: Vec<(&str, Break, Fix, &str)> = vec![
        (
            "exit 1",
            Box::new(|s| replace_binary(&s.bin, "#!/bin/sh\nexit 1\n")),
            Box::new(|s| restore_binary(&s.bin)),
            "exit status 1",
        ),
        (
            "crash by signal",
            Box::new(|s| replace_binary(&s.bin, "#!/bin/sh\nkill -SEGV $$\n")),
            Box::new(|s| restore_binary(&s.bin)),
            "SIGSEGV",
        ),
        (
            "hang past handoff_timeout",
            Box::new(|s| replace_binary(&s.bin, "#!/bin/sh\nexec sleep 1000\n")),
            Box::new(|s| restore_binary(&s.bin)),
            "within",
        ),
        (
            "invalid config",
            Box::new(|s| std::fs::write(&s.cfg, "handoff_timeout = \"1s\"\nbogus_key = 1\n").unwrap()),
            Box::new(|s| std::fs::write(&s.cfg, "handoff_timeout = \"1s\"\n").unwrap()),
            "bogus_key",
        ),
        (
            "binary path removed",
            Box::new(|s| std::fs::remove_file(&s.bin).unwrap()),
            Box::new(|s| std::fs::copy(BIN, &s.bin).map(|_| ()).unwrap()),
            "is gone",
        ),
    ];
    let mut serving = old;
    for (name, breaks, fixes, reason) in &cases {
        breaks(&s);
        let (ok, out) = reload(s.dir.path());
        assert!(!ok, "{name}: reload succeeded: {out}");
        assert!(
            out.contains(reason),
            "{name}: reload output lacks {reason:?}: {out}"
        );
        assert_eq!(
            current_pid(s.addr),
            serving,
            "{name}: the old process no longer serves"
        );
        // No zombie and no leftover successor.
        let left: Vec<(u32, Option<char>)> = children(serving).into_iter().map(|c| (c, state(c))).collect();
        assert!(left.is_empty(), "{name}: children left behind: {left:?}");
        fixes(&s);
        let (ok, out) = reload(s.dir.path());
        assert!(
            ok,
            "{name}: reload after the fix failed: {out}\n{}",
            dump_stderr(s.dir.path())
        );
        serving = wait_new_pid(s.addr, serving, Duration::from_secs(5)).expect("new pid");
    }
    let st = load.stop();
    assert_eq!(st.failed(), 0, "failures: {st:?}\n{}", dump_stderr(s.dir.path()));
}

#[test]
fn failed_handoff_reports_ready_with_status_to_systemd() {
    let mut s = start("");
    let old = s.h.pid();
    s.notify
        .wait_for(Duration::from_secs(5), |_, m| m.contains("READY=1"))
        .expect("READY");
    std::fs::write(&s.cfg, "nope = true\n").unwrap();
    signal(old, Signal::SIGUSR2);
    let m = s.notify.wait_for(Duration::from_secs(10), |p, m| {
        p == old && m.contains("READY=1") && m.contains("STATUS=handoff failed:")
    });
    assert!(m.is_some(), "{:?}", s.notify.seen);
    assert!(m.unwrap().1.contains("nope"), "{:?}", s.notify.seen);
}

#[test]
fn storm_of_50_sigusr2_one_successor_at_a_time_no_zombies() {
    let s = start("");
    let first = s.h.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Watch every heird of this test: none may ever have two children at once.
    let marker = s.cfg.to_string_lossy().to_string();
    let watcher = {
        let stop = stop.clone();
        let marker = marker.clone();
        std::thread::spawn(move || {
            let mut max_children = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for p in heird_pids_with(&marker) {
                    let live = children(p).into_iter().filter(|c| state(*c) != Some('Z')).count();
                    max_children = max_children.max(live);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            max_children
        })
    };
    let t0 = Instant::now();
    for i in 0..50 {
        // Alternate between the pid we started and whoever serves now.
        let target = if i % 2 == 0 { first } else { current_pid(s.addr) };
        let _ = kill(Pid::from_raw(target as i32), Signal::SIGUSR2);
        std::thread::sleep(Duration::from_millis(15));
    }
    let storm = t0.elapsed();
    // Settled: one live heird, and it serves.
    assert!(
        wait_until(Duration::from_secs(30), || {
            heird_pids_with(&marker)
                .into_iter()
                .filter(|p| !matches!(state(*p), None | Some('Z')))
                .count()
                == 1
        }),
        "the storm did not settle: {:?}",
        heird_pids_with(&marker)
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_children = watcher.join().unwrap();
    assert_eq!(get(s.addr, "/").unwrap().0, 200);
    assert!(
        max_children <= 1,
        "a process had {max_children} live successors at once"
    );
    // Exactly one process serves and accepts; no zombies among heird's children.
    let live = heird_pids_with(&marker);
    for p in &live {
        for c in children(*p) {
            assert_ne!(state(c), Some('Z'), "zombie {c} under {p}");
        }
    }
    eprintln!("storm took {storm:?}; {} heird processes left", live.len());
    // The next reload works.
    let now = current_pid(s.addr);
    let (ok, out) = reload(s.dir.path());
    assert!(ok, "{out}");
    assert_ne!(current_pid(s.addr), now);
}

#[test]
fn fd_count_is_flat_after_50_handoffs() {
    let s = start("");
    let marker = s.cfg.to_string_lossy().to_string();
    // Measures once the serving process is alone (its predecessor exited, closing the channel).
    let settled_count = || {
        let pid = current_pid(s.addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        while heird_pids_with(&marker).len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The count is stable (the predecessor's channel and moved connections are closed).
        let mut last = fd_table(pid).len();
        assert!(wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(50));
            let now = fd_table(pid).len();
            std::mem::replace(&mut last, now) == now
        }));
        (pid, last)
    };
    assert!(reload(s.dir.path()).0);
    let (_, before) = settled_count();
    for i in 0..50 {
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "reload {i}: {out}\n{}", dump_stderr(s.dir.path()));
    }
    let (pid, after) = settled_count();
    assert_eq!(before, after, "fd count {before} -> {after}: {:?}", fd_table(pid));
}

/// A predecessor that is still draining when its successor hands over in turn and exits cleanly
/// must not take the service back: only a successor that dies does that.
#[test]
fn draining_predecessor_does_not_take_back_after_a_clean_second_handoff() {
    let s = start("drain_timeout = \"5s\"\n");
    let first = s.h.pid();
    let addr = s.addr;
    // Keeps the first process draining for 2 s.
    let long = get_accepted_by(addr, "/sleep?duration=2s", first);
    assert!(reload(s.dir.path()).0);
    let second = current_pid(addr);
    assert!(reload(s.dir.path()).0);
    let third = current_pid(addr);
    assert!(
        wait_gone(second, Duration::from_secs(5)),
        "second generation did not exit"
    );
    assert_eq!(long.join().unwrap().unwrap().0, 200);
    assert!(
        wait_gone(first, Duration::from_secs(5)),
        "first generation did not exit after its drain"
    );
    assert!(wait_until(Duration::from_secs(5), || current_pid(addr) == third));
    let live: Vec<u32> = heird_pids_with(&s.cfg.to_string_lossy())
        .into_iter()
        .filter(|p| !matches!(state(*p), None | Some('Z')))
        .collect();
    assert_eq!(live, vec![third], "{}", s.h.stderr());
    assert!(
        !s.h.stderr().contains("taking the service back"),
        "{}",
        s.h.stderr()
    );
}
