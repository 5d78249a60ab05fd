#!/bin/sh
# The PROXY protocol's cost per new connection: heird's CPU time per connection (from
# /proc/PID/stat, so the client's cost does not count) and the client's time per connection,
# without a header (plain listener) and with a v2 or v1 header (a `--proxy-protocol` listener).
#
#   bench/proxy.sh [N] [ROUNDS]     (N connections per mode and round, default 5000; 3 rounds)
#
# Builds release, starts two target/release/heird on free ports (one plain, one with
# --proxy-protocol), and for each round runs the three modes one after the other: N times
# connect, send the header (if any) and `GET /healthz` with `Connection: close`, read to EOF.
# Prints one row per mode with the median over the rounds. Runs from the repository root;
# needs python3. Figures on a busy machine are noisy: compare the rows of one run.
set -eu
N=${1:-5000}
ROUNDS=${2:-3}
if [ -z "${NO_BUILD:-}" ]; then cargo build --release -q; fi
BIN=$PWD/target/release/heird
DIR=$(mktemp -d)
PIDS=
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PLAIN=127.0.0.1:$(port)
PROXIED=127.0.0.1:$(port)
mkdir "$DIR/a" "$DIR/b"
RUNTIME_DIRECTORY=$DIR/a "$BIN" serve --listen "$PLAIN" 2>"$DIR/plain.log" &
PIDS="$PIDS $!"
PLAIN_PID=$!
RUNTIME_DIRECTORY=$DIR/b "$BIN" serve --listen "$PROXIED" --proxy-protocol 2>"$DIR/proxied.log" &
PIDS="$PIDS $!"
PROXIED_PID=$!

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$N connections per mode and round, $ROUNDS rounds (median)"
echo
python3 - "$N" "$ROUNDS" "$PLAIN" "$PLAIN_PID" "$PROXIED" "$PROXIED_PID" <<'EOF'
import os, socket, statistics, struct, sys, time

n, rounds = int(sys.argv[1]), int(sys.argv[2])
plain = (sys.argv[3].split(":")[0], int(sys.argv[3].split(":")[1]))
proxied = (sys.argv[5].split(":")[0], int(sys.argv[5].split(":")[1]))
pids = {plain: int(sys.argv[4]), proxied: int(sys.argv[6])}
tck = os.sysconf("SC_CLK_TCK")
REQ = b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"

def v2(port):
    # PROXY, TCP over IPv4, 127.0.0.7:40000 -> 127.0.0.1:port (HAProxy's send-proxy-v2).
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11, 0, 12]) + bytes([127, 0, 0, 7, 127, 0, 0, 1])
            + struct.pack(">HH", 40000, port))

def v1(port):
    return b"PROXY TCP4 127.0.0.7 127.0.0.1 40000 %d\r\n" % port

def cpu_us(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1_000_000 / tck

def once(addr, header):
    s = socket.create_connection(addr)
    s.sendall(header + REQ)
    got = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
    s.close()
    assert got.startswith(b"HTTP/1.1 200"), got[:80]

def wait(addr, header):
    for _ in range(200):
        try:
            once(addr, header)
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"heird never served on {addr}")

modes = [("no header (plain listener)", plain, b""),
         ("v2 header (28 bytes)", proxied, v2(proxied[1])),
         ("v1 header (TCP4)", proxied, v1(proxied[1]))]
for _, addr, h in modes:
    wait(addr, h)
    for _ in range(200):
        once(addr, h)  # warm up
res = {m[0]: ([], []) for m in modes}
for _ in range(rounds):
    for name, addr, h in modes:
        c0, t0 = cpu_us(pids[addr]), time.perf_counter()
        for _ in range(n):
            once(addr, h)
        t1, c1 = time.perf_counter(), cpu_us(pids[addr])
        res[name][0].append((c1 - c0) / n)
        res[name][1].append((t1 - t0) * 1e6 / n)
print("| connection | heird CPU per connection | client time per connection |")
print("|---|---|---|")
for name, _, _ in modes:
    cpu, wall = res[name]
    print(f"| {name} | {statistics.median(cpu):.1f} µs | {statistics.median(wall):.1f} µs |")
EOF
