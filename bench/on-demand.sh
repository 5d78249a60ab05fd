#!/bin/bash
# on-demand.sh — heird on demand (idle_exit) under a real systemd: the cold start, and the race
# at the moment of an idle exit. A benchmark: it prints figures; the race's counts are also
# checked by systemd scenario 27 with fewer cycles.
#
# Usage (as root, from anywhere): bench/on-demand.sh [STARTS] [CYCLES]   (100, 1000)
#
# For each systemd version it boots the suite's sandbox (tests/systemd/sandbox.sh) twice with
# heird installed as a package installs it (heird.socket, heird.service as shipped, plus
# idle_exit = "50ms" and the start/trigger limits lifted):
# - cold start (bench/on-demand-inner.sh): STARTS times, with no heird process running, curl's
#   time from the TCP connect to the first response byte of GET /healthz: systemd starts
#   heird.service (fork, the unit's sandboxing, exec), heird takes the socket, says READY=1 and
#   answers. Median, p90, p99 and max, and a warm request for reference.
# - the race (tests/systemd/scenarios/27-idle-exit-race.sh with IDLE_CYCLES=CYCLES): a client
#   that connects again 10 to 70 ms after each answer, around the 50 ms idle time, until CYCLES
#   new processes have answered; refused, reset and unanswered connections counted.
#
# Environment:
#   SYSTEMDS   versions to run, "252 257" by default: 252 is the host's own systemd, 257 the
#              Debian 13 root of tests/systemd/rootfs.sh (built and cached when missing)
#   HEIRD_BIN  heird binary (default: target/release/heird, built with cargo build --release)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
STARTS=${1:-100}
CYCLES=${2:-1000}
SYSTEMDS=${SYSTEMDS:-252 257}

[ "$(id -u)" = 0 ] || { echo "on-demand.sh: needs root (it boots tests/systemd/sandbox.sh)" >&2; exit 1; }
cd "$project"
if [ -z "${HEIRD_BIN:-}" ]; then
  cargo build --release --bin heird >&2
  HEIRD_BIN=${CARGO_TARGET_DIR:-$project/target}/release/heird
fi
[ -x "$HEIRD_BIN" ] || { echo "on-demand.sh: no heird binary at $HEIRD_BIN" >&2; exit 1; }

echo "# bench/on-demand.sh $STARTS $CYCLES: $(date -u '+%Y-%m-%d %H:%M UTC'), heird $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes'), $(basename "$(dirname "$HEIRD_BIN")") build"
echo "# machine: $(nproc) cores, $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

seed=$(mktemp -d /tmp/heird-on-demand-seed.XXXXXX)
install -D -m 0755 "$HEIRD_BIN" "$seed/usr/bin/heird"
for unit in heird.service heird.socket heird-unix.socket; do
  install -D -m 0644 "deploy/$unit" "$seed/etc/systemd/system/$unit"
done
install -D -m 0644 deploy/heird.toml "$seed/etc/heird/heird.toml"
install -D -m 0644 deploy/heird.sysusers "$seed/usr/lib/sysusers.d/heird.conf"

box=
cleanup() {
  [ -z "$box" ] || { SANDBOX_NAME=$box tests/systemd/sandbox.sh down >/dev/null 2>&1; rm -rf "/tmp/heird-sandbox/$box"; } || true
  rm -rf "$seed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stats: median p90 p99 max of the integers on stdin, in ms with 2 decimals (from µs).
stats() {
  sort -n | awk '{ v[NR] = $1 } END {
    n = NR
    printf "n=%d median %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", n,
      v[int((n + 1) / 2)] / 1000, v[int(n * 0.9 + 0.999)] / 1000, v[int(n * 0.99 + 0.999)] / 1000, v[n] / 1000 }'
}

boot() {
  box=on-demand-$1-$$
  export SANDBOX_NAME=$box SANDBOX_ROOTFS=$root SANDBOX_SEED=$seed SANDBOX_BIND_RO=$project
  tests/systemd/sandbox.sh up 2>&1 | sed 's/^/# /'
  tests/systemd/sandbox.sh exec systemd-sysusers heird.conf >/dev/null
}
down() {
  tests/systemd/sandbox.sh down 2>&1 | sed 's/^/# /'
  rm -rf "/tmp/heird-sandbox/$box"
  box=
}

for v in $SYSTEMDS; do
  case $v in
    252) root=/ ;;
    257) root=$(tests/systemd/rootfs.sh 2>/dev/null) || { echo; echo "## systemd 257: not measured (tests/systemd/rootfs.sh could not build the Debian 13 root)"; continue; } ;;
    *) echo "on-demand.sh: unknown systemd version $v (252 or 257)" >&2; exit 2 ;;
  esac
  echo
  echo "## systemd $v"
  boot "$v-cold"
  out=$(tests/systemd/sandbox.sh exec /bin/bash "$here/on-demand-inner.sh" "$STARTS") || {
    echo "$out"; echo "on-demand.sh: the cold-start run failed"; tests/systemd/sandbox.sh exec journalctl -b --no-pager | tail -n 40; exit 1; }
  [ -z "${VERBOSE:-}" ] || echo "$out" | sed 's/^/# /'
  echo "cold start, units as shipped (connect -> first byte, no process running): $(awk '$1 == "shipped" { print $5 }' <<<"$out" | stats)"
  echo "  then warm, a second request on that connection:                           $(awk '$1 == "shipped" { print $7 }' <<<"$out" | stats)"
  echo "cold start, heird.service without its sandboxing (a drop-in):               $(awk '$1 == "plain" { print $5 }' <<<"$out" | stats)"
  echo "# load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  down
  [ "$CYCLES" != 0 ] || continue

  boot "$v-race"
  rc=0
  tests/systemd/sandbox.sh exec env IDLE_CYCLES="$CYCLES" HEIRD_PROJECT="$project" SYSTEMD_VERSION="$v" \
    /bin/bash "$project/tests/systemd/scenarios/27-idle-exit-race.sh" 2>&1 | grep -E '^(ok|FAIL|idle-exit race|refused|reset|closed|curl)' || rc=$?
  down
done
echo
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
