#!/bin/bash
# On demand (idle_exit): heird exits when idle and heird.socket starts it again at the next
# connection. The moment of the exit is hammered: a client connects again 10 to 70 ms after each
# answer (uniformly, plus curl's own start), around the 50 ms idle time, so that connections land
# before the decision (the same process answers), between the decision and the exit, and after
# it (a new process answers). None may be refused, reset or closed unanswered: a
# connection that arrives once heird has decided to exit waits in the socket's backlog and starts
# the next process. IDLE_CYCLES exits (default 200; bench/on-demand.sh runs 1000).
. "$(dirname "$0")/lib.sh"

cycles=${IDLE_CYCLES:-200}
echo 'idle_exit = "50ms"' >> /etc/heird/heird.toml
heird check --config /etc/heird/heird.toml >/dev/null || fail "heird check refuses idle_exit"
# Every idle exit is a start of heird.service and an activation of heird.socket: lift systemd's
# rate limits (5 starts in 10 s; 20 triggers in 2 s), as the README says for short idle times.
mkdir -p /etc/systemd/system/heird.service.d /etc/systemd/system/heird.socket.d
printf '[Unit]\nStartLimitIntervalSec=0\n' > /etc/systemd/system/heird.service.d/idle-exit.conf
printf '[Socket]\nTriggerLimitIntervalSec=0\n' > /etc/systemd/system/heird.socket.d/idle-exit.conf
systemctl daemon-reload
systemctl start heird.socket

# One idle exit first, seen from systemd: inactive, Result=success, the socket still listening.
first=$(http /info | json_num pid) || fail "first request"
wait_for 10 "heird.service inactive after the idle time" is_state inactive
[ "$(prop Result)" = success ] || fail "Result=$(prop Result) after an idle exit"
is_state active heird.socket || fail "heird.socket is $(prop ActiveState heird.socket) after an idle exit"
log=$(heird_log)   # read whole: grep -q would end the pipe early (pipefail)
grep -q "no connection for the idle time" <<<"$log" || fail "no idle-exit line in the journal"
ok "pid $first exited when idle: Result=success, heird.socket listening"

# A sleep without a child process: `read -t` on a fifo that nobody writes.
fifo=/tmp/.nap-$$; mkfifo "$fifo"; exec {nap_fd}<>"$fifo"; rm -f "$fifo"
ok=0 same=0 refused=0 reset=0 empty=0 other=0 exits=0 requests=0 last=
t0=$(ms)
while [ "$exits" -lt "$cycles" ]; do
  rc=0
  body=$(curl -sS --max-time 10 http://127.0.0.1:8080/info 2>/tmp/curl.err) || rc=$?
  requests=$((requests + 1))
  case $rc in
    0)
      ok=$((ok + 1))
      pid=$(json_num pid <<<"$body")
      [ -n "$pid" ] || fail "no pid in /info: $body"
      if [ "$pid" = "$last" ]; then same=$((same + 1)); else exits=$((exits + 1)); fi
      last=$pid
      ;;
    7) refused=$((refused + 1)); echo "refused: $(cat /tmp/curl.err)" ;;
    56) reset=$((reset + 1)); echo "reset: $(cat /tmp/curl.err)" ;;
    52) empty=$((empty + 1)); echo "closed unanswered: $(cat /tmp/curl.err)" ;;
    *) other=$((other + 1)); echo "curl exit $rc: $(cat /tmp/curl.err)" ;;
  esac
  [ "$requests" -lt $((cycles * 20)) ] || fail "only $exits exits in $requests requests"
  read -r -t "0.0$((RANDOM % 61 + 10))" -u "$nap_fd" _ || true
done
secs=$(( ($(ms) - t0) / 1000 ))
echo "idle-exit race: $exits cycles, $requests requests in ${secs} s: ok=$ok (new process $exits, same process $same) refused=$refused reset=$reset closed_unanswered=$empty other=$other"
[ $((refused + reset + empty + other)) = 0 ] || fail "connections lost around the idle exit"
is_state active heird.socket || fail "heird.socket is $(prop ActiveState heird.socket) after the cycles"
log=$(journalctl --sync; journalctl -q --no-pager -u heird.service -o cat)
n=$(grep -c "no connection for the idle time" <<<"$log" || true)
[ "$n" -ge "$cycles" ] || fail "$n idle exits in the journal for $exits new processes"
ok "$exits idle exits, each followed by a new process: 0 refused, 0 reset, 0 closed unanswered"
