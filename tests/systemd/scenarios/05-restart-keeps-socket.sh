#!/bin/bash
# `systemctl restart heird.service` with the socket units kept: connections wait in the listen
# backlog while no process serves, so none is refused.
. "$(dirname "$0")/lib.sh"

start_heird
pid0=$(mainpid)
load_start /tmp/load.json -c 8 -k 2 --duration 5s
sleep 1.5
systemctl restart heird.service || fail "restart exited $?"
pid1=$(mainpid)
[ "$pid1" != "$pid0" ] && [ "$pid1" != 0 ] || fail "MainPID $pid0 -> $pid1"
load_wait /tmp/load.json
refused=$(json_num refused < /tmp/load.json)
[ "$refused" = 0 ] || fail "$refused connections refused across the restart"
grep -q "\"$pid1\"[[:space:]]*:" /tmp/load.json || fail "no response from the new process $pid1 during the load"
grep -q "\"$pid0\"[[:space:]]*:" /tmp/load.json || fail "no response from the old process $pid0 during the load"
is_state active heird.socket && is_state active heird-unix.socket || fail "a socket unit is no longer active"
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts = $(prop NRestarts)"
ok "restart $pid0 -> $pid1 under load: 0 refused (other failures are not part of this contract)"
