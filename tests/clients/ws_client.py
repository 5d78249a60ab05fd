#!/usr/bin/python3
"""A WebSocket client on the `websockets` library (Debian's python3-websockets), for heird's
tests. Run it with Debian's /usr/bin/python3.

  ws_client.py echo URL            send 3 messages one by one, print each reply (a JSON line)
  ws_client.py until-close URL      send one message, print "open <pid of the reply>", then wait
                                   until the server closes and print "closed <code>"
  ws_client.py handoffs URL N K    K times: send messages back to back (up to 4 unanswered at a
                                   time), after N replies send SIGUSR2 to the pid that answered,
                                   and go on until the server closes; then reconnect, sending
                                   again what was not answered first. Finally N more messages on
                                   a last connection, and close; print one JSON summary line
  ws_client.py continuous URL K MS  (URL may be unix:PATH) one connection: a message every MS ms and a ping every 25 ms;
                                   after 5 replies from a pid, SIGUSR2 to that pid, K times (the
                                   connection moves); then wait for every reply and close; print
                                   one JSON summary line
  ws_client.py fragments URL N     N connections; the even ones start a fragmented message
                                   (first fragment sent, the rest held back); SIGUSR2 to the pid;
                                   once an odd one is answered by a new pid, the even ones send
                                   the rest; then 3 more messages each; print one JSON line each
  ws_client.py steady URL N SECS   N connections, each sending a message, waiting for its reply,
                                   then 50 ms of pause, for SECS seconds; print one JSON summary
  ws_client.py bench URL N SECS    N clients, each sending a message and waiting for its reply,
                                   then 20 ms of pause, for SECS seconds; a client whose
                                   connection closes (or cannot connect) reconnects every 10 ms
                                   and resends what was not answered; print one JSON line of
                                   counts (closes by code, reconnects, failed connects, messages)
  ws_client.py idle URL N          N connections, one message each; print "ready"; on a line on
                                   stdin one more message each; print one JSON summary line

URL may be wss://... for echo and until-close; $WS_CA names the certificate file to trust.

Exit status 0 when it ran to the end (the caller checks the output), 2 on a usage error.
"""
import asyncio
import itertools
import json
import os
import signal
import socket
import ssl
import sys

import websockets


async def echo(url):
    async with connect(url) as ws:
        for m in ["hello", "wörld", '{"quoted": "json"}']:
            await ws.send(m)
            print(await ws.recv(), flush=True)


async def until_close(url):
    async with connect(url) as ws:
        await ws.send("hi")
        print("open", json.loads(await ws.recv())["pid"], flush=True)
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as e:
            print("closed", e.rcvd.code if e.rcvd is not None else -1, flush=True)


async def handoffs(url, n, k):
    counter = itertools.count()
    sent = []          # every distinct message, in the order first sent
    acked = []         # every reply's echo, in arrival order
    resend = []        # sent but not answered when a connection ended
    connections = []

    async def connection(budget, on_reply):
        """Sends `resend` first, then new messages while `budget()` allows; records the close
        code sent by the server (None when the client closed) and the replies."""
        replies, in_flight, code = [], [], None
        async with websockets.connect(url) as ws:
            try:
                while True:
                    while len(in_flight) < 4 and (resend or budget(len(replies) + len(in_flight))):
                        if resend:
                            m = resend.pop(0)
                        else:
                            m = f"m{next(counter)}"
                            sent.append(m)
                        in_flight.append(m)
                        await ws.send(m)
                    if not in_flight:
                        break
                    reply = json.loads(await ws.recv())
                    expected = in_flight.pop(0)
                    if reply.get("echo") != expected:
                        raise SystemExit(f"reply {reply} is not for {expected!r}")
                    replies.append(reply)
                    acked.append(expected)
                    on_reply(len(replies), reply)
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else -1
        resend[:0] = in_flight
        connections.append({
            "close_code": code,
            "pids": sorted({r["pid"] for r in replies}),
            "ns": [r["n"] for r in replies],
        })

    def signal_at_n(count, reply):
        # The serving process (from the reply) hands over after n replies on this connection.
        if count == n:
            os.kill(reply["pid"], signal.SIGUSR2)

    # k connections, each until the server closes it (bounded by 100000 messages).
    for _ in range(k):
        await connection(lambda c: c < 100000, signal_at_n)
    # The last: what was not answered, then n new messages.
    again = len(resend)
    await connection(lambda c: c < n + again, lambda c, r: None)
    print(json.dumps({"connections": connections, "sent": sent, "acked": acked}), flush=True)


def connect(url, **kw):
    """`ws://...`, `wss://...` (trusting the certificate file named by $WS_CA, if set), or
    `unix:/path/to/socket` (the request goes to /ws)."""
    if url.startswith("unix:"):
        return websockets.unix_connect(url[len("unix:"):], "ws://localhost/ws", **kw)
    if url.startswith("wss:") and os.environ.get("WS_CA"):
        kw.setdefault("ssl", ssl.create_default_context(cafile=os.environ["WS_CA"]))
    return websockets.connect(url, **kw)


def local_id(ws):
    """The local port of a TCP connection; the inode of a Unix one."""
    sock = ws.transport.get_extra_info("socket")
    if sock.family == socket.AF_UNIX:
        return os.fstat(sock.fileno()).st_ino
    return sock.getsockname()[1]


async def continuous(url, k, ms):
    sent, replies, pids = [], [], []
    result = {"close_code": None}
    done = asyncio.Event()
    pings = []
    deadline = asyncio.get_running_loop().time() + 120
    async with connect(url, ping_interval=None, max_queue=None) as ws:
        port_start = local_id(ws)

        async def reader():
            since = 0
            while True:
                r = json.loads(await ws.recv())
                replies.append(r)
                if not pids or pids[-1] != r["pid"]:
                    pids.append(r["pid"])
                    since = 0
                since += 1
                if since == 5 and len(pids) <= k:
                    os.kill(r["pid"], signal.SIGUSR2)
                if since >= 5 and len(pids) > k:
                    done.set()

        async def pinger():
            while True:
                pings.append(await ws.ping())
                await asyncio.sleep(0.025)

        read_task = asyncio.create_task(reader())
        ping_task = asyncio.create_task(pinger())
        try:
            i = 0
            while not done.is_set() and not read_task.done():
                if asyncio.get_running_loop().time() > deadline:
                    result["timeout"] = True
                    break
                m = f"m{i}"
                i += 1
                sent.append(m)
                await ws.send(m)
                await asyncio.sleep(ms / 1000)
            # Every reply, then close.
            for _ in range(500):
                if len(replies) >= len(sent) or read_task.done():
                    break
                await asyncio.sleep(0.01)
        except websockets.ConnectionClosed:
            pass
        ping_task.cancel()
        read_task.cancel()
        try:
            await read_task
        except websockets.ConnectionClosed as e:
            result["close_code"] = e.rcvd.code if e.rcvd is not None else -1
        except (asyncio.CancelledError, Exception):
            pass
        if ws.close_code is not None:
            result["close_code"] = ws.close_code
        port_end = local_id(ws)
        pongs = 0
        for w in pings:
            try:
                await asyncio.wait_for(asyncio.shield(w), 2)
                pongs += 1
            except (asyncio.TimeoutError, websockets.ConnectionClosed, asyncio.CancelledError):
                pass
    result.update({
        "sent": sent,
        "echoes": [r["echo"] for r in replies],
        "ns": [r["n"] for r in replies],
        "pids": pids,
        "port_start": port_start,
        "port_end": port_end,
        "pings": len(pings),
        "pongs": pongs,
    })
    print(json.dumps(result), flush=True)


async def fragments(url, n):
    moved = asyncio.Event()
    all_ready = asyncio.Event()
    ready = [0]
    first_pid = []
    results = [None] * n

    def one_ready():
        ready[0] += 1
        if ready[0] == n:
            all_ready.set()

    async def client(i):
        frag = i % 2 == 0
        replies, sent, code = [], [], None
        try:
            async with websockets.connect(url, ping_interval=None) as ws:
                async def ask(m):
                    await ws.send(m)
                    sent.append(m if isinstance(m, str) else "".join(FRAGS[i]))
                    replies.append(json.loads(await ws.recv()))

                await ask(f"c{i}-hello")
                first_pid.append(replies[0]["pid"])
                if frag:
                    async def parts():
                        yield FRAGS[i][0]
                        one_ready()
                        await moved.wait()
                        await asyncio.sleep(0.05)
                        for p in FRAGS[i][1:]:
                            yield p
                            await asyncio.sleep(0.01)
                    await ask(parts())
                else:
                    one_ready()
                    for _ in range(3000):
                        await ask(f"c{i}-wait")
                        if replies[-1]["pid"] != replies[0]["pid"]:
                            moved.set()
                        if moved.is_set():
                            break
                        await asyncio.sleep(0.01)
                for j in range(3):
                    await ask(f"c{i}-after{j}")
                    await asyncio.sleep(0.02)
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else -1
        except Exception as e:
            code = repr(e)
        results[i] = {
            "fragmented": frag,
            "close_code": code,
            "sent": sent,
            "echoes": [r["echo"] for r in replies],
            "ns": [r["n"] for r in replies],
            "pids": [r["pid"] for r in replies],
        }

    FRAGS = {i: [f"c{i}-frag-a", "-b", "-c"] for i in range(0, n, 2)}
    tasks = [asyncio.create_task(client(i)) for i in range(n)]
    await asyncio.wait_for(all_ready.wait(), 60)
    os.kill(first_pid[0], signal.SIGUSR2)
    await asyncio.gather(*tasks)
    for r in results:
        print(json.dumps(r), flush=True)


async def steady(url, n, secs):
    end = asyncio.get_running_loop().time() + secs
    results = []

    async def client(i):
        sent, replies, code = [], [], None
        try:
            async with websockets.connect(url, ping_interval=None) as ws:
                j = 0
                while asyncio.get_running_loop().time() < end:
                    m = f"c{i}-{j}"
                    j += 1
                    await ws.send(m)
                    sent.append(m)
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
                    await asyncio.sleep(0.05)
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else -1
        except Exception as e:
            code = repr(e)
        results.append({
            "code": code,
            "in_order": [r["echo"] for r in replies] == sent,
            "n_continuous": [r["n"] for r in replies] == list(range(1, len(replies) + 1)),
            "messages": len(replies),
            "pids": sorted({r["pid"] for r in replies}),
        })

    await asyncio.gather(*(client(i) for i in range(n)))
    print(json.dumps({
        "clients": len(results),
        "closed": sum(1 for r in results if r["code"] is not None),
        "codes": [r["code"] for r in results if r["code"] is not None],
        "in_order": all(r["in_order"] for r in results),
        "n_continuous": all(r["n_continuous"] for r in results),
        "messages": sum(r["messages"] for r in results),
        "min_pids_per_client": min(len(r["pids"]) for r in results),
        "pids": sorted({p for r in results for p in r["pids"]}),
    }), flush=True)


async def bench(url, n, secs):
    loop = asyncio.get_running_loop()
    end = loop.time() + secs
    stats = {"messages": 0, "closes": {}, "reconnects": 0, "failed_connects": 0, "resent": 0}

    async def client(i):
        first, pending = True, None
        while loop.time() < end:
            try:
                ws = await websockets.connect(url, ping_interval=None, open_timeout=2)
            except Exception:
                stats["failed_connects"] += 1
                await asyncio.sleep(0.01)
                continue
            if not first:
                stats["reconnects"] += 1
            first = False
            try:
                while loop.time() < end:
                    if pending is None:
                        pending = f"c{i}-{stats['messages']}"
                    else:
                        stats["resent"] += 1
                    await ws.send(pending)
                    await ws.recv()
                    pending = None
                    stats["messages"] += 1
                    await asyncio.sleep(0.02)
                await ws.close()
            except websockets.ConnectionClosed as e:
                code = str(e.rcvd.code if e.rcvd is not None else "none")
                stats["closes"][code] = stats["closes"].get(code, 0) + 1

    await asyncio.gather(*(client(i) for i in range(n)))
    print(json.dumps(stats), flush=True)


async def idle(url, n):
    conns = []
    for i in range(n):
        ws = await websockets.connect(url, ping_interval=None)
        await ws.send(f"c{i}-first")
        conns.append((ws, json.loads(await ws.recv())))
    print("ready", conns[0][1]["pid"], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    pids, ns, closed, codes = {}, [], 0, []

    async def again(ws):
        nonlocal closed
        try:
            await ws.send("again")
            r = json.loads(await ws.recv())
            pids[r["pid"]] = pids.get(r["pid"], 0) + 1
            ns.append(r["n"])
            await ws.close()
        except websockets.ConnectionClosed as e:
            closed += 1
            codes.append(e.rcvd.code if e.rcvd is not None else -1)

    await asyncio.gather(*(again(ws) for ws, _ in conns))
    print(json.dumps({"pids": pids, "ns_ok": all(x == 2 for x in ns), "answered": len(ns),
                      "closed": closed, "close_codes": codes}), flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        asyncio.run(echo(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "until-close":
        asyncio.run(until_close(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "handoffs":
        asyncio.run(handoffs(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) == 5 and sys.argv[1] == "continuous":
        asyncio.run(continuous(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) == 4 and sys.argv[1] == "fragments":
        asyncio.run(fragments(sys.argv[2], int(sys.argv[3])))
    elif len(sys.argv) == 5 and sys.argv[1] == "steady":
        asyncio.run(steady(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif len(sys.argv) == 5 and sys.argv[1] == "bench":
        asyncio.run(bench(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif len(sys.argv) == 4 and sys.argv[1] == "idle":
        asyncio.run(idle(sys.argv[2], int(sys.argv[3])))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


main()
