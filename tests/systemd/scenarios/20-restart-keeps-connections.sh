#!/bin/bash
# Keep-alive connections survive `systemctl restart`: at the stop, heird leaves its idle
# connections in the fd store (named conn-…); the next process serves them on the same TCP
# connections. Under load with keep-alive and new-connection clients, in standalone mode and
# with the socket units: no request fails, and keep-alive clients do not reconnect (the store
# has room: FileDescriptorStoreMax=128 for 8 connections).
. "$(dirname "$0")/lib.sh"

restart_under_load() {  # MODE
  load_start /tmp/load-$1.json -c 8 -k 2 --duration 9s
  sleep 1.5
  local pids=("$(mainpid)")
  for i in 1 2 3; do
    systemctl restart heird.service || fail "$1: restart $i exited $?"
    pids+=("$(mainpid)")
    sleep 2.3
  done
  load_wait /tmp/load-$1.json
  no_failures /tmp/load-$1.json
  local re; re=$(json_num reconnects < /tmp/load-$1.json)
  echo "figure: $1: 3 restarts, pids ${pids[*]}: $(load_line /tmp/load-$1.json)"
  [ "$re" = 0 ] || fail "$1: keep-alive clients reconnected $re times across 3 restarts"
  [ "$(nstore)" -ge 1 ] || [ "$1" = sockets ] || fail "$1: listener missing from the fd store"
  ok "$1: 3 restarts under load, 0 failed, 0 reconnects"
}

start_standalone
restart_under_load standalone
systemctl stop heird.service
systemctl reset-failed

start_heird
restart_under_load sockets
# Only the metrics' counters are left in the store in socket mode (standalone: the listener
# too); connections taken over were removed from it by the new process.
n=$(nstore)
[ "$n" = 1 ] || { show_store; fail "fd store holds $n fds in socket mode after the restarts, expected 1 (heird-metrics)"; }
ok "the fd store holds the metrics' counters alone again in socket mode"
