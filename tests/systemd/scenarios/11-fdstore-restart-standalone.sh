#!/bin/bash
# Standalone (no socket units): heird binds 127.0.0.1:8080 itself and keeps the listener in
# systemd's fd store. `systemctl restart heird.service` every 2.5 s for 10 s under load (keep-
# alive and new-connection clients): no request fails, not even by a refused connection,
# because the listening socket never closes; each restart brings a new pid that answers /info.
# Prints the time from `systemctl restart` to the first response of the new pid, and how many
# idle keep-alive connections came back through the store (conn-* fds, the connection moves).
. "$(dirname "$0")/lib.sh"

start_standalone
pid=$(mainpid)
[ "$(nstore)" = 2 ] || { show_store; fail "NFileDescriptorStore=$(nstore) after a standalone start, expected 2 (the bound listener and the metrics' counters)"; }
show_store
ino0=$(listen_ino 8080)
ok "standalone start: MainPID $pid, 1 listener in the fd store (socket inode $ino0)"

load_start /tmp/load.json -c 8 -k 4 --duration 14s
sleep 1
firsts=() cmds=() pids=("$pid")
for i in 1 2 3 4 5; do   # at 0, 2.5, 5, 7.5 and 10 s: within systemd's default 5 starts per 10 s
  t=$(ms)
  restart_timed
  pid1=$(mainpid)
  [ "$pid1" != "$pid" ] || fail "restart $i: MainPID still $pid"
  [ "$new_pid" = "$pid1" ] || fail "restart $i: /info answered from pid $new_pid, MainPID is $pid1"
  [ "$(http /info | json_num pid)" = "$pid1" ] || fail "restart $i: /info does not show MainPID $pid1"
  passed_has "$pid1" bound-tcp-127.0.0.1_8080 || fail "restart $i: LISTEN_FDNAMES=$(passed_names "$pid1") lacks the stored bound-tcp-127.0.0.1_8080"
  conns=$(passed_conns "$pid1")
  wait_for 5 "restart $i: the fd store to hold just the listener and the metrics (NFileDescriptorStore=$(nstore))" store_is 2
  n=$(nstore)
  ino=$(listen_ino 8080)
  [ "$ino" = "$ino0" ] || fail "restart $i: the listener's socket inode changed $ino0 -> $ino (bound anew, not taken from the store)"
  echo "  restart $i: $pid -> $pid1, first response of the new pid after $first_ms ms, systemctl returned after $cmd_ms ms; store $n; passed: the listener + $conns stored connections"
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
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts=$(prop NRestarts)"
show_store
ok "5 restarts in standalone mode under load: 0 failed, pids ${pids[*]}, the same listening socket throughout"
echo "restart -> first response of the new pid (ms): ${firsts[*]}; systemctl restart returned after (ms): ${cmds[*]}"
