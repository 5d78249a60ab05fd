#!/bin/bash
# `systemctl stop` after a handoff drains: a request in flight completes with 200, the
# successor exits by itself, and systemd kills nothing (see ExecStop= in heird.service).
. "$(dirname "$0")/lib.sh"

start_heird
systemctl reload heird.service || fail "reload exited $?"
pid=$(mainpid)
http /info >/dev/null

# in_flight PID: the request curl sent is in PID's handler. curl's -v trace shows the request
# headers ("> GET ...", then "> "), curl sleeps waiting for the answer, PID holds the server end
# of curl's connection to 127.0.0.1:8080 (0100007F:1F90 in /proc/net/tcp), and nothing sent on
# it is unread.
in_flight() {
  local sl local_ rem st queues rest inode client= unread=
  grep -q '^> GET /sleep' /tmp/slow.err && grep -qE $'^> \r?$' /tmp/slow.err || return 1
  [ "$(sed -E 's/.*\) (.).*/\1/' "/proc/$curl_pid/stat" 2>/dev/null)" = S ] || return 1
  while read -r sl local_ rem st queues rest; do
    [ "$rem" = 0100007F:1F90 ] && [ "$st" = 01 ] && client=$local_
  done < /proc/net/tcp
  [ -n "$client" ] || return 1
  while read -r sl local_ rem st queues _ _ _ _ inode rest; do
    [ "$local_" = 0100007F:1F90 ] && [ "$rem" = "$client" ] && { unread=${queues#*:}; break; }
  done < /proc/net/tcp
  [ "$unread" = 00000000 ] || return 1
  local fd
  for fd in "/proc/$1/fd/"*; do
    [ "$(readlink "$fd")" = "socket:[$inode]" ] && return 0
  done
  return 1
}

curl -sS -v --max-time 20 -o /tmp/slow.body -w '%{http_code}' 'http://127.0.0.1:8080/sleep?duration=2s' > /tmp/slow.code 2>/tmp/slow.err &
curl_pid=$!
wait_for 10 "the request in the handler of successor $pid" in_flight "$pid"
since=$(date '+%Y-%m-%d %H:%M:%S')
t0=$(ms)
systemctl stop heird.service || fail "systemctl stop exited $?"
t1=$(ms)
wait "$curl_pid" || fail "the in-flight request failed: $(cat /tmp/slow.err)"
[ "$(cat /tmp/slow.code)" = 200 ] || fail "the in-flight request got HTTP $(cat /tmp/slow.code)"
ok "in-flight request completed with 200; stop took $((t1 - t0)) ms"

[ ! -e "/proc/$pid" ] || fail "successor $pid still exists after stop"
is_state inactive || fail "unit is $(prop ActiveState) after stop"
[ "$(prop Result)" = success ] || fail "Result=$(prop Result)"
journalctl --sync   # everything logged so far is in the journal before we look for an absence
journal=$(journalctl -q --no-pager -u heird.service --since "$since")
echo "$journal" | sed 's/^/  | /'
if grep -E 'Killing process|SIGKILL|status=9/KILL' <<<"$journal"; then fail "systemd killed a process"; fi
ok "successor $pid exited by itself, Result=success, nothing killed"
