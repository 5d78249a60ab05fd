#!/bin/bash
# `systemctl soft-reboot` (systemd >= 254) with the shipped deploy/heird-soft-reboot.conf
# (FileDescriptorStorePreserve=yes) and deploy/heird-soft-reboot.target enabled: heird stops with
# the old userspace and leaves its idle connections and WebSockets in the fd store, the target
# keeps heird.service loaded so that PID 1 carries the store across its re-exec, and the new
# userspace starts heird on it.
# Standalone (heird's own listener in the store), across one soft-reboot:
#  - 8 keep-alive clients (raw sockets: no reconnect is possible), each sending GET /info every
#    50 ms: every one is answered by the new pid on the same TCP connection (/info's peer port),
#    none sees an EOF, a reset or `Connection: close`;
#  - a client opening a new connection every 50 ms: 0 refused, 0 failed;
#  - 10 idle WebSockets (the demo's /ws): all answered by the new pid afterwards, none closed,
#    `n` goes on (2 for the second message of each);
#  - the same listening socket (inode) before and after;
#  - then what the drop-in costs: a plain stop keeps the port bound until
#    `systemctl clean --what=fdstore`.
# With the socket units as shipped: the same for the kept connections and WebSockets; the socket
# units stop and start again with the soft-reboot, so new connections are refused meanwhile
# (counted and printed, not a failure).
# Prints the stall: soft-reboot issued -> first answer on a kept connection (and -> all of them).
# On systemd < 254: checks that the shipped files do not break the units (the unknown key is
# ignored with a warning; heird serves, restarts and stops as before), then NOT APPLICABLE.
# run.sh: needs-root python3-websockets
. "$(dirname "$0")/lib.sh"
spare_from_final_kill "$@"

deploy=$HEIRD_PROJECT/deploy
sysd=/etc/systemd/system
install -D -m 0644 "$deploy/heird-soft-reboot.conf" "$sysd/heird.service.d/soft-reboot.conf"
install -D -m 0644 "$deploy/heird-soft-reboot.target" "$sysd/heird-soft-reboot.target"
systemctl daemon-reload

if [ "${SYSTEMD_VERSION:-0}" -lt 254 ]; then
  # systemd loads a unit (and logs what it ignores) when something asks for it.
  [ "$(prop LoadState)" = loaded ] || fail "heird.service: LoadState=$(prop LoadState) with the drop-in"
  journalctl --sync
  warning=$(journalctl -b -q --no-pager -o cat | grep -m 1 -E "Unknown key( name)? '?FileDescriptorStorePreserve" || true)
  [ -n "$warning" ] || fail "no warning about FileDescriptorStorePreserve= on systemd $SYSTEMD_VERSION"
  echo "systemd $SYSTEMD_VERSION on the drop-in: $warning"
  systemctl enable --now heird.service heird-soft-reboot.target
  is_state active || fail "heird.service is $(prop ActiveState) with the soft-reboot files installed"
  is_state active heird-soft-reboot.target || fail "heird-soft-reboot.target is $(prop ActiveState heird-soft-reboot.target)"
  http /healthz >/dev/null || fail "no answer with the soft-reboot files installed"
  old=$(mainpid)
  systemctl restart heird.service || fail "systemctl restart exited $?"
  [ "$(mainpid)" != "$old" ] && http /healthz >/dev/null || fail "no new pid answering after a restart"
  systemctl stop heird.service
  wait_for 5 "port 8080 free after a stop (252 releases the store: no preserve)" port_free 8080
  ok "the shipped soft-reboot files load on systemd $SYSTEMD_VERSION: heird starts, restarts, stops (port freed)"
  not_applicable "systemctl soft-reboot needs systemd >= 254 (systemctl $SYSTEMD_VERSION has no soft-reboot verb)"
fi

/usr/bin/python3 -c 'import websockets' 2>/dev/null ||
  cannot_run "this root has no /usr/bin/python3 with python3-websockets (the WebSocket client)"
# A soft-reboot unmounts what it can: the sandbox's bind mount of the project went away when
# nothing held it busy, and /tmp is a mount too. The clients and their files live on the root.
w=/root/soft-reboot
mkdir -p "$w"
cp "$HEIRD_PROJECT/tests/clients/ws_client.py" "$w/"
[ "$(prop FileDescriptorStorePreserve)" = yes ] || fail "FileDescriptorStorePreserve=$(prop FileDescriptorStorePreserve) with the drop-in"

# The keep-alive client: N raw TCP connections, one thread each, GET /info every 50 ms; one
# more thread opens a new connection for each GET /healthz every 50 ms. It ends 1 s after every
# kept connection has been answered by a pid other than its first (or failed), at the latest
# after 60 s, and prints one JSON line; T0 (wall clock, ns) is read from the file argv[3] then.
cat > "$w/keepalive.py" <<'EOF'
import json, socket, sys, threading, time

n, ready_file, t0_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
done = threading.Event()

def get(sock, buf, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: heird\r\n\r\n".encode())
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = buf[:i].decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= i + 4 + length:
                return head, buf[i + 4:i + 4 + length], buf[i + 4 + length:]
        data = sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        buf += data

class Kept:
    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", 8080), timeout=30)
        self.port = self.sock.getsockname()[1]
        self.buf, self.pids, self.answers, self.longest_ms = b"", [], 0, 0.0
        self.error, self.first_new_at = None, None

    def once(self):
        t = time.monotonic()
        head, body, self.buf = get(self.sock, self.buf, "/info")
        self.longest_ms = max(self.longest_ms, (time.monotonic() - t) * 1000)
        info = json.loads(body)
        self.answers += 1
        if info["peer"].rsplit(":", 1)[1] != str(self.port):
            raise RuntimeError(f"served as peer {info['peer']}, not port {self.port}")
        if not self.pids or self.pids[-1] != info["pid"]:
            self.pids.append(info["pid"])
            if len(self.pids) == 2:
                self.first_new_at = time.time()
        if "connection: close" in head:
            raise RuntimeError("Connection: close")

    def run(self):
        while not done.is_set():
            try:
                self.once()
            except Exception as e:
                self.error = f"{type(e).__name__}: {e}"
                return
            time.sleep(0.05)

fresh = {"ok": 0, "refused": 0, "failed": 0, "errors": [], "longest_ms": 0.0}

def fresh_loop():
    while not done.is_set():
        t = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", 8080), timeout=30) as s:
                get(s, b"", "/healthz")
            fresh["ok"] += 1
        except ConnectionRefusedError:
            fresh["refused"] += 1
        except Exception as e:
            fresh["failed"] += 1
            fresh["errors"].append(f"{type(e).__name__}: {e}")
        fresh["longest_ms"] = max(fresh["longest_ms"], (time.monotonic() - t) * 1000)
        time.sleep(0.05)

kept = [Kept() for _ in range(n)]
for k in kept:
    k.once()
threads = [threading.Thread(target=k.run) for k in kept] + [threading.Thread(target=fresh_loop)]
for t in threads:
    t.start()
with open(ready_file, "w") as f:
    f.write(f"{kept[0].pids[0]}\n")
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(k.error or len(k.pids) > 1 for k in kept):
    time.sleep(0.05)
time.sleep(1)
done.set()
for t in threads:
    t.join()
t0 = int(open(t0_file).read()) / 1e9
firsts = [k.first_new_at for k in kept if k.first_new_at]
print(json.dumps({
    "kept": n,
    "moved": sum(1 for k in kept if not k.error and len(k.pids) == 2),
    "errors": [f"port {k.port}: {k.error}" for k in kept if k.error],
    "pids": sorted({p for k in kept for p in k.pids}),
    "answers": sum(k.answers for k in kept),
    "first_answer_ms": round((min(firsts) - t0) * 1000) if firsts else None,
    "all_answered_ms": round((max(firsts) - t0) * 1000) if len(firsts) == n else None,
    "longest_wait_ms": round(max(k.longest_ms for k in kept)),
    "fresh_ok": fresh["ok"], "fresh_refused": fresh["refused"], "fresh_failed": fresh["failed"],
    "fresh_errors": fresh["errors"][:5], "fresh_longest_ms": round(fresh["longest_ms"]),
}), flush=True)
EOF

# wait_ready SECS WHAT FILE PID ERR: wait until the client PID has written FILE; fail with its
# stderr (ERR) when it exits first or takes longer than SECS.
wait_ready() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    [ -s "$3" ] && return 0
    [ -e "/proc/$4" ] || fail "the $2 exited before it was ready: $(cat "$5")"
    nap 0.1
  done
  fail "waited $1 s for the $2 to be ready: $(cat "$5")"
}

soft_reboot_with_clients() {  # MODE
  local mode=$1 old ino before count ws_in ka_pid ws_pid rc new out ws
  ws_in=$w/ws-$mode.in; mkfifo "$ws_in"
  ( spared ws-client /usr/bin/python3 "$w/ws_client.py" idle ws://127.0.0.1:8080/ws 10 \
      < "$ws_in" > $w/ws-$mode.out 2> $w/ws-$mode.err ) &
  ws_pid=$!
  exec {ws_fd}> "$ws_in"
  ( spared keepalive /usr/bin/python3 "$w/keepalive.py" 8 $w/ka-$mode.ready $w/ka-$mode.t0 \
      > $w/ka-$mode.out 2> $w/ka-$mode.err ) &
  ka_pid=$!
  wait_ready 20 "keep-alive client" $w/ka-$mode.ready "$ka_pid" $w/ka-$mode.err
  wait_ready 20 "WebSocket client" $w/ws-$mode.out "$ws_pid" $w/ws-$mode.err
  old=$(mainpid); ino=$(listen_ino 8080); before=$(nstore); count=$(soft_reboots)
  [ "$(cat $w/ka-$mode.ready)" = "$old" ] || fail "$mode: the keep-alive client was served by $(cat $w/ka-$mode.ready), not MainPID $old"
  echo "$mode: before: MainPID $old, listener inode $ino, NFileDescriptorStore=$before, SoftRebootsCount=$count; 8 keep-alive connections and 10 WebSockets open"
  nap 0.5

  # From here until heird answers again, only builtins and spared processes.
  date +%s%N > $w/ka-$mode.t0
  rc=0; ( spared systemctl systemctl soft-reboot ) 2> $w/soft-reboot-$mode.err || rc=$?
  wait "$ka_pid" || fail "$mode: the keep-alive client exited $?: $(cat $w/ka-$mode.err)"
  out=$(cat $w/ka-$mode.out)
  [ "$rc" = 0 ] || echo "$mode: systemctl soft-reboot exited $rc: $(cat $w/soft-reboot-$mode.err)"

  wait_for 30 "heird.service active after the soft-reboot" is_state active
  [ "$(soft_reboots)" = $((count + 1)) ] || fail "$mode: SoftRebootsCount=$(soft_reboots), was $count: no soft-reboot happened"
  new=$(mainpid)
  echo "$mode: after: MainPID $new, listener inode $(listen_ino 8080), LISTEN_FDNAMES=$(passed_names "$new")"
  journalctl -q --no-pager -o cat _PID=1 | grep 'Soft-reboot finished' | tail -n 1 | sed "s/^/$mode: systemd: /" || true
  echo "$mode: keep-alive client: $out"
  [ -s $w/ka-$mode.err ] && sed "s/^/$mode: keep-alive stderr: /" $w/ka-$mode.err

  printf 'again\n' >&"$ws_fd"; exec {ws_fd}>&-
  wait "$ws_pid" || fail "$mode: the WebSocket client exited $?: $(cat $w/ws-$mode.err)"
  ws=$(tail -n 1 $w/ws-$mode.out)
  echo "$mode: WebSocket client: $ws"

  [ "$new" != "$old" ] || fail "$mode: MainPID is still $old: heird did not go through the soft-reboot"
  if [ "$mode" = standalone ]; then
    [ "$(listen_ino 8080)" = "$ino" ] || fail "$mode: the listening socket changed (inode $ino -> $(listen_ino 8080))"
    [ "$(json_num fresh_refused <<< "$out")" = 0 ] || fail "$mode: new connections were refused: $out"
    [ "$(json_num fresh_failed <<< "$out")" = 0 ] || fail "$mode: new connections failed: $out"
  fi
  [ "$(json_num fresh_ok <<< "$out")" -gt 0 ] || fail "$mode: no new connection succeeded: $out"
  grep -q '"errors": \[\]' <<< "$out" || fail "$mode: kept connections were lost: $out"
  [ "$(json_num moved <<< "$out")" = 8 ] || fail "$mode: not every kept connection was answered by the new pid: $out"
  grep -qE "\"pids\": \[$old, $new\]|\"pids\": \[$new, $old\]" <<< "$out" || fail "$mode: kept connections answered by other pids than $old and $new: $out"
  [ "$(passed_conns "$new")" -ge 8 ] || fail "$mode: systemd passed $(passed_conns "$new") stored connections to $new, expected 8 or more"
  [ "$(json_num closed <<< "$ws")" = 0 ] || fail "$mode: WebSockets closed: $ws"
  [ "$(json_num answered <<< "$ws")" = 10 ] || fail "$mode: not every WebSocket answered: $ws"
  [ "$(json_num ns_ok <<< "$ws")" = true ] || fail "$mode: n did not go on across the soft-reboot: $ws"
  grep -q "\"pids\": {\"$new\": 10}" <<< "$ws" || fail "$mode: WebSockets not all served by $new afterwards: $ws"
  case ":$(passed_names "$new"):" in *:wsconn-*) ;; *) fail "$mode: no WebSocket (wsconn-…) passed to $new" ;; esac
  echo "figure: $mode: soft-reboot -> first answer on a kept connection $(json_num first_answer_ms <<< "$out") ms, -> all 8 answered $(json_num all_answered_ms <<< "$out") ms; longest wait of one request $(json_num longest_wait_ms <<< "$out") ms, of a new connection $(json_num fresh_longest_ms <<< "$out") ms"
  if [ "$mode" = standalone ]; then
    ok "$mode: soft-reboot: 8 keep-alive connections served by $new on the same TCP connections, 10 WebSockets kept with their n, 0 refused, the same listener"
  else
    echo "figure: $mode: new connections during the soft-reboot: $(json_num fresh_refused <<< "$out") refused, $(json_num fresh_failed <<< "$out") failed otherwise, $(json_num fresh_ok <<< "$out") answered; listener inode $ino -> $(listen_ino 8080)"
    ok "$mode: soft-reboot: 8 keep-alive connections served by $new on the same TCP connections, 10 WebSockets kept with their n"
  fi
}

# Standalone: heird binds 127.0.0.1:8080 and keeps it in the store; the pin target keeps the
# store's unit loaded through the soft-reboot.
systemctl enable heird.service heird-soft-reboot.target
systemctl start heird-soft-reboot.target
wait_for 10 "heird.service active (pulled in by heird-soft-reboot.target)" is_state active
http /healthz >/dev/null || fail "standalone: no answer"
soft_reboot_with_clients standalone
wait_for 10 "the fd store back to the listener and the metrics alone" store_is 2

# What the drop-in costs at a plain stop: the store is kept (the port stays bound) until
# `systemctl clean --what=fdstore`.
systemctl stop heird.service
[ -n "$(listen_ino 8080)" ] || fail "standalone: the port was freed at a stop with FileDescriptorStorePreserve=yes"
systemctl clean --what=fdstore heird.service || fail "systemctl clean --what=fdstore exited $?"
wait_for 5 "port 8080 free after systemctl clean --what=fdstore" port_free 8080
ok "standalone: a stop keeps the store (port bound), systemctl clean --what=fdstore releases it"

# With the socket units as shipped (they stop with the old userspace and start with the new);
# heird-soft-reboot.target still keeps heird.service and its store loaded.
systemctl enable --now heird.socket heird-unix.socket
systemctl start heird.service
is_state active || fail "sockets: heird.service is $(prop ActiveState)"
soft_reboot_with_clients sockets
is_state active heird-unix.socket || fail "heird-unix.socket is $(prop ActiveState heird-unix.socket) after the soft-reboot"
http_unix /healthz >/dev/null || fail "sockets: the Unix socket does not answer after the soft-reboot"
wait_for 10 "the fd store back to the metrics alone (socket mode)" store_is 1
