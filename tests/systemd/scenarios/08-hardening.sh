#!/bin/bash
# The shipped heird.service is sandboxed: systemd-analyze's exposure score is at most 1.5, and
# the units pass `systemd-analyze verify`. On a host: 08-hardening.sh deploy/heird.service
set -euo pipefail
unit=${1:-/etc/systemd/system/heird.service}
report=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || { echo "$report"; echo "FAIL: systemd-analyze security exited $?"; exit 1; }
grep -E '✗|Overall' <<<"$report"
score=$(sed -nE 's/.*Overall exposure level for [^:]*: ([0-9.]+).*/\1/p' <<<"$report")
[ -n "$score" ] || { echo "FAIL: no 'Overall exposure level' line"; exit 1; }
awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }' || { echo "FAIL: exposure $score > 1.5"; exit 1; }
echo "ok: exposure $score <= 1.5"
dir=$(dirname "$unit")
# verify also checks that ExecStart='s binary exists: only where heird is installed
[ -x /usr/bin/heird ] || { echo "(not verifying the units: /usr/bin/heird is not installed here)"; exit 0; }
# verify runs `man heird` for Documentation=man:heird(1); a root without man-db cannot.
man=(); command -v man >/dev/null || { man=(--man=no); echo "(no man here: verify --man=no)"; }
if out=$(systemd-analyze verify "${man[@]}" "$unit" "$dir/heird.socket" "$dir/heird-unix.socket" 2>&1) && [ -z "$out" ]; then
  echo "ok: systemd-analyze verify is clean"
else
  echo "$out"; echo "FAIL: systemd-analyze verify"; exit 1
fi
