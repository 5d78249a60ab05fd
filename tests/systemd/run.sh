#!/bin/bash
# run.sh — heird's systemd suite. Each tests/systemd/scenarios/NN-name.sh runs as root inside a
# fresh sandbox boot (sandbox.sh) with systemd as PID 1 and heird installed the way a package
# installs it: the build output as /usr/bin/heird, the units from deploy/ as they are in
# /etc/systemd/system, deploy/heird.toml as /etc/heird/heird.toml. The host is not written to.
#
# Usage: tests/systemd/run.sh [PATTERN...]   (only the scenarios whose name contains a PATTERN)
# Environment:
#   HEIRD_BIN       heird binary (default target/debug/heird)
#   HEIRD_LOAD      load client (default: examples/heird-load beside HEIRD_BIN)
#   SANDBOX_ROOTFS  another distribution's root (its own systemd); the project and the build
#                   output are bound into the sandbox read-only at the same paths
#   SCENARIO_TIMEOUT  seconds per scenario (default 150)
#
# Exit status: 0 when every scenario passed or the suite was skipped (it says SKIP loudly),
# 1 when a scenario failed, 2 when the build output is missing.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
root=$(readlink -f "${SANDBOX_ROOTFS:-/}")

skip() { echo "SKIP: systemd suite: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (namespaces, mounts, a cgroup); run the tests as root to include it"
for tool in unshare nsenter setpriv script pivot_root curl; do
  command -v "$tool" >/dev/null || skip "$tool not found on this machine"
done
[ -x "$root/lib/systemd/systemd" ] || skip "no systemd at $root/lib/systemd/systemd"
[ -x "$root/usr/bin/curl" ] || skip "no curl in the root $root (scenarios use it inside)"
awk '$3 == "cgroup2" { found = 1 } END { exit !found }' /proc/self/mounts || skip "no cgroup2 file system mounted"
unshare --pid --fork --mount --net --cgroup true 2>/dev/null || skip "cannot create namespaces here (unprivileged container?)"

bin=$(readlink -m "${HEIRD_BIN:-$project/target/debug/heird}")
load=$(readlink -m "${HEIRD_LOAD:-$(dirname "$bin")/examples/heird-load}")
[ -x "$bin" ] || { echo "run.sh: heird binary not found at $bin: run \`cargo build\` (or set HEIRD_BIN)" >&2; exit 2; }
[ -x "$load" ] || { echo "run.sh: load client not found at $load: run \`cargo build --examples\` (or set HEIRD_LOAD)" >&2; exit 2; }

version=$(chroot "$root" /lib/systemd/systemd --version | awk 'NR == 1 { print $2 }')
tag="[systemd $version]"

# What every boot gets copied over its root before systemd starts.
seed=/tmp/heird-sandbox/seed
rm -rf "$seed"
install -D -m 0755 "$bin" "$seed/usr/bin/heird"
for unit in heird.service heird.socket heird-unix.socket; do
  install -D -m 0644 "$project/deploy/$unit" "$seed/etc/systemd/system/$unit"
done
install -D -m 0644 "$project/deploy/heird.toml" "$seed/etc/heird/heird.toml"

# Read-only binds: the project (scenarios, deploy/) and the load client's folder when outside it.
binds=$project
case $load in "$project"/*) ;; *) binds="$binds $(dirname "$load")" ;; esac

export SANDBOX_ROOTFS=$root SANDBOX_SEED=$seed SANDBOX_BIND_RO="$binds"
current=
trap '[ -z "$current" ] || SANDBOX_NAME=$current "$here/sandbox.sh" down >/dev/null 2>&1; exit 130' INT TERM HUP

passed=0 failed=() t_suite=$(date +%s%N)
for script in "$here"/scenarios/[0-9][0-9]-*.sh; do
  name=$(basename "$script" .sh)
  if [ $# -gt 0 ]; then
    wanted=0; for p in "$@"; do case $name in *"$p"*) wanted=1 ;; esac; done
    [ "$wanted" = 1 ] || continue
  fi
  echo "=== $tag $name"
  export SANDBOX_NAME=$name; current=$name
  state=/tmp/heird-sandbox/$name
  t0=$(date +%s%N) rc=0
  if "$here/sandbox.sh" up 2>&1 | sed 's/^/    /'; [ "${PIPESTATUS[0]}" = 0 ]; then
    timeout -k 5 "${SCENARIO_TIMEOUT:-150}" "$here/sandbox.sh" exec \
      env HEIRD_LOAD="$load" HEIRD_PROJECT="$project" SYSTEMD_VERSION="$version" "$script" 2>&1 | sed 's/^/    /'
    rc=${PIPESTATUS[0]}
    [ "$rc" != 124 ] || echo "    (timed out after ${SCENARIO_TIMEOUT:-150} s)"
  else
    rc=1
  fi
  secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", ns / 1e9 }')
  if [ "$rc" = 0 ]; then
    echo "$tag $name: PASS ($secs s)"; passed=$((passed + 1))
  else
    echo "$tag $name: FAIL ($secs s, exit $rc)"; failed+=("$name")
    if SANDBOX_NAME=$name "$here/sandbox.sh" status >/dev/null 2>&1; then
      echo "--- $tag $name: systemctl status"
      "$here/sandbox.sh" exec systemctl status --no-pager -l heird.service heird.socket heird-unix.socket 2>&1 | sed 's/^/    /'
      "$here/sandbox.sh" exec journalctl -b --no-pager -o short-monotonic > "$state/journal.txt" 2>&1
      echo "--- $tag $name: journalctl -b (saved in $state/journal.txt)"
      sed 's/^/    /' "$state/journal.txt"
    else
      echo "--- $tag $name: sandbox did not boot; console log:"; sed 's/^/    /' "$state/console.log" 2>/dev/null
    fi
  fi
  "$here/sandbox.sh" down 2>&1 | sed 's/^/    /'
  current=
done

total=$(awk -v ns=$(( $(date +%s%N) - t_suite )) 'BEGIN { printf "%.1f", ns / 1e9 }')
if [ ${#failed[@]} = 0 ]; then
  [ "$passed" -gt 0 ] || { echo "$tag no scenario matched: $*"; exit 1; }
  echo "$tag systemd suite: $passed passed ($total s)"
else
  echo "$tag systemd suite: $passed passed, ${#failed[@]} FAILED: ${failed[*]} ($total s)"
  exit 1
fi
