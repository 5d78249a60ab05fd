#!/bin/bash
# `systemctl reload` under load: no request fails, MainPID moves to the successor, the unit
# stays active; then 20 reloads in a row under load, still no failure.
. "$(dirname "$0")/lib.sh"

start_heird
pid0=$(mainpid); gen0=$(http /info | json_num generation)

load_start /tmp/load1.json -c 8 -k 2 --duration 4s
sleep 1.5
systemctl reload heird.service || fail "systemctl reload exited $?"
pid1=$(mainpid)
[ "$pid1" != "$pid0" ] || fail "MainPID still $pid0 after the reload"
is_state active || fail "unit is $(prop ActiveState) after the reload"
[ "$(http /info | json_num pid)" = "$pid1" ] || fail "the new MainPID $pid1 is not the process that answers"
load_wait /tmp/load1.json
no_failures /tmp/load1.json
ok "one reload under load: MainPID $pid0 -> $pid1, no failed request"

load_start /tmp/load20.json -c 8 -k 2 --duration 8s
sleep 0.5
t0=$(ms)
for i in $(seq 20); do
  systemctl reload heird.service || fail "reload $i of 20 exited $?"
done
t1=$(ms)
kill -0 "$load_pid" 2>/dev/null || fail "the 20 reloads took $((t1 - t0)) ms, longer than the load (raise its --duration)"
load_wait /tmp/load20.json
no_failures /tmp/load20.json
ok "20 reloads in $((t1 - t0)) ms under load, no failed request"

is_state active || fail "unit is $(prop ActiveState) after 20 reloads"
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts = $(prop NRestarts)"
gen=$(http /info | json_num generation)
[ "$gen" = $((gen0 + 21)) ] || fail "generation $gen0 -> $gen after 21 reloads"
# The load is over, so every predecessor has drained: only the main process is left.
cg=/sys/fs/cgroup$(prop ControlGroup)
only_main() { [ "$(cat "$cg/cgroup.procs")" = "$(mainpid)" ]; }
wait_for 10 "predecessors to exit (left: $(tr '\n' ' ' < "$cg/cgroup.procs"))" only_main
ok "generation $gen0 -> $gen, only the main process $(mainpid) is left"
