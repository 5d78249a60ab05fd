#!/bin/bash
# deps.sh PACKAGE... — install the Debian packages a test needs, when they are not installed:
# the one place where the tests (tests/support/deps.rs), the systemd suite (tests/systemd/run.sh)
# and CI (.ci/run) install what they use.
#
# Runs as root only. Several test binaries and scenarios may ask at once: the first takes an
# exclusive lock (util-linux flock on $HEIRD_DEPS_LOCK, default /run/lock/heird-test-deps.lock),
# the others wait for it and then find the packages installed (each asks dpkg again after taking
# the lock), so apt-get runs once. When `apt-get install` fails (e.g. for lack of package
# lists on a fresh machine), runs `apt-get update` and tries once more.
#
# Prints one line on stderr when it installs something ("tests: installing ... with apt-get"),
# nothing otherwise. Exit status: 0 when every PACKAGE is installed afterwards; 1 when not (the
# reason is the last line on stderr).
set -uo pipefail

say() { echo "tests: $*" >&2; }
die() { say "$*"; exit 1; }

[ $# -gt 0 ] || die "usage: deps.sh PACKAGE..."
[ "$(id -u)" = 0 ] || die "missing: $* (not root: install with apt-get install $*)"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
  die "missing: $* (no apt-get and dpkg-query here: install them by hand)"
command -v flock >/dev/null || die "missing: $* (no flock here to install them safely: apt-get install util-linux $*)"

# missing PACKAGE...: those that dpkg does not list as installed.
missing() {
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
  done
}

lock=${HEIRD_DEPS_LOCK:-/run/lock/heird-test-deps.lock}
mkdir -p "$(dirname "$lock")"
exec 9>"$lock" || die "missing: $* (cannot open the lock $lock)"
flock 9 || die "missing: $* (cannot take the lock $lock)"

mapfile -t want < <(missing "$@")
[ ${#want[@]} -gt 0 ] || exit 0

say "installing ${want[*]} with apt-get (missing on this machine; once for all tests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt() {
  # Waits for a dpkg lock held by another apt (not one of ours: those hold $lock).
  DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" >>"$log" 2>&1
}
if ! apt install -y "${want[@]}"; then
  say "apt-get install failed; running apt-get update and trying again"
  apt update && apt install -y "${want[@]}" || {
    sed 's/^/  apt-get: /' "$log" >&2
    die "missing: ${want[*]} (apt-get could not install them; its output is above)"
  }
fi
mapfile -t still < <(missing "${want[@]}")
[ ${#still[@]} = 0 ] || { sed 's/^/  apt-get: /' "$log" >&2; die "missing: ${still[*]} (not installed after apt-get install)"; }
say "installed ${want[*]}"
