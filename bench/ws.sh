#!/usr/bin/env bash
# WebSocket clients across restarts: closes and reconnects per restart for
#   move   heird's handoff with the resumable /ws (heird::ws): connections move
#   1012   heird's handoff with /ws-close (axum's WebSocket): each closes with 1012, reconnects
#   naive  stop-then-start of heird (SIGTERM, wait, start a new one on the same port)
#
#   bench/ws.sh [CLIENTS] [RESTARTS]     (default 50 clients, 10 restarts, one every 1.5 s)
#
# The client is Python's `websockets` (Debian's /usr/bin/python3 with python3-websockets; see
# tests/clients/ws_client.py `bench`): each client sends a message, waits for its reply, pauses
# 20 ms; on a close it reconnects every 10 ms and resends what was not answered.
# HEIRD_BIN picks the binary (default target/release/heird when built, else target/debug/heird).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-50} restarts=${2:-10} gap=1.5
bin=${HEIRD_BIN:-$( [ -x target/release/heird ] && echo target/release/heird || echo target/debug/heird )}
py=/usr/bin/python3
$py -c 'import websockets' 2>/dev/null || { echo "bench/ws.sh needs $py with python3-websockets" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench/ws.sh: $bin missing (cargo build)" >&2; exit 1; }
port=$(( 20000 + RANDOM % 20000 ))
addr=127.0.0.1:$port
serving_pid() { curl -s --max-time 2 "http://$addr/info" | grep -oE '"pid":[0-9]+' | head -1 | cut -d: -f2; }
# On the way out, stop whatever heird still serves our port (ours: the port is private to us).
work=$(mktemp -d); trap 'p=$(serving_pid); [ -z "$p" ] || kill -TERM "$p"; rm -rf "$work"' EXIT

start() {
  "$bin" serve --listen "$addr" >> "$work/log" 2>&1 &
  for _ in $(seq 200); do [ -n "$(serving_pid)" ] && return; sleep 0.02; done
  echo "heird did not start" >&2; exit 1
}

run() {  # MODE PATH
  local mode=$1 path=$2 secs out pid
  secs=$(awk -v r="$restarts" -v g="$gap" 'BEGIN { print r * g + 2 }')
  start
  $py tests/clients/ws_client.py bench "ws://$addr$path" "$clients" "$secs" > "$work/$mode.json" &
  local cpid=$!
  sleep 1
  for _ in $(seq "$restarts"); do
    pid=$(serving_pid)
    if [ "$mode" = naive ]; then
      kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
      start
    else
      kill -USR2 "$pid"
    fi
    sleep "$gap"
  done
  wait "$cpid"
  out=$(cat "$work/$mode.json")
  pid=$(serving_pid); kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
  python3 - "$mode" "$restarts" "$out" <<'PY'
import json, sys
mode, restarts, s = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
closes = sum(s["closes"].values())
print(f"| {mode} | {closes / restarts:.1f} ({', '.join(f'{k}: {v}' for k, v in sorted(s['closes'].items())) or 'none'}) "
      f"| {s['reconnects'] / restarts:.1f} | {s['failed_connects']} | {s['resent']} | {s['messages']} |")
PY
}

echo "$clients clients, $restarts restarts ($bin)"
echo
echo "| restart | closes per restart (by code) | reconnects per restart | failed connects | messages resent | messages answered |"
echo "|---|---|---|---|---|---|"
run move /ws
run 1012 /ws-close
run naive /ws-close
