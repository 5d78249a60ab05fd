#!/bin/bash
# `systemctl reload` under HTTP/2 load from a GOAWAY-aware client (h2retry: Go's x/net/http2
# Transport, which retries the streams a GOAWAY says were not processed, as browsers do):
# 10 reloads, 0 failed requests; then a WebSocket and an SSE stream across a reload.
# run.sh: needs-host golang-go golang-golang-x-net-dev
. "$(dirname "$0")/lib.sh"

[ -x /usr/local/bin/h2retry ] ||
  cannot_run "no h2retry (the host had no Go with golang.org/x/net to build it: golang-go, golang-golang-x-net-dev)"

start_heird
pid0=$(mainpid)
curl -sS --fail --http2-prior-knowledge http://127.0.0.1:8080/info | grep -q '"protocol":"HTTP/2.0"' \
  || fail "/info over h2c does not say HTTP/2.0"

/usr/local/bin/h2retry -url 'http://127.0.0.1:8080/sleep?duration=10ms' -conns 8 -workers 64 \
  -duration 8s > /tmp/h2.json 2> /dev/null &
h2pid=$!
sleep 1
t0=$(ms)
for i in $(seq 10); do
  systemctl reload heird.service || fail "reload $i of 10 exited $?"
  sleep 0.4
done
t1=$(ms)
kill -0 "$h2pid" 2>/dev/null || fail "the 10 reloads took $((t1 - t0)) ms, longer than the load"
wait "$h2pid" || fail "h2retry exited $?"
echo "h2retry: $(cat /tmp/h2.json)"
[ "$(json_num failed < /tmp/h2.json)" = 0 ] || fail "h2 load: $(json_num failed < /tmp/h2.json) failed"
[ "$(json_num ok < /tmp/h2.json)" -gt 0 ] || fail "h2 load: nothing succeeded"
[ "$(mainpid)" != "$pid0" ] || fail "MainPID still $pid0"
is_state active || fail "unit is $(prop ActiveState) after the reloads"
ok "10 reloads under h2 load (64 streams over 8 connections): 0 failed, MainPID $pid0 -> $(mainpid)"

# SSE: the stream ends at the reload; a reconnect with Last-Event-ID continues on the new pid.
pid1=$(mainpid)
curl -sSN --max-time 20 http://127.0.0.1:8080/events > /tmp/sse1.txt &
sse=$!
wait_for 5 "SSE events" grep -q '^id: 3' /tmp/sse1.txt
systemctl reload heird.service || fail "reload during SSE exited $?"
wait "$sse" || fail "the SSE stream did not end cleanly at the reload (curl exit $?)"
last=$(grep '^id: ' /tmp/sse1.txt | tail -n 1 | cut -d' ' -f2)
grep -q '"draining":true' /tmp/sse1.txt || fail "no last event: $(tail -n 3 /tmp/sse1.txt)"
curl -sN --max-time 0.5 -H "Last-Event-ID: $last" http://127.0.0.1:8080/events > /tmp/sse2.txt || true  # ends at --max-time
first=$(grep '^id: ' /tmp/sse2.txt | head -n 1 | cut -d' ' -f2)
[ "$first" = $((last + 1)) ] || fail "SSE resumed at id $first after $last"
grep -q "\"pid\":$(mainpid)" /tmp/sse2.txt || fail "SSE resumed on another pid than $(mainpid)"
ok "SSE: ended at id $last on pid $pid1, resumed at $first on pid $(mainpid)"
