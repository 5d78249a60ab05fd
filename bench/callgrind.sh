#!/usr/bin/env bash
# Server instructions per request, counted by callgrind (repeatable whatever else the machine
# runs, unlike req/s or CPU time). See bench/README.md, "Instructions per request".
#
#   bench/callgrind.sh [N] [OUT]  # default N=2000, OUT=target/prof/callgrind/results.txt
#   ONLY="heird-h2 axum-nodelay-h2" NO_BUILD=1 bench/callgrind.sh   # some of the six, no build
#
# Builds `bench-heird-hello` (heird serving the router of `bench-plain-axum`) and
# `bench-plain-axum` with line tables (separate target dir, target/prof), then for each server
# and protocol: starts the server under callgrind pinned to core 1, warms it up, and counts the
# instructions of N and then 2N requests on one keep-alive connection (h2load -c1 -m1, pinned to
# core 0); (I(2N) - I(N)) / N is the cost of one request, the connection's fixed costs cancel.
# Keeps the profiles in target/prof/callgrind/ for callgrind_annotate, and appends
# `SERIES PROTO INSTRUCTIONS` lines to OUT (heird's series is named heird@REVISION), which
# `bench-heird --instructions OUT` draws.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
out=target/prof/callgrind
mkdir -p "$out"
results=${2:-$out/results.txt}
rev=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)
if [ -z "${NO_BUILD:-}" ]; then
  CARGO_TARGET_DIR=target/prof CARGO_PROFILE_RELEASE_STRIP=false \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --example bench-heird-hello --example bench-plain-axum >&2
fi
bin=target/prof/release/examples

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# dump PID TAG: asks callgrind for a dump (it acts when the server next runs, so one request
# wakes it) and prints the instructions counted since the last zero.
dump() {
  local pid=$1 tag=$2 url=$3
  callgrind_control -d "$tag" "$pid" >/dev/null &
  local c=$!
  sleep 0.3
  curl -s -o /dev/null "$url" || true
  wait "$c"
}
zero() {
  local pid=$1 url=$2
  callgrind_control -z "$pid" >/dev/null &
  local c=$!
  sleep 0.3
  curl -s -o /dev/null "$url" || true
  wait "$c"
}
last_total() { # the totals line of the newest dump file of PID
  local f
  f=$(ls -t "$out"/"$1".*.out* 2>/dev/null | head -1)
  grep -E '^(totals|summary):' "$f" | head -1 | awk '{print $2}'
}

measure() { # NAME PROTO CMD...
  local name=$1 proto=$2; shift 2
  case " ${ONLY:-$name-$proto} " in *" $name-$proto "*) ;; *) return 0 ;; esac
  local p; p=$(port)
  local url="http://127.0.0.1:$p/"
  rm -f "$out/$name-$proto".*
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out/$name-$proto.%p.out" \
    "$@" "127.0.0.1:$p" >/dev/null 2>"$out/$name-$proto.log" &
  local vpid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "$url" && break; sleep 0.1; done
  local h2flag=(--h1); [ "$proto" = h2 ] && h2flag=()
  taskset -c 0 h2load "${h2flag[@]}" -n 500 -c1 -m1 "$url" >/dev/null
  local i1 i2
  zero "$vpid" "$url"
  taskset -c 0 h2load "${h2flag[@]}" -n "$N" -c1 -m1 "$url" | grep -E '^requests:' >&2
  dump "$vpid" "$name-$proto-n" "$url"
  i1=$(last_total "$name-$proto")
  zero "$vpid" "$url"
  taskset -c 0 h2load "${h2flag[@]}" -n $((2 * N)) -c1 -m1 "$url" | grep -E '^requests:' >&2
  dump "$vpid" "$name-$proto-2n" "$url"
  i2=$(last_total "$name-$proto")
  kill -TERM "$vpid"; wait "$vpid" 2>/dev/null || true
  echo "$name $proto $i1 $i2 $(( (i2 - i1) / N ))"
  local series=$name; [ "$name" = heird ] && series="heird@$rev"
  echo "${series/axum-nodelay/axum+nodelay} $proto $(( (i2 - i1) / N ))" >>"$results"
}

echo "server proto I(N) I(2N) instructions/request (N=$N); appended to $results" >&2
measure heird h1 "$bin/bench-heird-hello"
measure axum h1 "$bin/bench-plain-axum"
measure axum-nodelay h1 "$bin/bench-plain-axum" --nodelay
measure heird h2 "$bin/bench-heird-hello"
measure axum h2 "$bin/bench-plain-axum"
measure axum-nodelay h2 "$bin/bench-plain-axum" --nodelay
