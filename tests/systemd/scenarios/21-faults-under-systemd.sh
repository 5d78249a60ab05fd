#!/bin/bash
# What systemd does when a process dies in the middle of a handoff, with heird's fault
# injection (a test build: `heird --version` says "fault-injection"; otherwise SKIP). A drop-in
# sets HEIRD_FAULT for the shipped unit. Cases:
#   ready-written:kill-old  the old main process dies before MAINPID=
#   mainpid-sent:kill-old   ... after MAINPID= but before the barrier
#   mainpid-sent:kill-new   the new main process dies right after MAINPID=
# Under load with the socket units: no connection is refused, and the unit ends active with
# MainPID = the process that answers. Prints what systemd did (restarts, main pid).
. "$(dirname "$0")/lib.sh"

/usr/bin/heird --version | grep -q fault-injection ||
  cannot_run "not a fault-injection build (build with --features fault-injection, as .ci/run does)"

for fault in ready-written:kill-old mainpid-sent:kill-old mainpid-sent:kill-new; do
  systemctl stop heird.service heird.socket heird-unix.socket 2>/dev/null || true
  systemctl reset-failed
  mkdir -p /etc/systemd/system/heird.service.d
  printf '[Service]\nEnvironment=HEIRD_FAULT=%s\n' "$fault" > /etc/systemd/system/heird.service.d/fault.conf
  systemctl daemon-reload
  start_heird
  pid0=$(mainpid)
  load_start /tmp/load.json -c 8 -k 2 --duration 6s
  sleep 1
  rc=0; systemctl reload heird.service 2>/tmp/reload.err || rc=$?
  wait_for 20 "heird.service active again" is_state active
  wait_for 10 "an answer" http /healthz
  sleep 1
  load_wait /tmp/load.json
  refused=$(json_num refused < /tmp/load.json)
  main=$(mainpid); answering=$(http /info | json_num pid)
  echo "figure: $fault: reload exit $rc, NRestarts=$(prop NRestarts), MainPID $pid0 -> $main (answering $answering), Result=$(prop Result); $(load_line /tmp/load.json)"
  # (Informational: which of these systemd logged depends on timing; none at all is fine, e.g.
  # when the old process got MAINPID= out before the fault killed it.)
  { journalctl -q --no-pager -u heird.service -o cat | grep -E "Main process exited|Supervising|Scheduled restart|take the service back|taking the service back" || true; } | tail -n 5 | sed 's/^/  journal: /'
  [ "$refused" = 0 ] || fail "$fault: $refused connections refused"
  [ "$main" = "$answering" ] || fail "$fault: MainPID $main but pid $answering answers"
  ok "$fault: no connection refused; the unit is active with MainPID $main"
  rm /etc/systemd/system/heird.service.d/fault.conf
done
systemctl daemon-reload
