#!/usr/bin/env bash
# How long the load client's stop takes (`LoadHandle::stop` in tests/support/load.rs) against a
# server that reads nothing and answers nothing: each request in flight at the stop ends at the
# request timeout (then an EOF grace of 50 ms), so the stop takes up to about TIMEOUT + 50 ms.
# tests/load_client.rs (`silent_server_times_out_and_stop_is_prompt`) asserts the behaviour:
# every request in flight at the stop is waited for and counted, and the stop returns although
# the server never lets go. This script prints the figure, which that test once bounded as a
# window (150–600 ms for a 300 ms timeout).
#
#   bench/load-stop.sh [RUNS] [TIMEOUT]     # defaults: 10 runs, 300ms
#
# Each run: `heird-load -c 2 -k 2 --duration 1s --timeout TIMEOUT` (release build); the stop
# is its elapsed time less the 1 s of load. The clients start together and every request ends
# at the timeout, so the stop comes at the same point each run: with 300ms, 100 ms into the
# fourth round of requests, which leaves their last 200 ms plus the grace to wait.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
timeout=${2:-300ms}
command -v python3 >/dev/null || { echo "load-stop bench: needs python3 (apt-get install python3)" >&2; exit 1; }

echo "load-stop bench: cargo build --release --example heird-load" >&2
cargo build --release --example heird-load >&2
load=target/release/examples/heird-load

work=$(mktemp -d /tmp/heird-load-stop.XXXXXX)
server=
trap '[ -z "$server" ] || kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# The silent server: accepts and holds every connection, never reads, never answers.
python3 -c '
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(128)
print(s.getsockname()[1], flush=True)
held = []
while True:
    held.append(s.accept()[0])
' > "$work/port" &
server=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")
[ -n "$port" ] || { echo "load-stop bench: the silent server did not start" >&2; exit 1; }

echo "| run | stop (ms) | requests timed out |"
echo "|---|---|---|"
stops=()
for i in $(seq "$runs"); do
  out=$("$load" --addr "127.0.0.1:$port" -c 2 -k 2 --duration 1s --timeout "$timeout" --json || true)
  elapsed=$(grep -oE '"elapsed_ms":[0-9]+' <<<"$out" | cut -d: -f2)
  timeouts=$(grep -oE '"timeout":[0-9]+' <<<"$out" | cut -d: -f2)
  [ -n "$elapsed" ] || { echo "load-stop bench: no elapsed_ms in: $out" >&2; exit 1; }
  stop=$((elapsed - 1000))
  stops+=("$stop")
  echo "| $i | $stop | $timeouts |"
done
sorted=($(printf '%s\n' "${stops[@]}" | sort -n))
n=${#sorted[@]}
echo
echo "stop with requests in flight (timeout $timeout, $n runs): min ${sorted[0]} ms," \
  "median ${sorted[$((n / 2))]} ms, max ${sorted[$((n - 1))]} ms"
