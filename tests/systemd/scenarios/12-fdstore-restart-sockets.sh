#!/bin/bash
# With heird.socket and heird-unix.socket active: `systemctl restart heird.service` every 2.5 s
# for 10 s under load: no request fails (the socket units hold the listeners), each restart
# brings a new pid, and no listener is put in the fd store (socket-unit fds are never stored;
# idle connections may pass through it across a restart, and are taken out by the next process).
. "$(dirname "$0")/lib.sh"

start_heird
pid=$(mainpid)
[ "$(nstore)" = 1 ] || { show_store; fail "NFileDescriptorStore=$(nstore) with the socket units, expected 1 (the metrics' counters)"; }
ok "socket-activated: MainPID $pid, LISTEN_FDNAMES=$(passed_names "$pid"), fd store empty"

load_start /tmp/load.json -c 8 -k 4 --duration 14s
sleep 1
firsts=() cmds=() pids=("$pid")
for i in 1 2 3 4 5; do
  t=$(ms)
  restart_timed
  pid1=$(mainpid)
  [ "$pid1" != "$pid" ] || fail "restart $i: MainPID still $pid"
  [ "$new_pid" = "$pid1" ] || fail "restart $i: /info answered from pid $new_pid, MainPID is $pid1"
  conns=$(passed_conns "$pid1")
  wait_for 5 "restart $i: the fd store to hold the metrics alone again (NFileDescriptorStore=$(nstore))" store_is 1
  http_unix /healthz >/dev/null || fail "restart $i: the Unix socket does not answer"
  echo "  restart $i: $pid -> $pid1, first response of the new pid after $first_ms ms, systemctl returned after $cmd_ms ms; passed: $(passed_names "$pid1" | tr ':' '\n' | grep -v '^conn-' | paste -sd:) + $conns stored connections"
  firsts+=("$first_ms"); cmds+=("$cmd_ms"); pids+=("$pid1"); pid=$pid1
  [ "$i" = 5 ] || sleep "$(awk -v d=$(( $(ms) - t )) 'BEGIN { s = (2500 - d) / 1000; print (s > 0 ? s : 0) }')"
done
kill -0 "$load_pid" 2>/dev/null || fail "the load ended before the last restart (raise its --duration)"
load_wait /tmp/load.json
echo "  load: $(load_line /tmp/load.json)"
no_failures /tmp/load.json
for p in "${pids[@]}"; do
  grep -q "\"$p\":" /tmp/load.json || fail "pid $p served no request of the load"
done
is_state active heird.socket && is_state active heird-unix.socket || fail "a socket unit is no longer active"
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts=$(prop NRestarts)"
ok "5 restarts with the socket units under load: 0 failed, pids ${pids[*]}, fd store empty"
echo "restart -> first response of the new pid (ms): ${firsts[*]}; systemctl restart returned after (ms): ${cmds[*]}"
