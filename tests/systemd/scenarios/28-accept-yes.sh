#!/bin/bash
# One process per connection: deploy/heird-accept.socket (Accept=yes) + heird-accept@.service as
# shipped. 50 concurrent connections make 50 instances, each serving its one connection (two
# requests on it: keep-alive), all answered, all exited 0 once their client closed.
. "$(dirname "$0")/lib.sh"

n=50
cp "$HEIRD_PROJECT/deploy/heird-accept.socket" "$HEIRD_PROJECT/deploy/heird-accept@.service" /etc/systemd/system/
systemctl daemon-reload
systemctl start heird-accept.socket
is_state active heird-accept.socket || fail "heird-accept.socket: $(prop ActiveState heird-accept.socket)"
instances() { systemctl list-units --no-legend --plain --state=active 'heird-accept@*.service' | grep -c . || true; }
[ "$(instances)" = 0 ] || fail "instances before any connection"
ok "heird-accept.socket listening on 127.0.0.1:8081, no instance yet"

# Each client: GET /sleep?duration=4s then GET /info on the same connection (curl reuses it).
dir=$(mktemp -d)
for i in $(seq 1 $n); do
  curl -sS --max-time 60 -o "$dir/sleep-$i" -w '%{http_code} %{num_connects}\n' \
    'http://127.0.0.1:8081/sleep?duration=4s' -o "$dir/info-$i" http://127.0.0.1:8081/info \
    > "$dir/codes-$i" 2> "$dir/err-$i" &
done
peak=0
for _ in $(seq 1 60); do
  c=$(instances); [ "$c" -le "$peak" ] || peak=$c
  [ "$peak" -lt $n ] || break
  sleep 0.1
done
wait
echo "peak: $peak instances active at once"
[ "$peak" = $n ] || fail "$peak instances at once for $n connections"

pids=() bad=0
for i in $(seq 1 $n); do
  codes=$(tr '\n' ' ' < "$dir/codes-$i")
  # Two 200s, and one connection for both requests.
  if [ "$codes" != "200 1 200 0 " ] || ! grep -q "Hello World" "$dir/sleep-$i"; then
    echo "client $i: codes '$codes' (code, new connections per request), $(cat "$dir/err-$i")"; bad=$((bad + 1)); continue
  fi
  pids+=("$(json_num pid < "$dir/info-$i")")
done
[ "$bad" = 0 ] || fail "$bad of $n clients not answered twice on one connection"
distinct=$(printf '%s\n' "${pids[@]}" | sort -u | grep -c .)
[ "$distinct" = $n ] || fail "$distinct distinct pids for $n connections"
ok "$n connections answered (2 requests each, keep-alive) by $distinct processes"

wait_for 20 "every instance exited" bash -c '[ "$(systemctl list-units --no-legend --plain --all "heird-accept@*.service" | grep -c " active \| activating \| deactivating ")" = 0 ]'
failed=$(systemctl list-units --no-legend --plain --failed 'heird-accept@*.service' | grep -c . || true)
[ "$failed" = 0 ] || fail "$failed instances failed: $(systemctl list-units --no-legend --failed 'heird-accept@*.service')"
log=$(journalctl --sync; journalctl -q --no-pager -u 'heird-accept@*.service' -o cat)
closed=$(grep -c "the connection closed; exiting" <<<"$log" || true)
[ "$closed" = $n ] || fail "$closed 'the connection closed; exiting' lines for $n instances"
is_state active heird-accept.socket || fail "heird-accept.socket is $(prop ActiveState heird-accept.socket) afterwards"
ok "all $n instances exited 0 (none failed), heird-accept.socket still listening"
