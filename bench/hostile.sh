#!/bin/sh
# Hostile clients, the figures: how fast others are answered under slowloris, how long a stop
# takes under it, and how much CPU heird uses while it is out of fds. tests/hostile.rs checks
# the behaviour (others are served, the drain ends, the accept loop does not spin); these are
# the timings, which depend on the machine and are not asserted.
#
#   bench/hostile.sh [REQUESTS]     (GETs timed under slowloris, default 100)
#
# Builds release and runs target/release/heird twice on a free port:
# 1. slowloris: 200 connections that send one header byte a second; REQUESTS `GET /` on new
#    connections meanwhile (median, p90, max), then SIGTERM and the time to exit
#    (drain_timeout = 2 s);
# 2. out of fds: heird under `ulimit -n 64`, 300 connections opened and held for 3 s; heird's
#    CPU time (utime + stime from /proc/PID/stat) over that time, as % of one core, and the time
#    from closing them to the next 200.
# Runs from the repository root.
set -eu
N=${1:-100}
cargo build --release -q
BIN=$PWD/target/release/heird
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT INT TERM
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "heird: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo " + uncommitted src changes"), release"
echo
BIN=$BIN DIR=$DIR N=$N python3 - <<'EOF'
import os, signal, socket, statistics, subprocess, threading, time

BIN, DIR, N = os.environ["BIN"], os.environ["DIR"], int(os.environ["N"])
TCK = os.sysconf("SC_CLK_TCK")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(port):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:80]
    return time.monotonic() - t0

def start(port, sh_prefix, config):
    cfg = os.path.join(DIR, f"{port}.toml")
    open(cfg, "w").write(config)
    env = dict(os.environ, RUNTIME_DIRECTORY=DIR)
    cmd = f'{sh_prefix} exec "{BIN}" serve --config "{cfg}" --listen 127.0.0.1:{port}'
    p = subprocess.Popen(["/bin/sh", "-c", cmd], env=env, stderr=open(os.path.join(DIR, f"{port}.log"), "w"))
    for _ in range(500):
        try:
            get(port); return p
        except OSError:
            time.sleep(0.02)
    raise SystemExit("heird did not start")

def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK

def ms(x):
    return f"{x * 1000:.1f} ms"

# 1. slowloris
port = free_port()
p = start(port, "", 'drain_timeout = "2s"\n')
stop = threading.Event()
def slowloris():
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    header = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 40
    for i in range(len(header)):
        if stop.is_set():
            break
        for c in conns:
            try: c.send(header[i:i + 1])
            except OSError: pass
        time.sleep(1)
    for c in conns: c.close()
slow = threading.Thread(target=slowloris); slow.start()
time.sleep(2)
t = sorted(get(port) for _ in range(N))
print("| under slowloris (200 connections, 1 byte/s) | |")
print("|---|---|")
print(f"| GET / on a new connection, {N} requests | median {ms(statistics.median(t))}, p90 {ms(t[int(len(t) * 0.9) - 1])}, max {ms(t[-1])} |")
t0 = time.monotonic()
p.send_signal(signal.SIGTERM)
p.wait(timeout=30)
print(f"| SIGTERM to exit (drain_timeout 2 s) | {ms(time.monotonic() - t0)} |")
stop.set(); slow.join()

# 2. out of fds
port = free_port()
p = start(port, "ulimit -n 64 &&", "")
pid = p.pid  # sh exec'd heird
held, c0, t0 = [], cpu_s(pid), time.monotonic()
while time.monotonic() - t0 < 3:
    if len(held) < 300:
        try: held.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
        except OSError: pass
    else:
        time.sleep(0.01)
secs = time.monotonic() - t0
cpu = (cpu_s(pid) - c0) / secs
for s in held: s.close()
t1 = time.monotonic()
while True:
    try:
        get(port); break
    except (OSError, AssertionError):
        time.sleep(0.01)
print()
print("| out of fds (ulimit -n 64, 300 connections held) | |")
print("|---|---|")
print(f"| heird CPU while they are held ({secs:.1f} s) | {cpu * 100:.1f} % of one core |")
print(f"| closed to the next 200 | {ms(time.monotonic() - t1)} |")
p.send_signal(signal.SIGTERM)
p.wait(timeout=30)
EOF
