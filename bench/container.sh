#!/usr/bin/env bash
# heird in a podman container, reloaded, against what users do today: `podman restart` of the
# same container. Same load for every mode (the load client of section 1: C keep-alive and K
# new-connection clients on /sleep?duration=10ms), one restart every GAP seconds:
#   kill     podman kill --signal USR2: PID 1 (the supervisor) hands over between its workers
#   exec     podman exec NAME /heird reload --pid 1: the same, and waits for the outcome
#   restart  podman restart -t 30 NAME: SIGTERM, heird drains and exits, podman starts it again
# Prints failed requests (by kind) and reconnects per restart, and how long each restart command
# took. Then the supervisor at rest: a fresh container serving nothing for IDLE seconds, PID 1's
# VmRSS and its CPU time (utime + stime from /proc/PID/stat) over those seconds, beside the
# worker's.
#
#   bench/container.sh [RESTARTS] [GAP] [IDLE]     (default 10 restarts, 2 s apart; 60 s idle)
#
# Needs root, podman and runc (installed with apt-get when missing). podman runs with the flags
# this machine needs (../shared/CONTAINERS-NOTES.md: runc, cgroupfs, explicit ulimits), the
# host's network (the container binds 127.0.0.1:PORT itself, as `podman run -p` users do inside
# their container), and --rootfs of an image directory made offline from target/release/heird
# (tests/support/image.sh). HEIRD_BIN picks another binary. C, K: environment (default 32, 8).
set -euo pipefail
cd "$(dirname "$0")/.."
restarts=${1:-10} gap=${2:-2} idle=${3:-60}
C=${C:-32} K=${K:-8}
[ "$(id -u)" = 0 ] || { echo "bench/container.sh: needs root (podman)" >&2; exit 1; }
command -v podman >/dev/null && command -v runc >/dev/null || tests/support/deps.sh podman runc
if [ -z "${HEIRD_BIN:-}" ]; then
  echo "bench: cargo build --release (heird, heird-load)" >&2
  cargo build --release --bin heird --example heird-load >&2
fi
bin=${HEIRD_BIN:-target/release/heird}
load=target/release/examples/heird-load
[ -x "$load" ] || cargo build --release --example heird-load >&2

root=target/bench-container/root
bash tests/support/image.sh "$root" "$bin"
P=(podman --runtime runc --cgroup-manager=cgroupfs)
port=$(( 20000 + RANDOM % 20000 ))
addr=127.0.0.1:$port
name=heird-bench-$$

start() {
  "${P[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
  "${P[@]}" run -d --name "$name" --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --rootfs "$PWD/$root" /heird serve --listen "$addr" >/dev/null
  for _ in $(seq 500); do curl -sf --max-time 1 "http://$addr/healthz" >/dev/null && return; sleep 0.02; done
  echo "bench/container.sh: the container never served" >&2; "${P[@]}" logs "$name" >&2; exit 1
}
ms() { echo $(( $(date +%s%N) / 1000000 )); }

rows=()
run() {  # MODE
  local mode=$1 secs t0 times=() out
  secs=$(awk -v r="$restarts" -v g="$gap" 'BEGIN { print r * g + 2 }')
  start
  "$load" --addr "$addr" --path '/sleep?duration=10ms' -c "$C" -k "$K" --duration "${secs}s" --json > "$work/$mode.json" &
  local lpid=$!
  sleep 1
  for _ in $(seq "$restarts"); do
    t0=$(ms)
    case $mode in
      kill) "${P[@]}" kill --signal USR2 "$name" >/dev/null ;;
      exec) "${P[@]}" exec "$name" /heird reload --pid 1 >/dev/null ;;
      restart) "${P[@]}" restart -t 30 "$name" >/dev/null ;;
    esac
    times+=($(( $(ms) - t0 )))
    sleep "$gap"
  done
  wait "$lpid" || true
  out=$(cat "$work/$mode.json")
  local gen; gen=$(curl -s --max-time 2 "http://$addr/info" | grep -oE '"generation":[0-9]+' | cut -d: -f2)
  rows+=("$(python3 - "$mode" "$restarts" "$out" "$gen" "${times[*]}" <<'PY'
import json, statistics, sys
mode, n, s, gen, times = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], [int(t) for t in sys.argv[5].split()]
kinds = ["refused", "reset", "closed_before_response", "timeout", "non_200", "other"]
by = ", ".join(f"{k} {s[k]}" for k in kinds if s[k]) or "none"
print(f"| {mode} | {s['failed'] / n:.1f} ({by}) | {s['reconnects'] / n:.1f} | {s['ok']} | {s['p99_us'] / 1000:.1f} | {statistics.median(times)} ms (max {max(times)}) | {gen} |")
PY
)")
  "${P[@]}" rm -f -t 0 "$name" >/dev/null
}

work=$(mktemp -d)
trap '"${P[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
echo "bench/container.sh: $restarts restarts, one every $gap s, under C=$C keep-alive + K=$K new-connection clients" >&2
for mode in kill exec restart; do
  echo "bench/container.sh: mode $mode" >&2
  run "$mode"
done

# The supervisor at rest.
start
pid1=$("${P[@]}" inspect --format '{{.State.Pid}}' "$name")
worker=$(cat "/proc/$pid1/task/"*/children | tr ' ' '\n' | grep . | head -n 1)
rss() { awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print r " kB (anon " a " kB)" }' "/proc/$1/status"; }
cpu() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }  # utime + stime, in ticks
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }
# CPU time in ns, every thread (the first field of schedstat; ticks are only 10 ms here).
cpu_ns() { cat "/proc/$1/task/"*/schedstat | awk '{ s += $1 } END { print s }'; }
echo "bench/container.sh: $idle s idle" >&2
c1=$(cpu "$pid1") w1=$(cpu "$worker") n1=$(cpu_ns "$pid1") v1=$(cpu_ns "$worker")
sleep "$idle"
c2=$(cpu "$pid1") w2=$(cpu "$worker") n2=$(cpu_ns "$pid1") v2=$(cpu_ns "$worker")
hz=$(getconf CLK_TCK)

if [ -z "${HEIRD_BIN:-}" ]; then
  rev=$(git rev-parse --short HEAD)
  git diff --quiet HEAD -- src Cargo.toml Cargo.lock || rev="$rev-dirty"
else
  rev="a revision this script did not build (HEIRD_BIN)"
fi
echo
echo "heird in podman $(podman --version | awk '{ print $3 }') (runc, --network host), $(basename "$bin") at $rev, $(date -u +%F), nproc $(nproc), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$restarts restarts, one every $gap s, C=$C keep-alive + K=$K new-connection clients on /sleep?duration=10ms"
echo
echo "| restart | failed per restart (by kind, total) | reconnects per restart | ok | p99 ms | restart command took (median) | generation at the end |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "At rest ($idle s, a fresh container that served only its readiness probe):"
echo "| process | VmRSS | threads | CPU over $idle s (utime+stime) | CPU over $idle s (schedstat) |"
echo "|---|---|---|---|---|"
us() { awk -v n="$1" 'BEGIN { printf "%.0f µs", n / 1000 }'; }
echo "| PID 1 (supervisor) | $(rss "$pid1") | $(threads "$pid1") | $(( (c2 - c1) * 1000 / hz )) ms | $(us $((n2 - n1))) |"
echo "| worker | $(rss "$worker") | $(threads "$worker") | $(( (w2 - w1) * 1000 / hz )) ms | $(us $((v2 - v1))) |"
