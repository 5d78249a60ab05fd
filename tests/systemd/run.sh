#!/bin/bash
# run.sh — heird's systemd suite. Each tests/systemd/scenarios/NN-name.sh runs as root inside a
# fresh sandbox boot (sandbox.sh) with systemd as PID 1 and heird installed the way a package
# installs it: the build output as /usr/bin/heird, the units from deploy/ as they are in
# /etc/systemd/system, deploy/heird.toml as /etc/heird/heird.toml. The host is not written to.
#
# Usage: tests/systemd/run.sh [PATTERN...]   (only the scenarios whose name contains a PATTERN)
# Environment:
#   HEIRD_BIN       heird binary (default target/debug/heird)
#   HEIRD_LOAD      load client (default: examples/heird-load beside HEIRD_BIN); scenarios
#                   find it as $HEIRD_LOAD (/usr/local/bin/heird-load inside)
#   SANDBOX_ROOTFS  another distribution's root (its own systemd), e.g. the Debian 13 root of
#                   `rootfs.sh` (systemd 257); the project is bound into every boot read-only
#                   at the same path (scenarios read $HEIRD_PROJECT/deploy/)
#   SCENARIO_TIMEOUT  seconds per scenario (default 150)
#
# Several runs may go on at once (two systemd versions, two `cargo test`s): each boot is named
# after the systemd version, the scenario and this script's pid. A scenario with the line
# "# run.sh: background" (one that mostly waits) runs in its own boot beside the others.
#
# A scenario that does not run says why and ends in one of two ways (scenarios/lib.sh):
# - exit 76 (`not_applicable`): the case does not exist on this systemd (notify-reload on 252);
#   reported as NOT APPLICABLE and named in the summary, never a failure;
# - exit 77 (`cannot_run`): this machine or build lacks what it needs (a tool, a fault-injection
#   build); reported as SKIP and named in the summary, and a FAIL when CI is set (not empty).
# What a scenario needs from Debian is installed before the boots, as root, when missing
# (tests/support/deps.sh): a line "# run.sh: needs-host PACKAGE..." names packages used on the
# host (Go to build h2retry), "# run.sh: needs-root PACKAGE..." packages used inside the root
# (installed on the host when the root is the host's; rootfs.sh's root has them).
#
# Exit status: 0 when every scenario passed or was skipped or not applicable, or the suite was
# skipped (it says SKIP loudly), 1 when a scenario failed (or was skipped with CI set), 2 when
# the build output is missing.
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

scripts=()
for script in "$here"/scenarios/[0-9][0-9]-*.sh; do
  name=$(basename "$script" .sh)
  if [ $# -gt 0 ]; then
    wanted=0; for p in "$@"; do case $name in *"$p"*) wanted=1 ;; esac; done
    [ "$wanted" = 1 ] || continue
  fi
  scripts+=("$script")
done

# The Debian packages the chosen scenarios need (see above), installed when missing.
packages=()
for script in "${scripts[@]}"; do
  packages+=($(sed -n 's/^# run.sh: needs-host //p' "$script"))
  [ "$root" != / ] || packages+=($(sed -n 's/^# run.sh: needs-root //p' "$script"))
done
if [ ${#packages[@]} -gt 0 ]; then
  "$project/tests/support/deps.sh" $(printf '%s\n' "${packages[@]}" | sort -u) ||
    echo "run.sh: the scenarios that need these packages will not run (SKIP; with CI set, FAIL)" >&2
fi

# What every boot gets copied over its root before systemd starts. The load client is copied
# too, so that a concurrent build cannot swap it halfway through the suite.
seed=/tmp/heird-sandbox/seed-$version-$$
rm -rf "$seed"
install -D -m 0755 "$bin" "$seed/usr/bin/heird"
install -D -m 0755 "$load" "$seed/usr/local/bin/heird-load"
for unit in heird.service heird.socket heird-unix.socket; do
  install -D -m 0644 "$project/deploy/$unit" "$seed/etc/systemd/system/$unit"
done
install -D -m 0644 "$project/deploy/heird.toml" "$seed/etc/heird/heird.toml"
# The GOAWAY-aware h2 load client (a static Go binary), when the host can build it offline
# (golang-go, golang-golang-x-net-dev, installed above); scenario 22 cannot run otherwise.
if command -v go >/dev/null && [ -d /usr/share/gocode/src/golang.org/x/net/http2 ]; then
  mkdir -p "$seed/usr/local/bin"
  GOCACHE=/tmp/heird-sandbox/gocache GOPATH=/usr/share/gocode GO111MODULE=off CGO_ENABLED=0 \
    go build -o "$seed/usr/local/bin/h2retry" "$project/tests/clients/h2retry/main.go" \
    || echo "run.sh: cannot build tests/clients/h2retry; scenario 22 cannot run" >&2
fi
# The group of /run/heird.sock (SocketGroup= in heird-unix.socket); created after each boot with
# systemd-sysusers, as the packages do.
install -D -m 0644 "$project/deploy/heird.sysusers" "$seed/usr/lib/sysusers.d/heird.conf"
# The units' Documentation=man:heird(1) (systemd-analyze verify looks it up).
install -D -m 0644 "$project/packaging/heird.1" "$seed/usr/share/man/man1/heird.1"

# Read-only bind: the project (scenarios, deploy/).
export SANDBOX_ROOTFS=$root SANDBOX_SEED=$seed SANDBOX_BIND_RO=$project
sbx() { SANDBOX_NAME=$box "$here/sandbox.sh" "$@"; }

# run_one NAME SCRIPT: one scenario in a fresh boot named $version-NAME-$$; prints its output,
# then "PASS", "NOT APPLICABLE", "SKIP" or "FAIL" (with the unit status and the journal; a SKIP
# with CI set is a FAIL too, without them); returns the scenario's exit status (76: not
# applicable, 77: cannot run here).
run_one() {
  local name=$1 script=$2 box=$version-$1-$$ t0 rc=0 secs state
  state=/tmp/heird-sandbox/$box
  t0=$(date +%s%N)
  if sbx up 2>&1 | sed 's/^/    /'; [ "${PIPESTATUS[0]}" = 0 ] && sbx exec systemd-sysusers heird.conf; then
    timeout -k 5 "${SCENARIO_TIMEOUT:-150}" env SANDBOX_NAME="$box" "$here/sandbox.sh" exec \
      env HEIRD_LOAD=/usr/local/bin/heird-load HEIRD_PROJECT="$project" SYSTEMD_VERSION="$version" "$script" 2>&1 | sed 's/^/    /'
    rc=${PIPESTATUS[0]}
    [ "$rc" != 124 ] || echo "    (timed out after ${SCENARIO_TIMEOUT:-150} s)"
  else
    rc=1
  fi
  secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", ns / 1e9 }')
  if [ "$rc" = 0 ]; then
    echo "$tag $name: PASS ($secs s)"
  elif [ "$rc" = 76 ]; then
    echo "$tag $name: NOT APPLICABLE on systemd $version ($secs s; the reason is above)"
  elif [ "$rc" = 77 ] && [ -n "${CI:-}" ]; then
    echo "$tag $name: FAIL: it cannot run here, and CI is set ($secs s; the reason is above)"
  elif [ "$rc" = 77 ]; then
    echo "$tag $name: SKIP: it cannot run here ($secs s; the reason is above; with CI set this fails)"
  else
    echo "$tag $name: FAIL ($secs s, exit $rc)"
    if sbx status >/dev/null 2>&1; then
      echo "--- $tag $name: systemctl status"
      sbx exec systemctl status --no-pager -l heird.service heird.socket heird-unix.socket 2>&1 | sed 's/^/    /'
      sbx exec journalctl -b --no-pager -o short-monotonic > "$state/journal.txt" 2>&1
      echo "--- $tag $name: journalctl -b (saved in $state/journal.txt)"
      sed 's/^/    /' "$state/journal.txt"
    else
      echo "--- $tag $name: sandbox did not boot; console log:"; sed 's/^/    /' "$state/console.log" 2>/dev/null
    fi
  fi
  sbx down 2>&1 | sed 's/^/    /'
  # Keep the state (console.log, journal.txt) of failed boots only.
  case $rc in 0 | 76 | 77) rm -rf "$state" ;; esac
  return "$rc"
}

# On an interrupt: stop the scenarios running in the background, take every boot of this run down.
cleanup() {
  local st p
  for p in "${bg_pids[@]}"; do kill -- "$p" 2>/dev/null || true; done
  for st in /tmp/heird-sandbox/"$version"-*-$$; do
    [ -d "$st" ] || continue
    SANDBOX_NAME=$(basename "$st") "$here/sandbox.sh" down >/dev/null 2>&1 || true
  done
  rm -rf "$seed" "$outdir"
}
trap 'cleanup; exit 130' INT TERM HUP

passed=0 skipped=() not_applicable=() failed=() bg_pids=() bg_names=() t_suite=$(date +%s%N)
outdir=$(mktemp -d /tmp/heird-sandbox/out-$version-$$.XXXX)
tally() {
  case $2 in
    0) passed=$((passed + 1)) ;;
    76) not_applicable+=("$1") ;;
    77) if [ -n "${CI:-}" ]; then failed+=("$1(cannot-run)"); else skipped+=("$1"); fi ;;
    *) failed+=("$1") ;;
  esac
}

# Scenarios that mostly wait (a line "# run.sh: background" in the script, e.g. the watchdog's
# 40 s of intervals) run in a boot of their own beside the others; their output is printed in
# one piece when they end.
for script in "${scripts[@]}"; do
  grep -qx '# run.sh: background' "$script" || continue
  name=$(basename "$script" .sh)
  echo "=== $tag $name: runs in the background; its output follows when it ends"
  run_one "$name" "$script" > "$outdir/$name" 2>&1 &
  bg_pids+=($!); bg_names+=("$name")
done
for script in "${scripts[@]}"; do
  grep -qx '# run.sh: background' "$script" && continue
  name=$(basename "$script" .sh)
  echo "=== $tag $name"
  rc=0; run_one "$name" "$script" || rc=$?
  tally "$name" "$rc"
done
for i in "${!bg_pids[@]}"; do
  rc=0; wait "${bg_pids[$i]}" || rc=$?
  echo "=== $tag ${bg_names[$i]} (ran in the background)"
  cat "$outdir/${bg_names[$i]}"
  tally "${bg_names[$i]}" "$rc"
done
rm -rf "$outdir"

rm -rf "$seed"
total=$(awk -v ns=$(( $(date +%s%N) - t_suite )) 'BEGIN { printf "%.1f", ns / 1e9 }')
skips=${not_applicable[*]:+, ${#not_applicable[@]} not applicable on systemd $version: ${not_applicable[*]}}
skips+=${skipped[*]:+, ${#skipped[@]} SKIPPED (cannot run here; with CI set they fail): ${skipped[*]}}
if [ ${#failed[@]} = 0 ]; then
  [ $((passed + ${#skipped[@]} + ${#not_applicable[@]})) -gt 0 ] || { echo "$tag no scenario matched: $*"; exit 1; }
  echo "$tag systemd suite: $passed passed$skips ($total s)"
else
  echo "$tag systemd suite: $passed passed$skips, ${#failed[@]} FAILED: ${failed[*]} ($total s)"
  exit 1
fi
