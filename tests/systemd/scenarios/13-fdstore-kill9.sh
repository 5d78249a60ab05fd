#!/bin/bash
# Standalone, `kill -9` of the main process under load, twice: Restart=on-failure brings heird
# back, and the listening socket, kept in the fd store, never closes: no connection is refused.
# Requests in flight on the killed process may fail; they are counted and printed.
. "$(dirname "$0")/lib.sh"

start_standalone
store_is 2 || { show_store; fail "NFileDescriptorStore=$(nstore) after a standalone start, expected 2 (the listener and the metrics' counters)"; }
ino0=$(listen_ino 8080)

load_start /tmp/load.json -c 8 -k 4 --duration 9s
sleep 1.5
for i in 1 2; do
  pid=$(mainpid) restarts=$(prop NRestarts)
  t0=$(ms)
  kill -KILL "$pid"
  back() { p=$(curl -s --max-time 5 http://127.0.0.1:8080/info 2>/dev/null | json_num pid || true); [ -n "$p" ] && [ "$p" != "$pid" ]; }
  wait_for 20 "an answer from a new pid after kill -9 of $pid" back
  t1=$(ms)
  wait_for 10 "heird.service active again" is_state active
  [ "$(mainpid)" = "$p" ] || fail "kill $i: /info answered from $p, MainPID is $(mainpid)"
  [ "$(prop NRestarts)" = $((restarts + 1)) ] || fail "kill $i: NRestarts $restarts -> $(prop NRestarts)"
  passed_has "$p" bound-tcp-127.0.0.1_8080 || fail "kill $i: LISTEN_FDNAMES=$(passed_names "$p") lacks bound-tcp-127.0.0.1_8080"
  wait_for 5 "kill $i: the fd store to hold just the listener and the metrics (NFileDescriptorStore=$(nstore))" store_is 2
  [ "$(listen_ino 8080)" = "$ino0" ] || fail "kill $i: the listener's socket inode changed $ino0 -> $(listen_ino 8080)"
  echo "  kill -9 $i: $pid -> $p (LISTEN_FDNAMES=$(passed_names "$p")), first response of the new pid after $((t1 - t0)) ms, NRestarts $(prop NRestarts)"
  [ "$i" = 2 ] || sleep 2.5
done
kill -0 "$load_pid" 2>/dev/null || fail "the load ended before the last kill (raise its --duration)"
load_wait /tmp/load.json
echo "  load: $(load_line /tmp/load.json)"
refused=$(json_num refused < /tmp/load.json)
[ "$refused" = 0 ] || fail "$refused connections refused across kill -9"
other=$(json_num failed < /tmp/load.json)
ok "2 x kill -9 under load: 0 refused; $other requests failed in flight on the killed processes (allowed)"
echo "journal of the kills:"
journalctl -q --no-pager -u heird.service -o cat | grep -vE '^$' | grep -iE 'killed|signal|status=|failed|error|warn|restart|stop' | head -n 30 | sed 's/^/  | /' || true
