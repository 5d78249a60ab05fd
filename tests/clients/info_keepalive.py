#!/usr/bin/python3
"""info_keepalive.py HOST:PORT N: N keep-alive HTTP/1.1 connections to HOST:PORT, each asking
GET /info every 0.3 s until stdin closes. Then one JSON line per connection on stdout:

  me          the connection's own address (what a PROXY-aware server reports as `peer`)
  requests    answers read
  peers       the distinct `peer` values /info reported
  served_by   the distinct X-Served-By values (the HAProxy server that answered)
  pids        the distinct `pid` values
  moves       the highest `connection_moves` seen (the server-side connection was handed on)
  reconnects  times the client had to open a new connection (0: one TCP connection throughout)
  errors      what failed (a status other than 200, a reset, a timeout)

Scenario 40 (tests/systemd/scenarios/40-fleet-haproxy.sh) runs it through HAProxy across the
rolling upgrade: every answer on a long-lived client connection must name that client.
Standard library only (http.client).
"""
import http.client
import json
import sys
import threading

host, port = sys.argv[1].rsplit(":", 1)
count = int(sys.argv[2])
stop = threading.Event()


def run(out):
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.connect()
    sock = conn.sock
    out["me"] = "%s:%d" % sock.getsockname()[:2]
    peers, served_by, pids = set(), set(), set()
    while True:
        try:
            conn.request("GET", "/info")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError("status %d: %r" % (resp.status, body[:200]))
            info = json.loads(body)
            out["requests"] += 1
            peers.add(info.get("peer"))
            pids.add(info.get("pid"))
            served_by.add(resp.getheader("X-Served-By"))
            out["moves"] = max(out["moves"], info.get("connection_moves", 0))
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            out["errors"].append(repr(e))
            conn.close()
            if len(out["errors"]) > 5:
                break
        # http.client opens a new connection by itself when the old one was closed.
        if conn.sock is not None and conn.sock is not sock:
            out["reconnects"] += 1
            sock = conn.sock
        if stop.wait(0.3):
            break
    out.update(peers=sorted(map(str, peers)), served_by=sorted(map(str, served_by)), pids=sorted(pids))


results = [{"requests": 0, "moves": 0, "reconnects": 0, "errors": []} for _ in range(count)]
threads = [threading.Thread(target=run, args=(r,)) for r in results]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
for r in results:
    print(json.dumps(r, sort_keys=True))
