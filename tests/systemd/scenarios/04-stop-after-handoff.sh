#!/bin/bash
# `systemctl stop` after a handoff drains: a request in flight completes with 200, the
# successor exits by itself, and systemd kills nothing (see ExecStop= in heird.service).
. "$(dirname "$0")/lib.sh"

start_heird
systemctl reload heird.service || fail "reload exited $?"
pid=$(mainpid)
http /info >/dev/null

curl -sS --max-time 20 -o /tmp/slow.body -w '%{http_code}' 'http://127.0.0.1:8080/sleep?duration=2s' > /tmp/slow.code 2>/tmp/slow.err &
curl_pid=$!
sleep 0.5
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
