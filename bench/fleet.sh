#!/bin/bash
# bench/fleet.sh — what a fleet of three heird hosts behind HAProxy loses (figures, not a test):
# failed requests at the client, and how many requests HAProxy had to resend for the hosts, for
# a rolling package upgrade and a rolling stop + start (as for reboots), with heird's lame duck
# (shutdown_delay), without it, and a naive host (no lame duck, no drain; upgraded by stop,
# dpkg -i, start).
#
# It runs tests/systemd/scenarios/40-fleet-haproxy.sh (the fleet test: three systemd hosts
# with the .deb, deploy/haproxy.cfg as shipped, Go's net/http client through HAProxy) in a
# sandbox boot of its own with FLEET_BENCH=1, with a release build of heird, and prints its
# output and then the table.
#
#   bench/fleet.sh            (as root: sandbox boots; tests/support/deps.sh installs haproxy)
#   HEIRD_BIN=path bench/fleet.sh    that heird binary instead of a release build of this tree
set -euo pipefail
cd "$(dirname "$0")/.."
project=$(pwd)
[ "$(id -u)" = 0 ] || { echo "fleet bench: needs root (systemd sandboxes)" >&2; exit 1; }
tests/support/deps.sh haproxy golang-go golang-golang-x-net-dev

if [ -n "${HEIRD_BIN:-}" ]; then
  bin=$(readlink -f "$HEIRD_BIN") build="$HEIRD_BIN, $("$bin" --version)"
else
  echo "fleet bench: cargo build --release --bin heird" >&2
  cargo build --release --bin heird >&2
  bin=target/release/heird build="release build"
fi
echo "fleet bench: go build tests/clients/h2retry" >&2
seed=$(mktemp -d /tmp/heird-fleet-bench.XXXXXX)
box=fleet-bench-$$
trap 'SANDBOX_NAME=$box tests/systemd/sandbox.sh down >/dev/null 2>&1 || true; rm -rf "$seed"' EXIT
install -D -m 0755 "$bin" "$seed/usr/bin/heird"
mkdir -p "$seed/usr/local/bin"
GOCACHE=/tmp/heird-sandbox/gocache GOPATH=/usr/share/gocode GO111MODULE=off CGO_ENABLED=0 \
  go build -o "$seed/usr/local/bin/h2retry" tests/clients/h2retry/main.go

out=$seed/out.txt
SANDBOX_NAME=$box SANDBOX_SEED=$seed SANDBOX_BIND_RO=$project tests/systemd/sandbox.sh up >&2
rc=0
SANDBOX_NAME=$box tests/systemd/sandbox.sh exec env HEIRD_PROJECT="$project" FLEET_BENCH=1 \
  SYSTEMD_VERSION="$(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 }')" \
  "$project/tests/systemd/scenarios/40-fleet-haproxy.sh" > "$out" 2>&1 || rc=$?
cat "$out" >&2
case $rc in 0 | 77) ;; *) echo "fleet bench: the scenario failed (exit $rc); output above" >&2; exit 1 ;; esac

echo "## Fleet: 3 heird hosts behind HAProxy"
echo
echo "$(date -u +%FT%TZ), $(nproc) cores, $(uname -r), heird $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty) ($build), $(haproxy -v | head -n 1 | cut -d' ' -f1-3); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "\`bench/fleet.sh\`: tests/systemd/scenarios/40-fleet-haproxy.sh with FLEET_BENCH=1. Each host a systemd 252"
echo "with the .deb, on 127.0.0.1{1,2,3}:8080; deploy/haproxy.cfg as shipped (inter 200ms fall 2 rise 2,"
echo "retry-on conn-failure empty-response response-timeout, redispatch; then again with retries 0); client: Go net/http keep-alive"
echo "(tests/clients/h2retry -http1), 16 workers over 4 transports, GET /sleep?duration=10ms through HAProxy."
echo
sed -n '/^FLEET-TABLE$/,/^FLEET-TABLE-END$/p' "$out" | grep -v '^FLEET-TABLE'
