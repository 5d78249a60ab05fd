#!/usr/bin/env bash
# HTTP/2 (h2c) benchmark: h2load throughput and server CPU per request of heird (`bench-heird-hello`)
# against plain `axum::serve` with the same router (no handoffs), and, with the GOAWAY-aware
# client tests/clients/h2retry (Go's x/net/http2
# Transport: retries streams a GOAWAY says were not processed), failed requests and new
# connections per restart for heird's handoff, a naive stop-then-start of heird, and an nginx
# reload. Prints markdown tables. See bench/README.md ("HTTP/2").
#
#   bench/h2.sh [ROUNDS] [RESTARTS]     # defaults: 3 throughput rounds, 20 restarts per run
#
# The axum baseline sets TCP_NODELAY as heird does (like for like: most of the h2 gap measured
# before was that option, not heird); AXUM_NODELAY=0 measures it without.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
restarts=${2:-20}
nodelay=(--nodelay); nodelay_text="TCP_NODELAY on, as heird"
if [ "${AXUM_NODELAY:-1}" = 0 ]; then nodelay=(); nodelay_text="TCP_NODELAY off; heird sets it"; fi
# Each load run: 1 s before the first restart, one restart a second, 2 s after the last (a
# naive restart takes longer than its second; the load then ends sooner after the last one).
secs=$((restarts + 3))

missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v go >/dev/null || missing+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/net/http2 ] || missing+=(golang-golang-x-net-dev)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v taskset >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "h2 bench: missing ${missing[*]}; apt-get install ${missing[*]} (or run as root)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "h2 bench: cargo build --release (heird, bench-plain-axum, bench-heird-hello); go build h2retry" >&2
cargo build --release --bin heird --example bench-plain-axum --example bench-heird-hello >&2
work=$(mktemp -d /tmp/heird-h2-bench.XXXXXX)
# Every heird of this run, successors included, has its RUNTIME_DIRECTORY under $work.
kill_heirds() {
  for e in /proc/[0-9]*/environ; do
    if { tr '\0' '\n' < "$e"; } 2>/dev/null | grep -q "^RUNTIME_DIRECTORY=$1"; then
      p=${e#/proc/}; kill "${p%/environ}" 2>/dev/null || true
    fi
  done
}
trap 'kill_heirds "$work"; for p in $(cat "$work"/pids 2>/dev/null); do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
cp target/release/heird "$work/heird"
GOCACHE="$work/gocache" GOPATH=/usr/share/gocode GO111MODULE=off \
  go build -o "$work/h2retry" tests/clients/h2retry/main.go

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 200); do curl -s -o /dev/null --http2-prior-knowledge "http://$1/" && return 0; sleep 0.05; done; echo "nothing serves $1" >&2; exit 1; }

echo "## HTTP/2 (h2c)"
echo
echo "$(date -u +%FT%TZ), $(nproc) cores, $(uname -r), heird $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "### Throughput: h2load -t1 -c32 -m10 -D5, server on core 0, client on core 1"
echo
echo "heird hello is \`examples/bench-heird-hello\` (heird serving exactly the router of"
echo "\`bench-plain-axum\`); CPU per request is the server's utime + stime over the run ÷ requests."
echo
echo "| round | heird hello req/s | axum::serve req/s ($nodelay_text) | ratio | heird hello CPU/request | axum CPU/request | CPU ratio |"
echo "|---|---|---|---|---|---|---|"
ratios=(); cratios=()
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# h2rps PID ADDR: prints "REQ_PER_S CPU_US_PER_REQUEST" for one h2load run against ADDR.
h2rps() {
  local c0 c1 out rps n
  c0=$(cpu_of "$1")
  out=$(taskset -c 1 h2load -t1 -c32 -m10 -D5 "http://$2/" 2>&1)
  c1=$(cpu_of "$1")
  rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' <<<"$out")
  n=$(awk '/^requests:/ {print $8}' <<<"$out")
  python3 -c "print($rps, f'{($c1-$c0)/$ticks*1e6/max($n,1):.2f}')"
}
for r in $(seq "$rounds"); do
  a=127.0.0.1:$(port); b=127.0.0.1:$(port)
  RUNTIME_DIRECTORY="$work" taskset -c 0 target/release/examples/bench-heird-hello "$a" 2>/dev/null & hp=$!
  taskset -c 0 target/release/examples/bench-plain-axum "$b" "${nodelay[@]}" >/dev/null & ap=$!
  echo "$hp $ap" >> "$work/pids"
  wait_up "$a"; wait_up "$b"
  if [ $((r % 2)) = 1 ]; then read -r h hc < <(h2rps "$hp" "$a"); read -r p pc < <(h2rps "$ap" "$b");
  else read -r p pc < <(h2rps "$ap" "$b"); read -r h hc < <(h2rps "$hp" "$a"); fi
  kill "$hp" "$ap"; wait "$hp" "$ap" 2>/dev/null || true
  ratio=$(python3 -c "print(f'{$h/$p:.2f}')")
  cratio=$(python3 -c "print(f'{$hc/$pc:.2f}')")
  ratios+=("$ratio"); cratios+=("$cratio")
  echo "| $r | $h | $p | $ratio | $hc µs | $pc µs | $cratio |"
done
echo
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median req/s ratio: $(median "${ratios[@]}"); median CPU per request ratio: $(median "${cratios[@]}")"
echo
echo "### Restarts under h2 load: h2retry, 64 concurrent streams over 8 connections, GET /sleep?duration=10ms (nginx: GET /), $restarts restarts 1 s apart"
echo
echo "| server, restart | ok | failed | retried | connections opened | new connections per restart | first errors |"
echo "|---|---|---|---|---|---|---|"
cat > "$work/row.py" <<'PY'
import json, sys
d = json.loads(sys.argv[2]); n = int(sys.argv[3])
err = (d["errors"] or [""])[0][:80]
print(f"| {sys.argv[1]} | {d['ok']} | {d['failed']} | {d['retried']} | {d['dials']} | {(d['dials'] - 8) / n:.1f} | {err} |")
PY
row() { python3 "$work/row.py" "$@"; }

# heird handoff: `heird reload` waits for the outcome.
a=127.0.0.1:$(port); mkdir -p "$work/h"
RUNTIME_DIRECTORY="$work/h" "$work/heird" serve --listen "$a" 2>/dev/null & echo $! >> "$work/pids"
wait_up "$a"
"$work/h2retry" -url "http://$a/sleep?duration=10ms" -conns 8 -workers 64 -duration "${secs}s" > "$work/handoff.json" 2>/dev/null &
cp=$!; sleep 1
for _ in $(seq "$restarts"); do "$work/heird" reload --socket "$work/h/control.sock" >/dev/null; sleep 1; done
wait $cp
row "heird handoff (SIGUSR2)" "$(cat "$work/handoff.json")" "$restarts"
kill_heirds "$work/h"

# naive stop-then-start of heird (it drains h2 with GOAWAY, but nobody listens in between).
a=127.0.0.1:$(port); mkdir -p "$work/n"
start_naive() { RUNTIME_DIRECTORY="$work/n" "$work/heird" serve --listen "$a" 2>/dev/null & echo $! > "$work/naive.pid"; echo $! >> "$work/pids"; wait_up "$a"; }
start_naive
"$work/h2retry" -url "http://$a/sleep?duration=10ms" -conns 8 -workers 64 -duration "${secs}s" > "$work/naive.json" 2>/dev/null &
cp=$!; sleep 1
for _ in $(seq "$restarts"); do
  p=$(cat "$work/naive.pid"); kill -TERM "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.01; done
  start_naive; sleep 1
done
wait $cp
row "heird naive stop-then-start" "$(cat "$work/naive.json")" "$restarts"
kill "$(cat "$work/naive.pid")" 2>/dev/null || true

# nginx reload (the reference: old workers drain h2 with GOAWAY).
np=$(port); mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$np http2; location / { return 200 "Hello World"; } }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>/dev/null
wait_up "127.0.0.1:$np"
"$work/h2retry" -url "http://127.0.0.1:$np/" -conns 8 -workers 64 -duration "${secs}s" > "$work/nginx.json" 2>/dev/null &
cp=$!; sleep 1
for _ in $(seq "$restarts"); do nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -s reload 2>/dev/null; sleep 1; done
wait $cp
row "nginx 1.22 reload" "$(cat "$work/nginx.json")" "$restarts"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -s quit 2>/dev/null || true
echo
echo "nginx closes an h2 connection with GOAWAY after 1000 requests (keepalive_requests), so its"
echo "connection count includes those; h2load on nginx reloads instead ends a client at the first"
echo "GOAWAY (see README)."
