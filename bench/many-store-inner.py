#!/usr/bin/python3
"""many-store-inner.py: the inside of bench/many-store.sh (runs as root in the systemd sandbox).

N idle keep-alive connections to heird.service (standalone: heird binds 127.0.0.1:8080 itself),
each served one GET /info first; then `systemctl restart heird.service`, during which the old
process leaves them in systemd's fd store and the new one takes them back. Prints what it
measured as `key: value` lines (read by many-store.sh), and the raw PID 1 samples with -v.

Usage: many-store-inner.py N STORE_MAX FDSTORE_ENV LIMIT_NOFILE|- [-v]
"""
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

N, STORE_MAX, FDSTORE_ENV = (int(a) for a in sys.argv[1:4])
LIMIT_NOFILE = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
ADDR = ("127.0.0.1", 8080)
TCK = os.sysconf("SC_CLK_TCK")
REQ = b"GET /info HTTP/1.1\r\nHost: bench\r\n\r\n"


def out(key, value):
    print(f"{key}: {value}", flush=True)


def mono():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def prop(name):
    return sh("systemctl", "show", "-P", name, "heird.service")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK  # utime + stime (fields 14, 15)


def nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return " ".join(line.split()[3:5])
    return "?"


def pid1():
    return {"rss_kib": rss_kib(1), "fds": nfds(1), "cpu_s": cpu_s(1)}


class Sampler(threading.Thread):
    """PID 1's RSS, fd count and CPU time every 20 ms, until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stop = [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = mono()
            try:
                self.samples.append((t, rss_kib(1), nfds(1), cpu_s(1)))
            except OSError:
                pass
            self.stop.wait(0.02)

    def at(self, t):
        """The last sample taken at or before monotonic time t (the first one if none)."""
        best = self.samples[0]
        for s in self.samples:
            if s[0] <= t:
                best = s
        return best


def parse_response(buf):
    """(status, body) of one complete HTTP/1.1 response in buf, or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1")
    m = re.search(r"(?im)^content-length:\s*(\d+)", head)
    length = int(m.group(1)) if m else 0
    if len(buf) < end + 4 + length:
        return None
    return int(head.split()[1]), buf[end + 4 : end + 4 + length]


def request_all(conns, timeout):
    """Sends GET /info on every connection, then reads every response. Returns per-connection
    results: dict(pid, moves) or a failure string, and the time the last answer arrived."""
    results = [None] * len(conns)
    bufs = [b""] * len(conns)
    sel = selectors.DefaultSelector()
    for i, c in enumerate(conns):
        try:
            c.sendall(REQ)
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, i)
        except OSError as e:
            results[i] = f"send: {e.__class__.__name__}"
    pending = sum(r is None for r in results)
    last = mono()
    deadline = mono() + timeout
    while pending and mono() < deadline:
        for key, _ in sel.select(timeout=0.5):
            i = key.data
            try:
                chunk = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                chunk, err = None, e.__class__.__name__
            if not chunk:
                results[i] = "closed" if chunk == b"" else f"recv: {err}"
            else:
                bufs[i] += chunk
                r = parse_response(bufs[i])
                if r is None:
                    continue
                status, body = r
                try:
                    info = json.loads(body)
                    results[i] = {"status": status, "pid": info.get("pid"), "moves": info.get("connection_moves")}
                except ValueError:
                    results[i] = f"status {status}, not JSON"
            sel.unregister(key.fileobj)
            key.fileobj.setblocking(True)
            pending -= 1
            last = mono()
    for i, r in enumerate(results):
        if r is None:
            results[i] = "timeout"
            sel.unregister(conns[i])
    sel.close()
    return results, last


def journal(unit=None, since=None, pid=None):
    cmd = ["journalctl", "-q", "--no-pager", "-o", "json"]
    if unit:
        cmd += ["-u", unit]
    if pid:
        cmd += [f"_PID={pid}"]
    subprocess.run(["journalctl", "--sync"], capture_output=True)
    lines = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    if since is not None:
        entries = [e for e in entries if int(e.get("__MONOTONIC_TIMESTAMP", 0)) >= since * 1e6]
    return entries


def main():
    # One fd per client socket, plus room.
    need = N + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))

    os.makedirs("/etc/systemd/system/heird.service.d", exist_ok=True)
    with open("/etc/systemd/system/heird.service.d/many-store.conf", "w") as f:
        f.write(
            "[Service]\n"
            f"FileDescriptorStoreMax={STORE_MAX}\n"
            f"Environment=FDSTORE={FDSTORE_ENV}\n"
            + (f"LimitNOFILE={LIMIT_NOFILE}\n" if LIMIT_NOFILE else "")
        )
    sh("systemctl", "daemon-reload")
    out("systemd", sh("systemctl", "--version").splitlines()[0])
    out("FileDescriptorStoreMax", prop("FileDescriptorStoreMax"))
    out("unit LimitNOFILE (soft hard)", f"{prop('LimitNOFILESoft')} {prop('LimitNOFILE')}")
    out("pid1 RLIMIT_NOFILE (soft hard)", nofile(1))
    base = pid1()
    sh("systemctl", "start", "heird.service")
    old = int(prop("MainPID"))
    out("heird RLIMIT_NOFILE (soft hard)", nofile(old))
    time.sleep(0.3)
    out("heird idle rss kib", rss_kib(old))
    idle_kib = rss_kib(old)
    out("pid1 before start (rss kib, fds)", f"{base['rss_kib']} {base['fds']}")

    # N connections, each served one request.
    t = mono()
    conns = []
    for i in range(N):
        c = socket.create_connection(ADDR, timeout=10)
        c.sendall(REQ)
        buf = b""
        while (r := parse_response(buf)) is None:
            chunk = c.recv(65536)
            if not chunk:
                raise SystemExit(f"connection {i} closed before its first response")
            buf += chunk
        if json.loads(r[1]).get("pid") != old:
            raise SystemExit(f"connection {i} answered by another pid")
        conns.append(c)
    out("connections opened (each served one request), s", f"{mono() - t:.2f}")
    time.sleep(0.5)
    before = pid1()
    out("old heird rss kib with them", rss_kib(old))
    out("old heird fds", nfds(old))
    out("pid1 before restart (rss kib, fds)", f"{before['rss_kib']} {before['fds']}")

    sampler = Sampler()
    sampler.start()
    time.sleep(0.05)
    t0 = mono()
    rc = subprocess.run(["systemctl", "restart", "heird.service"], capture_output=True, text=True)
    t_ret = mono()
    out("systemctl restart exit", f"{rc.returncode} {rc.stderr.strip()}")
    if rc.returncode != 0:
        log = subprocess.run(["journalctl", "-q", "--no-pager", "-o", "short-monotonic", "-u", "heird.service",
                              "-n", "25"], capture_output=True, text=True).stdout
        for line in log.splitlines():
            out("journal", line)
    new = int(prop("MainPID"))
    # After READY=1 the new process has adopted the stored connections; none has read a request yet.
    new_kib_adopted = rss_kib(new) if new > 0 else 0
    results, t_last = request_all(conns, timeout=60)
    t_answered = mono()
    # Wait until the new process has taken its connections out of the store (the listener stays).
    deadline = mono() + 120
    while int(prop("NFileDescriptorStore")) > 1 and mono() < deadline:
        time.sleep(0.02)
    t_emptied = mono()
    time.sleep(0.3)
    sampler.stop.set()
    sampler.join()
    after = pid1()

    # systemd's own timestamps (CLOCK_MONOTONIC, µs, the same clock as ours).
    def ts(name):
        v = prop(name + "TimestampMonotonic")
        return int(v) / 1e6 if v and v != "0" else None

    stop_done, ready = ts("InactiveEnter"), ts("ActiveEnter")
    out("old pid -> new pid", f"{old} -> {new}")
    out("restart -> stop done (old process gone), ms", f"{(stop_done - t0) * 1e3:.0f}" if stop_done else "?")
    out("restart -> new process ready (READY=1), ms", f"{(ready - t0) * 1e3:.0f}" if ready and ready > t0 else "never")
    out("restart -> systemctl returned, ms", f"{(t_ret - t0) * 1e3:.0f}")
    out("restart -> all answered (requests sent when systemctl returned), ms", f"{(t_last - t0) * 1e3:.0f}")
    out("restart -> store emptied of connections (NFileDescriptorStore=1), ms", f"{(t_emptied - t0) * 1e3:.0f}")
    by_new = sum(isinstance(r, dict) and r["pid"] == new and r["status"] == 200 for r in results)
    moves1 = sum(isinstance(r, dict) and r["moves"] == 1 for r in results)
    fails = {}
    for r in results:
        if not isinstance(r, dict):
            fails[r] = fails.get(r, 0) + 1
        elif r["pid"] != new:
            fails[f"pid {r['pid']}"] = fails.get(f"pid {r['pid']}", 0) + 1
    out("answered by the new pid on the same connection", f"{by_new} of {N}")
    out("with connection_moves=1", moves1)
    out("not answered (by kind)", json.dumps(fails) if fails else "none")
    out("reconnects", 0)  # this client never reconnects: a lost connection counts above
    if new > 0:
        out("new heird fds", nfds(new))
        new_kib = rss_kib(new)
        out("new heird rss kib: adopted (at READY=1) / after one more request each", f"{new_kib_adopted} / {new_kib}")
        out("new heird memory per adopted connection above idle: adopted / after a request, bytes",
            f"{(new_kib_adopted - idle_kib) * 1024 / max(by_new, 1):.0f} / {(new_kib - idle_kib) * 1024 / max(by_new, 1):.0f}")
    else:
        out("new heird", f"no main process; unit {prop('ActiveState')}/{prop('SubState')}, result {prop('Result')}")

    # heird's own counts.
    stored = 0
    for e in journal("heird.service", since=t0 - 1):
        msg = e.get("MESSAGE", "")
        if "connections moved" in msg:
            stored = int(e.get("F_MOVED") or 0)
            out("old heird log", f"moved={e.get('F_MOVED')} not_moved={e.get('F_NOT_MOVED')} to={e.get('F_TO')}")
        elif "took over connections" in msg:
            out("new heird log", f"took over fds={e.get('F_FDS')}")
        elif e.get("PRIORITY") in ("0", "1", "2", "3", "4") and e.get("_PID") != "1" and "not our child" not in msg:
            out("heird warning", f"[{e.get('_PID')}] {msg}")
    seen = {}
    for e in journal(since=t0 - 1, pid=1):
        msg = e.get("MESSAGE", "")
        if re.search(r"(?i)store|FileDescriptorStoreMax|timed out|kill|failed|FDS", msg):
            seen[msg] = seen.get(msg, 0) + 1
    for msg, n in seen.items():
        out("pid1 log", msg if n == 1 else f"{msg} ({n} times)")

    # PID 1.
    s = sampler.samples
    peak_rss = max(x[1] for x in s)
    peak_fds = max(x[2] for x in s)
    out("pid1 samples", len(s))
    out("pid1 rss kib: before restart / peak / after", f"{before['rss_kib']} / {peak_rss} / {after['rss_kib']}")
    out("pid1 fds: before restart / peak / after", f"{before['fds']} / {peak_fds} / {after['fds']}")
    out("pid1 rss growth per stored connection (peak), bytes", f"{(peak_rss - before['rss_kib']) * 1024 / max(stored, 1):.0f}")
    out("pid1 cpu s: whole restart (restart -> store emptied + 0.3 s)", f"{after['cpu_s'] - before['cpu_s']:.2f}")
    if stop_done and ready and ready > stop_done > t0:
        c0, c1, c2, c3 = (sampler.at(x)[3] for x in (t0, stop_done, ready, t_emptied))
        out("pid1 cpu s: stop (fds stored) / start (fds passed) / removal (FDSTOREREMOVE)",
            f"{c1 - c0:.2f} / {c2 - c1:.2f} / {c3 - c2:.2f}")
    if "-v" in sys.argv:
        for x in s:
            print(f"sample {x[0] - t0:.3f} rss={x[1]} fds={x[2]} cpu={x[3]:.2f}")
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
