#!/bin/bash
# package-upgrade.sh — installs, upgrades under load, removes and purges heird's .deb and .rpm
# inside a throw-away systemd sandbox (sandbox.sh: systemd as PID 1 in namespaces, the root an
# overlay of this machine's root with a tmpfs on top, so nothing is written to the host).
#
# Usage (as root):  tests/systemd/package-upgrade.sh [deb] [rpm]      (default: both)
#
# It first builds both packages twice with packaging/build-{deb,rpm}.sh: the version of
# Cargo.toml (OLD) and OLD with its patch number + 1 (NEW, built from a patched copy of the tree,
# so that the binary reports NEW too). Then, for each format, in a fresh sandbox:
#   1. install OLD (dpkg -i / rpm -i --nodeps): the sockets are enabled and listening;
#   2. GET 127.0.0.1:8080 is served (and /run/heird.sock), /info says OLD;
#   3. the load client runs (8 keep-alive + 2 new-connection clients, 12 s) while NEW is
#      installed (dpkg -i / rpm -U --nodeps): 0 failed requests, MainPID changes, /info says NEW,
#      the sockets were not restarted;
#   4. remove (dpkg -r, then dpkg -P / rpm -e --nodeps): no heird process, no unit, no conffile,
#      no enablement link: nothing with "heird" in its path is left that was not there before.
# Prints PASS/FAIL lines with figures and a closing "N passed, N failed" line.
#
# Environment:
#   HEIRD_PKG_NEW_VERSION  the higher version (default: Cargo.toml's with patch + 1)
#   HEIRD_PKG_NO_BUILD=1   use the packages already in target/ instead of (re)building them
#   HEIRD_LOAD             load client (default target/debug/examples/heird-load, built if missing)
#   PKG_TEST_TIMEOUT       seconds per format inside the sandbox (default 240)
#   SANDBOX_ROOTFS         another root for the sandbox, e.g. $(tests/systemd/rootfs.sh) for
#                          Debian 13's systemd 257 (deb only: that root has no rpm)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
self=$here/$(basename "$0")
project=$(cd "$here/../.." && pwd)

# ------------------------------------------------------------------------- inside the sandbox ---
if [ "${1:-}" = __inside ]; then
  fmt=$2 old_pkg=$3 new_pkg=$4 old=$5 new=$6
  . "$here/scenarios/lib.sh"   # fail, ok, wait_for, http, json_num, load_start/wait, no_failures
  step() { echo "--- $*"; }
  sock_since() { systemctl show -P ActiveEnterTimestampMonotonic "$1"; }
  heird_paths() {   # everything named *heird* in the system's folders (not the bound project)
    find /etc /usr /var /opt /srv /run -path /run/systemd/journal -prune -o -path '*heird*' -print 2>/dev/null \
      | grep -v -e '^/run/systemd/transient' -e '^/run/systemd/propagate' | sort
  }
  no_process() { ! pgrep -x heird >/dev/null; }
  json_str() { grep -oE "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" | head -n 1 | sed -E 's/.*"([^"]*)"$/\1/'; }

  case $fmt in
    deb)
      # The host is a container image whose policy-rc.d ("exit 101") forbids starting services
      # from maintainer scripts; a real machine has none. deb-systemd-invoke honours it.
      rm -f /usr/sbin/policy-rc.d
      installed() { dpkg-query -W -f '${Status}' heird 2>/dev/null | grep -q 'install ok installed'; }
      install_old() { dpkg -i "$old_pkg"; }
      upgrade() { dpkg -i "$new_pkg"; }
      unit_dir=/lib/systemd/system ;;
    rpm)
      command -v rpm >/dev/null || fail "no rpm in this root (apt-get install rpm)"
      installed() { rpm -q heird >/dev/null 2>&1; }
      install_old() { rpm -i --nodeps "$old_pkg"; }
      upgrade() { rpm -U --nodeps "$new_pkg"; }
      unit_dir=/usr/lib/systemd/system ;;
  esac

  installed && fail "heird is already installed in the sandbox before the test"
  [ ! -e /usr/bin/heird ] || fail "/usr/bin/heird exists before the install (from the host?)"
  before=$(heird_paths)

  step "1. install $(basename "$old_pkg")"
  install_old 2>&1 | sed 's/^/    /' || fail "the install failed"
  installed || fail "not installed after the install"
  for u in heird.socket heird-unix.socket; do
    [ "$(systemctl is-enabled "$u" 2>&1)" = enabled ] || fail "$u is $(systemctl is-enabled "$u" 2>&1) after the install"
    is_state active "$u" || fail "$u is $(prop ActiveState "$u") after the install"
  done
  [ -f /etc/heird/heird.toml ] || fail "no /etc/heird/heird.toml"
  [ -x /usr/bin/heird ] || fail "no /usr/bin/heird"
  ok "installed: heird.socket and heird-unix.socket enabled and listening, heird.service $(prop ActiveState) (socket-activated)"

  step "2. first requests"
  [ "$(http /)" = "Hello World" ] || fail "GET / over TCP"
  [ "$(http_unix /)" = "Hello World" ] || fail "GET / over /run/heird.sock"
  wait_for 10 "heird.service active" is_state active
  info=$(http /info); v0=$(json_str version <<<"$info"); pid0=$(mainpid)
  [ "$v0" = "$old" ] || fail "/info version is '$v0', expected $old: $info"
  ok "served over TCP and the Unix socket; /info: version $v0, pid $(json_num pid <<<"$info") = MainPID $pid0"

  step "3. upgrade to $(basename "$new_pkg") under load"
  tcp0=$(sock_since heird.socket); unix0=$(sock_since heird-unix.socket)
  load_start /tmp/load.json -c 8 -k 2 --duration 12s
  sleep 1.5
  t0=$(ms)
  rc=0; upgrade > /tmp/upgrade.log 2>&1 || rc=$?
  t1=$(ms)
  sed 's/^/    /' /tmp/upgrade.log
  [ "$rc" = 0 ] || fail "upgrade exited $rc"
  kill -0 "$load_pid" 2>/dev/null || fail "the upgrade took $((t1 - t0)) ms, longer than the load ran"
  load_wait /tmp/load.json
  pid1=$(mainpid); info=$(http /info); v1=$(json_str version <<<"$info")
  okn=$(json_num ok < /tmp/load.json)
  failed=0; for f in refused reset closed_before_response timeout non_200 other; do
    n=$(json_num "$f" < /tmp/load.json); failed=$((failed + ${n:-0})); done
  echo "FIGURES $fmt: upgrade $((t1 - t0)) ms; requests during the load: ok $okn, failed $failed," \
    "reconnects $(json_num reconnects < /tmp/load.json); MainPID $pid0 -> $pid1; version $v0 -> $v1"
  no_failures /tmp/load.json
  [ "$pid1" != "$pid0" ] || fail "MainPID still $pid0 after the upgrade"
  [ "$v1" = "$new" ] || fail "/info version is '$v1' after the upgrade, expected $new"
  [ "$(json_num pid <<<"$info")" = "$pid1" ] || fail "the new MainPID $pid1 is not the process that answers"
  [ "$(sock_since heird.socket)" = "$tcp0" ] || fail "heird.socket was restarted by the upgrade"
  [ "$(sock_since heird-unix.socket)" = "$unix0" ] || fail "heird-unix.socket was restarted by the upgrade"
  [ "$(prop NRestarts)" = 0 ] || fail "heird.service NRestarts = $(prop NRestarts)"
  is_state active || fail "heird.service is $(prop ActiveState) after the upgrade"
  cg=/sys/fs/cgroup$(prop ControlGroup)
  only_main() { [ "$(cat "$cg/cgroup.procs")" = "$(mainpid)" ]; }
  wait_for 35 "the old process to drain and exit" only_main
  ok "upgrade under load in $((t1 - t0)) ms: $okn requests ok, 0 failed; MainPID $pid0 -> $pid1; version $v0 -> $v1; sockets not restarted; the old process exited"

  step "4. remove"
  case $fmt in
    deb)
      dpkg -r heird 2>&1 | sed 's/^/    /' || fail "dpkg -r failed"
      wait_for 10 "no heird process after dpkg -r" no_process
      [ -f /etc/heird/heird.toml ] || fail "dpkg -r removed the conffile (only purge should)"
      for u in heird.service heird.socket heird-unix.socket; do
        s=$(prop ActiveState "$u"); [ "$s" = inactive ] || fail "$u is $s after dpkg -r"
      done
      links=$(find /etc/systemd \( -name heird.service -o -name heird.socket -o -name heird-unix.socket \) -print 2>/dev/null)
      [ -z "$links" ] || fail "enablement links left after dpkg -r: $links"
      ok "dpkg -r: no heird process, units inactive and disabled, conffile kept"
      dpkg -P heird 2>&1 | sed 's/^/    /' || fail "dpkg -P failed"
      dpkg-query -W heird >/dev/null 2>&1 && fail "dpkg still knows heird after dpkg -P: $(dpkg-query -W -f '${Status}' heird)"
      ;;
    rpm)
      rpm -e --nodeps heird 2>&1 | sed 's/^/    /' || fail "rpm -e failed"
      wait_for 10 "no heird process after rpm -e" no_process
      rpm -q heird >/dev/null 2>&1 && fail "rpm still knows heird after rpm -e"
      ;;
  esac
  no_process || fail "heird processes left: $(pgrep -a -x heird)"
  for u in heird.service heird.socket heird-unix.socket; do
    [ ! -e "$unit_dir/$u" ] || fail "$unit_dir/$u left"
    s=$(prop LoadState "$u"); [ "$s" = not-found ] || fail "$u has LoadState $s (expected not-found)"
  done
  [ ! -e /etc/heird ] || fail "/etc/heird left: $(ls -la /etc/heird)"
  after=$(heird_paths)
  left=$(comm -13 <(echo "$before") <(echo "$after"))
  [ -z "$left" ] || fail "left behind: $(tr '\n' ' ' <<<"$left")"
  ok "removed: no heird process, no unit (LoadState not-found), no /etc/heird, nothing named *heird* left"
  exit 0
fi

# ---------------------------------------------------------------------------------- the host ---
formats=("$@"); [ ${#formats[@]} -gt 0 ] || formats=(deb rpm)
for f in "${formats[@]}"; do case $f in deb | rpm) ;; *) echo "usage: $0 [deb] [rpm]" >&2; exit 2 ;; esac; done
die() { echo "package-upgrade.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (sandbox.sh: namespaces, mounts, a cgroup)"
for t in unshare nsenter setpriv script pivot_root curl dpkg; do command -v "$t" >/dev/null || die "$t not found"; done
[ -x /lib/systemd/systemd ] || die "no /lib/systemd/systemd"

target=$(readlink -m "${CARGO_TARGET_DIR:-$project/target}")
old=$(awk -F'"' '/^\[/ { sect = $0 } sect == "[package]" && /^version *=/ { print $2; exit }' "$project/Cargo.toml")
new=${HEIRD_PKG_NEW_VERSION:-$(awk -F. -v OFS=. '{ sub(/[^0-9].*$/, "", $3); $3 = $3 + 1; print $1, $2, $3 }' <<<"$old")}
dpkg --compare-versions "$new" gt "$old" || die "HEIRD_PKG_NEW_VERSION=$new is not higher than $old"

t_build=$(date +%s)
pkg() {   # pkg FORMAT VERSION: the package file, built unless HEIRD_PKG_NO_BUILD=1
  local f
  case $1 in
    deb) f=$target/debian/heird_$2-1_$(dpkg --print-architecture).deb ;;
    rpm) f=$target/generate-rpm/heird-$2-1.$(uname -m).rpm ;;
  esac
  if [ "${HEIRD_PKG_NO_BUILD:-}" != 1 ]; then
    HEIRD_PKG_VERSION=$2 "$project/packaging/build-$1.sh" >/dev/null 2>"$target/pkg-build-$1-$2.log" \
      || { cat "$target/pkg-build-$1-$2.log" >&2; die "packaging/build-$1.sh ($2) failed"; }
  fi
  [ -f "$f" ] || die "no package $f"
  echo "$f"
}
declare -A old_pkg new_pkg
for f in "${formats[@]}"; do
  [ "$f" != rpm ] || command -v rpm >/dev/null || { echo "installing rpm" >&2; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null; } || die "rpm is missing"
  old_pkg[$f]=$(pkg "$f" "$old") || exit 2
  new_pkg[$f]=$(pkg "$f" "$new") || exit 2
done
load=$(readlink -m "${HEIRD_LOAD:-$target/debug/examples/heird-load}")
if [ ! -x "$load" ]; then
  [ -z "${HEIRD_LOAD:-}" ] || die "no load client at $load"
  (cd "$project" && cargo build --example heird-load >&2) || die "cargo build --example heird-load failed"
fi
echo "packages ready after $(( $(date +%s) - t_build )) s: OLD $old, NEW $new"

# What the host has of heird before: nothing of it may change (the sandbox writes to a tmpfs).
host_state() {
  local p
  for p in /usr/bin/heird /lib/systemd/system/heird.service /lib/systemd/system/heird.socket \
           /usr/lib/systemd/system/heird.service /etc/heird /etc/heird/heird.toml /usr/share/doc/heird \
           /etc/systemd/system/sockets.target.wants/heird.socket /var/lib/dpkg/info/heird.list; do
    if [ -e "$p" ]; then echo "$p $(stat -c '%s %Y' "$p")"; else echo "$p absent"; fi
  done
  echo "dpkg: $(dpkg-query -W -f '${Status} ${Version}' heird 2>/dev/null || echo none)"
  echo "rpm: $(rpm -q heird 2>/dev/null || echo none)"
}
host_before=$(host_state)

binds=$project
case $load in "$project"/*) ;; *) binds="$binds $(dirname "$load")" ;; esac
case $target in "$project"/*) ;; *) binds="$binds $target" ;; esac

passed=0 failed=() current=
trap '[ -z "$current" ] || SANDBOX_NAME=$current "$here/sandbox.sh" down >/dev/null 2>&1; exit 130' INT TERM HUP
for f in "${formats[@]}"; do
  name=pkg-$f; current=$name
  echo "=== $f: $(basename "${old_pkg[$f]}") -> $(basename "${new_pkg[$f]}")"
  t0=$(date +%s%N) rc=0
  if SANDBOX_NAME=$name SANDBOX_BIND_RO="$binds" SANDBOX_SEED='' "$here/sandbox.sh" up 2>&1 | sed 's/^/    /'; [ "${PIPESTATUS[0]}" = 0 ]; then
    SANDBOX_NAME=$name timeout -k 5 "${PKG_TEST_TIMEOUT:-240}" "$here/sandbox.sh" exec \
      env HEIRD_LOAD="$load" "$self" __inside "$f" "${old_pkg[$f]}" "${new_pkg[$f]}" "$old" "$new" 2>&1 \
      | tee "/tmp/heird-sandbox/$name.out" | sed 's/^/    /'
    rc=${PIPESTATUS[0]}
    [ "$rc" != 124 ] || echo "    (timed out after ${PKG_TEST_TIMEOUT:-240} s)"
    if [ "$rc" != 0 ]; then
      SANDBOX_NAME=$name "$here/sandbox.sh" exec journalctl -b --no-pager -o short-monotonic > "/tmp/heird-sandbox/$name/journal.txt" 2>&1
      echo "    (journal of the sandbox: /tmp/heird-sandbox/$name/journal.txt; last lines:)"
      tail -n 40 "/tmp/heird-sandbox/$name/journal.txt" | sed 's/^/    | /'
    fi
  else
    rc=1
  fi
  SANDBOX_NAME=$name "$here/sandbox.sh" down 2>&1 | sed 's/^/    /'
  current=
  secs=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", ns / 1e9 }')
  figures=$(grep -h '^FIGURES' "/tmp/heird-sandbox/$name.out" 2>/dev/null | sed 's/^FIGURES [a-z]*: //')
  if [ "$rc" = 0 ]; then
    echo "PASS: $f install, upgrade under load, remove, purge ($secs s): $figures"; passed=$((passed + 1))
  else
    echo "FAIL: $f ($secs s, exit $rc)${figures:+: $figures}"; failed+=("$f")
  fi
done

host_after=$(host_state)
if [ "$host_before" = "$host_after" ]; then
  echo "PASS: the host is untouched (no heird file, dpkg or rpm entry appeared or changed)"; passed=$((passed + 1))
else
  echo "FAIL: the host changed:"; diff <(echo "$host_before") <(echo "$host_after") | sed 's/^/    /'; failed+=(host)
fi
echo "package upgrade: $passed passed, ${#failed[@]} failed${failed:+ (${failed[*]})}"
[ ${#failed[@]} = 0 ]
