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

Exit status 0 when it ran to the end (the caller checks the output), 2 on a usage error.
"""
import asyncio
import itertools
import json
import os
import signal
import sys

import websockets


async def echo(url):
    async with websockets.connect(url) as ws:
        for m in ["hello", "wörld", '{"quoted": "json"}']:
            await ws.send(m)
            print(await ws.recv(), flush=True)


async def until_close(url):
    async with websockets.connect(url) as ws:
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


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        asyncio.run(echo(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "until-close":
        asyncio.run(until_close(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "handoffs":
        asyncio.run(handoffs(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


main()
