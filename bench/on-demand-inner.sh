#!/bin/bash
# on-demand-inner.sh — runs inside the sandbox for bench/on-demand.sh (heird installed as a
# package installs it, systemd as PID 1). Cold start: STARTS times, wait until heird.service is
# inactive (heird exited when idle) with heird.socket listening, then one GET /healthz with curl
# and the time from the TCP connect (the socket unit's backlog accepted it) to the first response
# byte. Prints one "start N cold_us U pid P" line each, then a warm reference (a second request
# to the running process).
set -euo pipefail
STARTS=${1:-100}

echo 'idle_exit = "50ms"' >> /etc/heird/heird.toml
mkdir -p /etc/systemd/system/heird.service.d /etc/systemd/system/heird.socket.d
printf '[Unit]\nStartLimitIntervalSec=0\n' > /etc/systemd/system/heird.service.d/idle-exit.conf
printf '[Socket]\nTriggerLimitIntervalSec=0\n' > /etc/systemd/system/heird.socket.d/idle-exit.conf
systemctl daemon-reload
systemctl start heird.socket

inactive() { [ "$(systemctl show -P ActiveState heird.service)" = inactive ]; }
until_inactive() {
  local i
  for i in $(seq 1 200); do inactive && return 0; sleep 0.05; done
  echo "heird.service did not exit when idle" >&2; exit 1
}
# µs between curl's connect and its first byte, from -w's seconds with 6 decimals.
us() { awk -v c="$1" -v f="$2" 'BEGIN { printf "%d", (f - c) * 1000000 }'; }

for n in $(seq 1 "$STARTS"); do
  until_inactive
  out=$(curl -sS --max-time 10 -o /dev/null -w '%{time_connect} %{time_starttransfer} %{http_code}' http://127.0.0.1:8080/healthz)
  read -r c f code <<<"$out"
  [ "$code" = 200 ] || { echo "start $n: HTTP $code" >&2; exit 1; }
  echo "start $n cold_us $(us "$c" "$f") pid $(systemctl show -P MainPID heird.service)"
done
until_inactive
curl -sS -o /dev/null http://127.0.0.1:8080/healthz
for n in $(seq 1 20); do
  out=$(curl -sS --max-time 10 -o /dev/null -w '%{time_connect} %{time_starttransfer}' http://127.0.0.1:8080/healthz)
  read -r c f <<<"$out"
  echo "warm $n us $(us "$c" "$f")"
done
