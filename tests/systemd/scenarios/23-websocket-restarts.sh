#!/bin/bash
# Resumable WebSockets (heird::ws, the demo's /ws) survive `systemctl restart`: at the stop each
# connection parks at a frame boundary and goes into the fd store with its state (wsconn-… and
# wsmsg-…); the next process resumes it. 20 clients send and wait for each reply throughout 5
# restarts, in standalone mode and with the socket units: no close, every message answered in
# order, `n` continuous, every client served by all 6 processes.
# run.sh: needs-root python3-websockets
. "$(dirname "$0")/lib.sh"

client=$HEIRD_PROJECT/tests/clients/ws_client.py
/usr/bin/python3 -c 'import websockets' 2>/dev/null ||
  cannot_run "this root has no /usr/bin/python3 with python3-websockets (the WebSocket client)"

restarts_with_websockets() {  # MODE
  /usr/bin/python3 "$client" steady ws://127.0.0.1:8080/ws 20 15 > /tmp/ws-$1.json 2> /tmp/ws-$1.err &
  local cpid=$! pids=("$(mainpid)") i
  sleep 1.5
  # 2.6 s apart: the start and 5 restarts stay within systemd's default 5 starts per 10 s.
  for i in 1 2 3 4 5; do
    systemctl restart heird.service || fail "$1: restart $i exited $?"
    pids+=("$(mainpid)")
    sleep 2.6
  done
  wait "$cpid" || { cat /tmp/ws-$1.err; fail "$1: the WebSocket client exited $?"; }
  local out; out=$(cat /tmp/ws-$1.json)
  echo "figure: $1: 5 restarts, pids ${pids[*]}: $out"
  [ "$(json_num closed <<< "$out")" = 0 ] || fail "$1: WebSockets closed: $out"
  [ "$(json_num in_order <<< "$out")" = true ] || fail "$1: a message was lost, doubled or reordered: $out"
  [ "$(json_num n_continuous <<< "$out")" = true ] || fail "$1: n did not go on across a restart: $out"
  [ "$(json_num min_pids_per_client <<< "$out")" = 6 ] || fail "$1: a client was not served by all 6 processes: $out"
  ok "$1: 20 WebSockets across 5 restarts, 0 closes, every message answered once, in order"
}

start_standalone
restarts_with_websockets standalone
systemctl stop heird.service
systemctl reset-failed

start_heird
restarts_with_websockets sockets
