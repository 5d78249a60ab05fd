//! heird as PID 1 of a real podman container: reloads (`podman kill --signal USR2` and
//! `podman exec … /heird reload --pid 1`) hand over between workers under load while the
//! container's PID 1 stays; a worker killed with SIGKILL is replaced without a refused
//! connection; `podman stop` drains and the container exits 0.
//!
//! The image is a directory made offline from the test build of heird and what it links
//! (tests/support/image.sh), run with `--rootfs`. podman runs with the flags this machine needs
//! (../shared/CONTAINERS-NOTES.md): runc (crun cannot set the rlimits here), cgroupfs, explicit
//! ulimits, and the host's network, so the container's port is on the host's loopback.
//!
//! Needs podman and runc: installed with apt-get when missing and running as root
//! (tests/support/deps.rs); otherwise every test here fails, naming the packages.

#[path = "support/image.rs"]
mod image;
mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::deps;
use support::load::{self, LoadConfig};
use support::proc::{BIN, body, children, free_addr, get, info, read_by, read_response, wait_until};

/// podman's global flags for this machine (CONTAINERS-NOTES.md: hybrid cgroups, crun's rlimit
/// failure).
const GLOBAL: &[&str] = &["--runtime", "runc", "--cgroup-manager=cgroupfs"];

fn require_podman() {
    deps::require("podman with runc", &["podman", "runc"], || {
        deps::succeeds(Command::new("podman").arg("--version"))
            && deps::succeeds(Command::new("runc").arg("--version"))
    });
}

/// `podman <GLOBAL> <args>`, run to the end.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(GLOBAL)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman {}: {e}", args.join(" ")))
}

/// Like [`podman`], and panics with the command and its output when it fails.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} {}: {}\nstdout: {}\nstderr: {}",
        GLOBAL.join(" "),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running container of heird; removed (forcibly) on drop.
struct Container {
    name: String,
    addr: SocketAddr,
    cmdline: String,
    _dir: tempfile::TempDir,
}

impl Container {
    /// `podman run -d … --rootfs DIR /heird serve --config /etc/heird/heird.toml --listen ADDR`,
    /// with `config` as that file and `env` set inside; waits until it serves.
    fn start(config: &str, env: &[(&str, &str)]) -> Container {
        require_podman();
        let root = image::rootfs(BIN);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("heird.toml"), config).unwrap();
        let addr = free_addr();
        let name = format!("heird-test-{}-{}", std::process::id(), addr.port());
        let volume = format!("{}:/etc/heird:ro", dir.path().display());
        let listen = addr.to_string();
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["run", "-d", "--name", &name, "--network", "host"];
        args.extend(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]);
        args.extend(["-v", &volume]);
        // Each container its own /tmp, as every container has: the tests share one image
        // directory, and PID 1's control socket (/tmp/heird-0/control-1.sock) must not be
        // replaced by another test's container (nor copied up: old sockets may lie there).
        args.extend(["--tmpfs", "/tmp:rw,notmpcopyup"]);
        for e in &env {
            args.extend(["--env", e]);
        }
        args.extend(["--rootfs", root.to_str().unwrap()]);
        args.extend([
            "/heird",
            "serve",
            "--config",
            "/etc/heird/heird.toml",
            "--listen",
            &listen,
        ]);
        let cmdline = format!("podman {} {}", GLOBAL.join(" "), args.join(" "));
        podman_ok(&args);
        let c = Container {
            name,
            addr,
            cmdline,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(20), || matches!(
                get(addr, "/healthz"),
                Ok((200, _))
            )),
            "the container never served on {addr}\n{}",
            c.describe()
        );
        c
    }

    /// `podman inspect --format FORMAT`.
    fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
    }

    /// The container's PID 1 as the host sees it (the supervisor).
    fn pid1(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().unwrap()
    }

    /// For failure messages: the command, the state and the container's stderr (heird's logs).
    fn describe(&self) -> String {
        let logs = podman(&["logs", &self.name]);
        format!(
            "container {}: {}\nstate: {}\n--- podman logs ---\n{}{}",
            self.name,
            self.cmdline,
            String::from_utf8_lossy(&podman(&["inspect", "--format", "{{json .State}}", &self.name]).stdout),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        )
    }

    /// Waits until a fresh connection is served by generation `g` or later.
    fn wait_generation(&self, g: u64) {
        assert!(
            wait_until(Duration::from_secs(20), || {
                get(self.addr, "/info").is_ok_and(|(st, r)| {
                    st == 200
                        && serde_json::from_str::<serde_json::Value>(body(&r))
                            .is_ok_and(|v| v["generation"].as_u64() >= Some(g))
                })
            }),
            "generation {g} never served\n{}",
            self.describe()
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

#[test]
fn twenty_reloads_in_podman_lose_nothing_and_pid_1_stays() {
    let c = Container::start("drain_timeout = \"5s\"\n", &[]);
    let pid1 = c.pid1();
    let mut lc = LoadConfig::new(c.addr);
    lc.path = "/sleep?duration=5ms".into();
    lc.keepalive_clients = 8;
    lc.newconn_clients = 2;
    let load = load::start(lc);
    assert!(
        load.wait_until(Duration::from_secs(10), |s| s.ok > 50),
        "{}",
        c.describe()
    );
    let ws = support::python::steady(c.addr, 4, 15);
    let reloads = 20;
    for i in 0..reloads {
        let ok_before = load.snapshot().ok;
        // Both ways a user reloads a container: the signal to PID 1, and `heird reload`
        // inside it, which waits for the outcome and exits 0 only when the handoff succeeded.
        if i % 2 == 0 {
            podman_ok(&["kill", "--signal", "USR2", &c.name]);
        } else {
            let out = podman_ok(&["exec", &c.name, "/heird", "reload", "--pid", "1"]);
            assert!(
                out.contains("reloaded"),
                "heird reload said {out:?}\n{}",
                c.describe()
            );
        }
        c.wait_generation(2 + i);
        assert!(
            load.wait_until(Duration::from_secs(10), |s| s.ok > ok_before + 20),
            "the load stalled after reload {i}\n{}",
            c.describe()
        );
    }
    let stats = load.stop();
    let out = ws.wait_with_output().unwrap();
    let ws_summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ws client: {e}: {:?}", String::from_utf8_lossy(&out.stdout)));
    eprintln!(
        "podman, {reloads} reloads: ok {} failed {} reconnects {}; websockets {ws_summary}",
        stats.ok,
        stats.failed(),
        stats.reconnects
    );
    assert_eq!(stats.failed(), 0, "{:?}\n{}", stats.errors, c.describe());
    assert_eq!(stats.reconnects, 0, "{}", c.describe());
    assert!(
        stats.pids.len() as u64 > reloads / 2,
        "most generations served: {:?}",
        stats.pids
    );
    assert_eq!(ws_summary["closed"], 0, "{ws_summary}");
    assert_eq!(ws_summary["in_order"], true, "{ws_summary}");
    assert!(
        ws_summary["min_pids_per_client"].as_u64() >= Some(2),
        "moved: {ws_summary}"
    );
    assert_eq!(
        info(c.addr)["generation"].as_u64(),
        Some(1 + reloads),
        "{}",
        c.describe()
    );
    assert_eq!(c.inspect("{{.State.Status}}"), "running", "{}", c.describe());
    assert_eq!(c.pid1(), pid1, "the container's PID 1 changed\n{}", c.describe());
    assert!(
        wait_until(Duration::from_secs(10), || children(pid1).len() == 1),
        "old workers left under PID 1: {:?}\n{}",
        children(pid1),
        c.describe()
    );
}

#[test]
fn a_worker_killed_with_sigkill_in_podman_is_replaced_and_nothing_is_refused() {
    let c = Container::start("", &[]);
    let pid1 = c.pid1();
    let worker = match children(pid1)[..] {
        [w] => w,
        ref other => panic!(
            "PID 1 ({pid1}) has children {other:?}, not one worker\n{}",
            c.describe()
        ),
    };
    let old_pid = info(c.addr)["pid"].as_u64().unwrap();
    let mut lc = LoadConfig::new(c.addr);
    lc.path = "/sleep?duration=2ms".into();
    lc.keepalive_clients = 2;
    lc.newconn_clients = 4;
    let load = load::start(lc);
    assert!(
        load.wait_until(Duration::from_secs(10), |s| s.ok > 50),
        "{}",
        c.describe()
    );
    kill(Pid::from_raw(worker as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            get(c.addr, "/info").is_ok_and(|(st, r)| {
                st == 200
                    && serde_json::from_str::<serde_json::Value>(body(&r))
                        .is_ok_and(|v| v["pid"].as_u64().is_some_and(|p| p != old_pid))
            })
        }),
        "no new worker served after kill -9 of {worker}\n{}",
        c.describe()
    );
    let ok_after = load.snapshot().ok;
    assert!(
        load.wait_until(Duration::from_secs(10), |s| s.ok > ok_after + 50),
        "the load stalled after the restart\n{}",
        c.describe()
    );
    let stats = load.stop();
    eprintln!(
        "podman, kill -9 of the worker: ok {} refused {} failed {} ({:?})",
        stats.ok,
        stats.refused,
        stats.failed(),
        stats.errors
    );
    // Requests in the killed worker's hands are lost with it; a connection is never refused,
    // because PID 1 keeps its own copy of the listening socket.
    assert_eq!(stats.refused, 0, "{:?}\n{}", stats.errors, c.describe());
    assert_eq!(c.pid1(), pid1, "{}", c.describe());
    assert_eq!(c.inspect("{{.State.Status}}"), "running", "{}", c.describe());
}

#[test]
fn podman_stop_drains_and_the_container_exits_0() {
    let c = Container::start("drain_timeout = \"10s\"\n", &[]);
    // A request in flight when the stop comes, read by the worker: the drain lets it finish.
    let worker = children(c.pid1())[0];
    let mut slow = TcpStream::connect(c.addr).unwrap();
    slow.write_all(b"GET /sleep?duration=2s HTTP/1.1\r\nHost: heird\r\n\r\n")
        .unwrap();
    let client = slow.local_addr().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || read_by(worker, c.addr, client)),
        "the worker {worker} never read the request\n{}",
        c.describe()
    );
    let answer = std::thread::spawn(move || read_response(&mut BufReader::new(slow)));
    let t0 = Instant::now();
    // -t 20: podman sends SIGTERM, and SIGKILL only after 20 s (the drain takes 2 s).
    podman_ok(&["stop", "-t", "20", &c.name]);
    let took = t0.elapsed();
    let (head, _) = answer.join().expect("the request in flight was answered");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", c.describe());
    assert_eq!(c.inspect("{{.State.Status}}"), "exited", "{}", c.describe());
    assert_eq!(
        c.inspect("{{.State.ExitCode}}"),
        "0",
        "exit code after podman stop ({took:?})\n{}",
        c.describe()
    );
    assert!(
        took < Duration::from_secs(20),
        "podman stop took {took:?}: SIGKILLed?\n{}",
        c.describe()
    );
    // The worker drained and PID 1 ended the ordinary way, with the worker's status.
    let logs = c.describe();
    assert!(logs.contains("drained"), "no drain in the logs\n{logs}");
    assert!(
        logs.contains("supervisor exiting code=0"),
        "PID 1 did not exit with the worker's 0\n{logs}"
    );
}

/// The container's rootfs holds only the binary and what it links.
#[test]
fn the_image_holds_only_heird_and_its_libraries() {
    let root = image::rootfs(BIN);
    let mut files = Vec::new();
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, root, out);
            } else if e.file_type().unwrap().is_file() && e.metadata().unwrap().len() > 0 {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(root, root, &mut files);
    files.sort();
    assert!(files.contains(&"heird".to_string()), "{files:?}");
    let others: Vec<_> = files.iter().filter(|f| *f != "heird").collect();
    assert!(
        others.iter().all(|f| f.starts_with("lib") && f.contains(".so")),
        "besides /heird only shared libraries: {others:?}"
    );
}
