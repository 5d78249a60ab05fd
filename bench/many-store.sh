#!/bin/bash
# many-store.sh — N idle keep-alive connections kept in systemd's fd store across
# `systemctl restart heird.service`, and what that costs PID 1. A benchmark: it prints figures,
# it asserts nothing.
#
# Usage (as root, from anywhere): bench/many-store.sh [N]        (N=10000)
#
# For each systemd version it boots the suite's sandbox (tests/systemd/sandbox.sh: a real
# systemd as PID 1 in namespaces) with heird installed as a package installs it, adds a drop-in
# with FileDescriptorStoreMax= and Environment=FDSTORE= (252 does not set $FDSTORE), starts
# heird.service standalone (heird binds 127.0.0.1:8080 itself), and runs
# bench/many-store-inner.py inside: N connections each served one GET /info, PID 1's RSS, fd
# count and CPU time before, during and after, `systemctl restart heird.service`, then one more
# GET /info on every connection (same TCP connection, no reconnect) answered by the new pid.
#
# Environment:
#   SYSTEMDS     versions to run, "252 257" by default: 252 is the host's own systemd, 257 the
#                Debian 13 root of tests/systemd/rootfs.sh (built and cached when missing; when
#                it cannot be built, 257 is reported as not measured)
#   STORE_MAX    FileDescriptorStoreMax= (default N+1: the connections and the listener)
#   FDSTORE_ENV  Environment=FDSTORE= (default STORE_MAX); set it above STORE_MAX to see what
#                systemd does with fds beyond its limit
#   LIMIT_NOFILE LimitNOFILE= (default 2*STORE_MAX+1024; empty: the unit's default, 1024 soft).
#                The next process gets every stored fd at exec, under this soft limit: systemd
#                252 fails the start with 202/FDS unless it is about twice their number (heird
#                stores only what fits, and at most 4096 fds in all)
#   HEIRD_BIN    heird binary (default: target/release/heird, built with cargo build --release)
#   VERBOSE=1    also print every PID 1 sample (every 20 ms across the restart)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
N=${1:-10000}
STORE_MAX=${STORE_MAX:-$((N + 1))}
FDSTORE_ENV=${FDSTORE_ENV:-$STORE_MAX}
LIMIT_NOFILE=${LIMIT_NOFILE-$((2 * STORE_MAX + 1024))}
SYSTEMDS=${SYSTEMDS:-252 257}

[ "$(id -u)" = 0 ] || { echo "many-store.sh: needs root (it boots tests/systemd/sandbox.sh)" >&2; exit 1; }
cd "$project"
if [ -z "${HEIRD_BIN:-}" ]; then
  cargo build --release --bin heird >&2
  HEIRD_BIN=${CARGO_TARGET_DIR:-$project/target}/release/heird
fi
[ -x "$HEIRD_BIN" ] || { echo "many-store.sh: no heird binary at $HEIRD_BIN" >&2; exit 1; }

echo "# bench/many-store.sh $N: $(date -u '+%Y-%m-%d %H:%M UTC'), heird $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes'), $(basename "$(dirname "$HEIRD_BIN")") build"
echo "# machine: $(nproc) cores, $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# FileDescriptorStoreMax=$STORE_MAX, FDSTORE=$FDSTORE_ENV, LimitNOFILE=${LIMIT_NOFILE:-(unit default)}"

# What every boot gets over its root before systemd starts (as tests/systemd/run.sh does).
seed=$(mktemp -d /tmp/heird-many-store-seed.XXXXXX)
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

for v in $SYSTEMDS; do
  case $v in
    252) root=/ ;;
    257) root=$(tests/systemd/rootfs.sh 2>/dev/null) || { echo; echo "## systemd 257: not measured (tests/systemd/rootfs.sh could not build the Debian 13 root)"; continue; } ;;
    *) echo "many-store.sh: unknown systemd version $v (252 or 257)" >&2; exit 2 ;;
  esac
  echo
  echo "## systemd $v"
  box=many-store-$v-$$
  export SANDBOX_NAME=$box SANDBOX_ROOTFS=$root SANDBOX_SEED=$seed SANDBOX_BIND_RO=$here
  tests/systemd/sandbox.sh up 2>&1 | sed 's/^/# /'
  tests/systemd/sandbox.sh exec systemd-sysusers heird.conf >/dev/null
  rc=0
  tests/systemd/sandbox.sh exec /usr/bin/python3 "$here/many-store-inner.py" "$N" "$STORE_MAX" "$FDSTORE_ENV" "${LIMIT_NOFILE:--}" \
    ${VERBOSE:+-v} || rc=$?
  [ "$rc" = 0 ] || { echo "many-store.sh: the measurement failed (exit $rc); the journal:"; tests/systemd/sandbox.sh exec journalctl -b --no-pager | tail -n 60; }
  tests/systemd/sandbox.sh down 2>&1 | sed 's/^/# /'
  rm -rf "/tmp/heird-sandbox/$box"
  box=
done
echo
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
