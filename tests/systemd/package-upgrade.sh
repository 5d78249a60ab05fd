#!/bin/bash
# package-upgrade.sh — installs, upgrades under load, removes, reinstalls and purges heird's .deb
# and .rpm inside throw-away systemd sandboxes (sandbox.sh: systemd as PID 1 in namespaces, the
# root an overlay with a tmpfs on top, so nothing is written to the host), on the host's systemd
# (252 on Debian 12) and on Debian 13's systemd 257 (the root of rootfs.sh). Then it installs both
# packages into a chroot where no systemd runs.
#
# Usage (as root):  tests/systemd/package-upgrade.sh [deb] [rpm] [chroot]     (default: all)
#
# Packages (packaging/build-{deb,rpm}.sh): OLD, the version of Cargo.toml with the revision of
# packaging/debian/changelog; NEW, OLD with patch + 1, revision 1 (a patched copy of the tree, so
# that the binary reports NEW too); NEW2, NEW's binary with revision 2 and one more line in
# heird.service (Environment=HEIRD_PKG_TEST=unit-changed): an upgrade whose unit changed; NEW3
# (.deb only), revision 3 with another such line.
#
# deb, in a fresh sandbox per systemd version:
#   1. dpkg -i OLD: heird.socket and heird-unix.socket enabled and listening, heird.service
#      inactive until the first connection, /run/heird.sock 0660 root:heird-clients
#   2. requests over TCP and the Unix socket
#   3. dpkg -i NEW under load (units unchanged): a handoff, not a restart (same InvocationID, new
#      MainPID, the new version answers), 0 failed, 0 refused, the sockets not restarted
#   4. dpkg -i NEW2 under load (heird.service changed): a restart (new InvocationID), the new
#      Environment= in /proc/MAINPID/environ, 0 failed, 0 refused, the sockets not restarted
#   4b. standalone (socket units stopped, heird binds from its config): dpkg -i NEW3 (revision 3,
#      heird.service changed again) under load: a restart, the listener comes back from the fd
#      store, 0 failed, 0 refused
#   5. the admin disables heird-unix.socket; dpkg -r: no heird process, the sockets masked, the
#      conffile kept
#   6. dpkg -i NEW3 again: heird.socket enabled and listening, heird-unix.socket still disabled
#   7. dpkg -P: nothing named *heird* left, the units not-found, nothing masked
# rpm (rpm -i/-U/-e --nodeps, Fedora's preset policy "disable *" in place), per systemd version:
#   rpm-preset:   a preset enables both sockets: rpm -i enables them and starts nothing; the admin
#                 starts them; then 2.-4. as above with rpm -U; rpm -e: disabled, stopped, gone
#   rpm-helper:   as rpm-preset, with a stand-in for Fedora's systemd-update-helper
#                 (update-helper-standin.sh): the scriptlets mark the unit, and after rpm -U the
#                 test runs what systemd's rpm file trigger runs (reload-or-restart --marked)
#   rpm-nopreset: no preset for heird: rpm -i enables nothing and starts nothing; rpm -e clean
# chroot: dpkg -i / -r / -P of the .deb inside a chroot of an overlay of the Debian 13 root (the
#   host's root when that cannot be built), with no systemd running: exit 0, no error on stderr,
#   the sockets enabled (links) and the group created, no heird process; then remove and purge.
#   Then the same from outside with dpkg --root --force-script-chrootless (DPKG_ROOT set), and
#   rpm -i / rpm -e of the .rpm in the chroot (presets as Fedora's: links, nothing started).
#
# Prints PASS/FAIL lines with figures, and a closing "package upgrade: N passed, N failed" line.
#
# Environment:
#   HEIRD_PKG_NEW_VERSION  the higher version (default: Cargo.toml's with patch + 1)
#   HEIRD_PKG_NO_BUILD=1   use the packages already in target/ instead of (re)building them
#   HEIRD_LOAD             load client (default target/debug/examples/heird-load, built if missing)
#   HEIRD_PKG_SYSTEMD      which systemd versions: "252 257" (default), "252" or "257"
#   PKG_TEST_TIMEOUT       seconds per sandbox (default 240)
#   CI                     when set (not empty), a systemd 257 root that cannot be built is a
#                          failure, not a SKIP
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
self=$here/$(basename "$0")
project=$(cd "$here/../.." && pwd)
UNIT_TEST_LINE=HEIRD_PKG_TEST=unit-changed

# ------------------------------------------------------------------------- inside the sandbox ---
if [ "${1:-}" = __inside ]; then
  case=$2 old_pkg=$3 new_pkg=$4 new2_pkg=$5 old=$6 new=$7 new3_pkg=${8:-}
  . "$here/scenarios/lib.sh"   # fail, ok, wait_for, http, json_num, load_start/wait, no_failures
  step() { echo "--- $*"; }
  sock_since() { systemctl show -P ActiveEnterTimestampMonotonic "$1"; }
  heird_paths() {   # everything named *heird* in the system's folders (not the bound project)
    find /etc /usr /var /opt /srv /run -path /run/systemd/journal -prune -o -path '*heird*' -print 2>/dev/null \
      | grep -v -e '^/run/systemd/transient' -e '^/run/systemd/propagate' -e '^/run/systemd/units/' \
        -e '^/var/log/journal' | sort
  }
  no_process() { ! pgrep -x heird >/dev/null; }
  json_str() { grep -oE "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" | head -n 1 | sed -E 's/.*"([^"]*)"$/\1/'; }
  enabled() { [ "$(systemctl is-enabled "$1" 2>&1)" = "$2" ]; }
  fmt=${case%%-*}

  case $fmt in
    deb)
      # The host is a container image whose policy-rc.d ("exit 101") forbids starting services
      # from maintainer scripts; a real machine has none. deb-systemd-invoke honours it.
      rm -f /usr/sbin/policy-rc.d
      installed() { dpkg-query -W -f '${Status}' heird 2>/dev/null | grep -q 'install ok installed'; }
      install_pkg() { dpkg -i "$1"; }
      upgrade_pkg() { dpkg -i "$1"; } ;;
    rpm)
      command -v rpm >/dev/null || fail "no rpm in this root (apt-get install rpm)"
      installed() { rpm -q heird >/dev/null 2>&1; }
      install_pkg() { rpm -i --nodeps "$1"; }
      upgrade_pkg() { rpm -U --nodeps "$1"; }
      # Fedora's policy: nothing is enabled unless a preset says so (99-default-disable.preset).
      mkdir -p /etc/systemd/system-preset
      echo 'disable *' > /etc/systemd/system-preset/99-default-disable.preset
      if [ "$case" != rpm-nopreset ]; then
        printf 'enable heird.socket\nenable heird-unix.socket\n' > /etc/systemd/system-preset/50-heird.preset
      fi
      if [ "$case" = rpm-helper ]; then
        # Fedora's systemd-update-helper (a stand-in: Debian's systemd has none), and the end of
        # the transaction as the systemd package's rpm file trigger does it.
        install -m 0755 "$here/update-helper-standin.sh" /usr/lib/systemd/systemd-update-helper
        upgrade_pkg() { rpm -U --nodeps "$1" && /usr/lib/systemd/systemd-update-helper system-reload-restart; }
      fi ;;
  esac

  installed && fail "heird is already installed in the sandbox before the test"
  [ ! -e /usr/bin/heird ] || fail "/usr/bin/heird exists before the install (from the host?)"
  before=$(heird_paths)

  # upgrade_under_load PKG WHAT: installs PKG while the load client runs; sets pid0/pid1,
  # inv0/inv1 (InvocationID before/after) and prints a FIGURES line.
  upgrade_under_load() {
    local pkg=$1 what=$2 tcp0 unix0 t0 t1 rc okn failed refused f n
    tcp0=$(sock_since heird.socket); unix0=$(sock_since heird-unix.socket)
    pid0=$(mainpid); inv0=$(prop InvocationID)
    load_start /tmp/load.json -c 8 -k 2 --duration 10s
    sleep 1.5
    t0=$(ms)
    rc=0; upgrade_pkg "$pkg" > /tmp/upgrade.log 2>&1 || rc=$?
    t1=$(ms)
    sed 's/^/    /' /tmp/upgrade.log
    [ "$rc" = 0 ] || fail "upgrade to $(basename "$pkg") exited $rc"
    kill -0 "$load_pid" 2>/dev/null || fail "the upgrade took $((t1 - t0)) ms, longer than the load ran"
    load_wait /tmp/load.json
    pid1=$(mainpid); inv1=$(prop InvocationID)
    okn=$(json_num ok < /tmp/load.json); refused=$(json_num refused < /tmp/load.json)
    failed=0; for f in refused reset closed_before_response timeout non_200 other; do
      n=$(json_num "$f" < /tmp/load.json); failed=$((failed + ${n:-0})); done
    local got=handoff; [ "$inv1" = "$inv0" ] || got=restart
    echo "FIGURES $case $what, $got: $(basename "$pkg") in $((t1 - t0)) ms; requests during the load: ok $okn," \
      "failed $failed (refused $refused), reconnects $(json_num reconnects < /tmp/load.json); MainPID $pid0 -> $pid1"
    no_failures /tmp/load.json
    [ "$pid1" != "$pid0" ] || fail "MainPID still $pid0 after the upgrade"
    is_state active || fail "heird.service is $(prop ActiveState) after the upgrade"
    [ "$(sock_since heird.socket)" = "$tcp0" ] || fail "heird.socket was restarted by the upgrade"
    [ "$(sock_since heird-unix.socket)" = "$unix0" ] || fail "heird-unix.socket was restarted by the upgrade"
    [ "$(prop NRestarts)" = 0 ] || fail "heird.service NRestarts = $(prop NRestarts)"
    cg=/sys/fs/cgroup$(prop ControlGroup)
    only_main() { [ "$(cat "$cg/cgroup.procs")" = "$(mainpid)" ]; }
    wait_for 35 "the old process to drain and exit" only_main
  }

  step "1. install $(basename "$old_pkg")"
  install_pkg "$old_pkg" > /tmp/install.log 2>&1 || { cat /tmp/install.log; fail "the install failed"; }
  sed 's/^/    /' /tmp/install.log
  installed || fail "not installed after the install"
  [ -x /usr/bin/heird ] && [ -f /etc/heird/heird.toml ] || fail "no /usr/bin/heird or /etc/heird/heird.toml"
  getent group heird-clients >/dev/null || fail "no group heird-clients after the install"
  [ -s /var/lib/heird/units.sha256 ] || fail "no /var/lib/heird/units.sha256 after the install"
  is_state inactive || fail "heird.service is $(prop ActiveState) after the install"
  case $case in
    deb)
      for u in heird.socket heird-unix.socket; do
        enabled "$u" enabled || fail "$u is $(systemctl is-enabled "$u" 2>&1) after the install"
        is_state active "$u" || fail "$u is $(prop ActiveState "$u") after the install"
      done
      ok "installed: both sockets enabled and listening, heird.service inactive (socket-activated)" ;;
    rpm-preset | rpm-helper)
      for u in heird.socket heird-unix.socket; do
        enabled "$u" enabled || fail "$u is $(systemctl is-enabled "$u" 2>&1) after the install (the preset enables it)"
        is_state inactive "$u" || fail "$u is $(prop ActiveState "$u") after the install: %post must start nothing"
      done
      enabled heird.service disabled || fail "heird.service is $(systemctl is-enabled heird.service 2>&1) (no preset enables it)"
      ok "installed: both sockets enabled by the preset, nothing started (as %systemd_post)"
      systemctl start heird.socket heird-unix.socket || fail "the admin's systemctl start of the sockets failed"
      ok "the admin started the sockets" ;;
    rpm-nopreset)
      for u in heird.service heird.socket heird-unix.socket; do
        enabled "$u" disabled || fail "$u is $(systemctl is-enabled "$u" 2>&1) after the install (no preset enables it)"
        is_state inactive "$u" || fail "$u is $(prop ActiveState "$u") after the install"
      done
      ok "installed: nothing enabled, nothing started (the preset policy says disable)"
      rpm -e --nodeps heird 2>&1 | sed 's/^/    /'
      installed && fail "rpm still knows heird after rpm -e"
      after=$(heird_paths); left=$(comm -13 <(echo "$before") <(echo "$after"))
      [ -z "$left" ] || fail "left behind: $(tr '\n' ' ' <<<"$left")"
      ok "rpm -e: nothing named *heird* left"
      exit 0 ;;
  esac
  perm=$(stat -c '%a %U:%G' /run/heird.sock)
  [ "$perm" = "660 root:heird-clients" ] || fail "/run/heird.sock is $perm, expected 660 root:heird-clients"

  step "2. first requests"
  [ "$(http /)" = "Hello World" ] || fail "GET / over TCP"
  [ "$(http_unix /)" = "Hello World" ] || fail "GET / over /run/heird.sock"
  wait_for 10 "heird.service active" is_state active
  info=$(http /info); v0=$(json_str version <<<"$info")
  [ "$v0" = "$old" ] || fail "/info version is '$v0', expected $old: $info"
  ok "served over TCP and the Unix socket (0660 root:heird-clients); /info: version $v0, pid $(json_num pid <<<"$info") = MainPID $(mainpid)"

  step "3. upgrade to $(basename "$new_pkg") (units unchanged) under load"
  upgrade_under_load "$new_pkg" "units unchanged"
  sd=$(systemctl --version | awk 'NR == 1 { print $2 }')
  if [ "$case" = rpm-helper ] && [ "$sd" -lt 257 ] && [ "$inv1" != "$inv0" ]; then
    # Seen on 252: `reload-or-restart --marked` restarts a unit marked needs-reload (257
    # reloads it). A restart refuses nothing either (checked above: 0 failed).
    echo "NOTE: systemd $sd: reload-or-restart --marked restarted heird.service (Markers=needs-reload); 257 reloads"
  else
    [ "$inv1" = "$inv0" ] || fail "InvocationID changed ($inv0 -> $inv1): restarted, not reloaded"
  fi
  info=$(http /info); v1=$(json_str version <<<"$info")
  [ "$v1" = "$new" ] || fail "/info version is '$v1' after the upgrade, expected $new"
  [ "$(json_num pid <<<"$info")" = "$pid1" ] || fail "the new MainPID $pid1 is not the process that answers"
  if [ "$inv1" = "$inv0" ]; then how="reloaded (a handoff: same InvocationID"; else how="restarted (new InvocationID"; fi
  ok "$how, MainPID $pid0 -> $pid1), version $v0 -> $v1, 0 failed, sockets not restarted, the old process exited"

  step "4. upgrade to $(basename "$new2_pkg") (heird.service changed: Environment=$UNIT_TEST_LINE) under load"
  tr '\0' '\n' < "/proc/$(mainpid)/environ" | grep -qx "$UNIT_TEST_LINE" && fail "the setting is in effect before the upgrade"
  upgrade_under_load "$new2_pkg" "heird.service changed"
  grep -qx "Environment=$UNIT_TEST_LINE" /usr/lib/systemd/system/heird.service || fail "the installed heird.service lacks the test line"
  [ "$inv1" != "$inv0" ] || fail "InvocationID unchanged ($inv0): reloaded, but heird.service changed (restart expected)"
  tr '\0' '\n' < "/proc/$pid1/environ" | grep -qx "$UNIT_TEST_LINE" || fail "$UNIT_TEST_LINE is not in the environment of MainPID $pid1"
  prop Environment | grep -qw "$UNIT_TEST_LINE" || fail "systemctl show -p Environment: $(prop Environment)"
  [ "$(prop NeedDaemonReload)" = no ] || fail "NeedDaemonReload=$(prop NeedDaemonReload) after the upgrade"
  ok "restarted (InvocationID changed, MainPID $pid0 -> $pid1), $UNIT_TEST_LINE in effect, 0 failed, sockets not restarted"

  if [ "$fmt" = deb ]; then
    step "4b. standalone (the admin stops the socket units; heird binds from its config), upgrade to $(basename "$new3_pkg") (heird.service changed again) under load"
    systemctl stop heird.socket heird-unix.socket
    systemctl restart heird.service || fail "systemctl restart heird.service (standalone) failed"
    wait_for 10 "standalone heird answering" http /healthz
    [ "$(http /info | json_str source)" = bound ] || fail "standalone heird does not bind its listener: $(http /info)"
    upgrade_under_load "$new3_pkg" "heird.service changed, standalone"
    [ "$inv1" != "$inv0" ] || fail "standalone: InvocationID unchanged: reloaded, restart expected"
    tr '\0' '\n' < "/proc/$pid1/environ" | grep -qx "$UNIT_TEST_LINE-3" || fail "standalone: $UNIT_TEST_LINE-3 not in effect"
    passed_names "$pid1" | tr ':' '\n' | grep -q '^bound-' || fail "standalone: the new process did not get the listener from the fd store (LISTEN_FDNAMES=$(passed_names "$pid1"))"
    ok "standalone: restarted (MainPID $pid0 -> $pid1); from the fd store it got the listener and $(passed_conns "$pid1") idle connections; $UNIT_TEST_LINE-3 in effect, 0 failed"
    systemctl stop heird.service
    systemctl start heird.socket heird-unix.socket
    new2_pkg=$new3_pkg   # the newest, installed again in step 6
  fi

  case $fmt in
    deb)
      step "5. the admin disables heird-unix.socket; dpkg -r"
      systemctl disable --now heird-unix.socket 2>&1 | sed 's/^/    /'
      dpkg -r heird 2>&1 | sed 's/^/    /' || fail "dpkg -r failed"
      wait_for 10 "no heird process after dpkg -r" no_process
      [ -f /etc/heird/heird.toml ] || fail "dpkg -r removed the conffile (only purge should)"
      for u in heird.service heird.socket heird-unix.socket; do
        s=$(prop ActiveState "$u"); [ "$s" = inactive ] || fail "$u is $s after dpkg -r"
      done
      for u in heird.socket heird-unix.socket; do
        s=$(prop LoadState "$u"); [ "$s" = masked ] || fail "$u has LoadState $s after dpkg -r (debhelper masks)"
      done
      [ ! -e /run/heird.sock ] || fail "/run/heird.sock left after dpkg -r (RemoveOnStop=yes)"
      ok "dpkg -r: no heird process, units inactive, sockets masked, conffile kept, no /run/heird.sock"

      step "6. install $(basename "$new2_pkg") again"
      dpkg -i "$new2_pkg" 2>&1 | sed 's/^/    /' || fail "reinstall failed"
      enabled heird.socket enabled || fail "heird.socket is $(systemctl is-enabled heird.socket 2>&1) after the reinstall"
      is_state active heird.socket || fail "heird.socket is $(prop ActiveState heird.socket) after the reinstall"
      enabled heird-unix.socket disabled || fail "heird-unix.socket is $(systemctl is-enabled heird-unix.socket 2>&1): the admin's disable was lost"
      is_state inactive heird-unix.socket || fail "heird-unix.socket is $(prop ActiveState heird-unix.socket) (disabled by the admin)"
      [ "$(http /)" = "Hello World" ] || fail "GET / after the reinstall"
      ok "reinstalled: heird.socket enabled and listening, heird-unix.socket still disabled and stopped (the admin's choice), served"

      step "7. purge"
      dpkg -P heird 2>&1 | sed 's/^/    /' || fail "dpkg -P failed"
      dpkg-query -W heird >/dev/null 2>&1 && fail "dpkg still knows heird after dpkg -P: $(dpkg-query -W -f '${Status}' heird)"
      ;;
    rpm)
      step "5. rpm -e"
      rpm -e --nodeps heird 2>&1 | sed 's/^/    /' || fail "rpm -e failed"
      # With the helper, systemd's file trigger does the daemon-reload after an erase.
      [ "$case" != rpm-helper ] || /usr/lib/systemd/systemd-update-helper system-reload
      wait_for 10 "no heird process after rpm -e" no_process
      installed && fail "rpm still knows heird after rpm -e"
      ;;
  esac
  no_process || fail "heird processes left: $(pgrep -a -x heird)"
  for u in heird.service heird.socket heird-unix.socket; do
    [ ! -e "/usr/lib/systemd/system/$u" ] || fail "/usr/lib/systemd/system/$u left"
    s=$(prop LoadState "$u"); [ "$s" = not-found ] || fail "$u has LoadState $s (expected not-found)"
  done
  [ ! -e /etc/heird ] || fail "/etc/heird left: $(ls -la /etc/heird)"
  [ ! -e /var/lib/heird ] || fail "/var/lib/heird left: $(ls -la /var/lib/heird)"
  after=$(heird_paths)
  left=$(comm -13 <(echo "$before") <(echo "$after"))
  [ -z "$left" ] || fail "left behind: $(tr '\n' ' ' <<<"$left")"
  ok "gone: no heird process, no unit (LoadState not-found, nothing masked), no /etc/heird, no /var/lib/heird, nothing named *heird* left"
  exit 0
fi

# ------------------------------------------------------------------ the chroot (no systemd) ---
# __chroot ROOT DEB [RPM]: runs in its own mount and pid namespace (see "want chroot" below).
if [ "${1:-}" = __chroot ]; then
  base=$2 deb=$3
  fail() { echo "FAIL: $*"; exit 1; }
  ok() { echo "ok: $*"; }
  st=$(mktemp -d /tmp/heird-chroot.XXXXXX)
  mount -t tmpfs heird-chroot "$st"
  mkdir "$st/upper" "$st/work" "$st/root"
  mount -t overlay -o "lowerdir=$base,upperdir=$st/upper,workdir=$st/work" heird-chroot-root "$st/root"
  r=$st/root
  mount -t proc proc "$r/proc"
  mount -t tmpfs -o mode=755 heird-chroot-run "$r/run"
  mount -t tmpfs -o mode=1777 heird-chroot-tmp "$r/tmp"
  for d in null zero random urandom; do [ -e "$r/dev/$d" ] || { touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; }; done
  rm -f "$r/usr/sbin/policy-rc.d"
  cp "$deb" "$r/tmp/heird.deb"
  inroot() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
  # not_noted FILE: the lines of FILE other than what systemd-sysusers and deb-systemd-helper
  # (systemctl enable) say they created; anything else from the scripts is an error.
  not_noted() {
    grep -v -E -e "^Creating group '?heird-clients'? with GID [0-9]+\.$" \
      -e "^Removed '?[^ ]*/etc/systemd/system/sockets\.target\.wants/heird(-unix)?\.socket'?\.$" \
      -e "^Created symlink '?[^ ]*/etc/systemd/system/sockets\.target\.wants/heird(-unix)?\.socket'? → '?[^ ]*/systemd/system/heird(-unix)?\.socket'?\.$" \
      "$1" || true
  }
  [ ! -d "$r/run/systemd/system" ] || fail "the chroot has /run/systemd/system"
  inroot dpkg-query -W heird >/dev/null 2>&1 && fail "heird is already installed in the chroot"

  rc=0; inroot dpkg -i /tmp/heird.deb > "$st/out" 2> "$st/err" || rc=$?
  sed 's/^/    | /' "$st/out" "$st/err"
  [ "$rc" = 0 ] || fail "dpkg -i in the chroot exited $rc"
  bad=$(not_noted "$st/err")
  [ -z "$bad" ] || fail "stderr of dpkg -i in the chroot: $bad"
  [ "$(inroot dpkg-query -W -f '${Status}' heird)" = "install ok installed" ] || fail "not installed: $(inroot dpkg-query -W -f '${Status}' heird)"
  for u in heird.socket heird-unix.socket; do
    [ -L "$r/etc/systemd/system/sockets.target.wants/$u" ] || fail "$u is not enabled (no sockets.target.wants link)"
  done
  inroot getent group heird-clients >/dev/null || fail "no group heird-clients in the chroot"
  [ -s "$r/var/lib/heird/units.sha256" ] || fail "no /var/lib/heird/units.sha256"
  ! inroot pgrep -x heird >/dev/null || fail "a heird process runs: $(inroot pgrep -a -x heird)"
  [ -z "$(ls -A "$r/run")" ] || fail "something was written to /run: $(ls -A "$r/run")"
  ok "dpkg -i in a chroot without systemd: exit 0, no error on stderr, both sockets enabled (links), group heird-clients, nothing started"

  rc=0; inroot dpkg -r heird > "$st/out" 2> "$st/err" || rc=$?
  sed 's/^/    | /' "$st/out" "$st/err"
  [ "$rc" = 0 ] || fail "dpkg -r in the chroot exited $rc"
  [ -z "$(cat "$st/err")" ] || fail "stderr of dpkg -r in the chroot: $(cat "$st/err")"
  [ "$(readlink "$r/etc/systemd/system/heird.socket")" = /dev/null ] || fail "heird.socket is not masked after dpkg -r"
  rc=0; inroot dpkg -P heird > "$st/out" 2> "$st/err" || rc=$?
  sed 's/^/    | /' "$st/out" "$st/err"
  [ "$rc" = 0 ] || fail "dpkg -P in the chroot exited $rc"
  left=$(cd "$st/upper" && find . -path '*heird*' ! -path './tmp/*' ! -path './var/lib/dpkg/*' -print)
  [ -z "$left" ] || fail "left in the chroot after dpkg -P: $left"
  ok "dpkg -r (sockets masked), dpkg -P: exit 0, nothing on stderr, nothing named *heird* left"

  # From outside, into the root: dpkg --root with --force-script-chrootless runs the scripts here
  # (this machine's deb-systemd-helper, systemd-sysusers) with DPKG_ROOT set: they must act on
  # the root only, and not on this machine's systemd.
  group_here=$(getent group heird-clients || true)
  for op in "-i $deb" "-r heird" "-P heird"; do
    # shellcheck disable=SC2086
    rc=0; dpkg --root="$r" --force-script-chrootless $op > "$st/out" 2> "$st/err" || rc=$?
    sed 's/^/    | /' "$st/out" "$st/err"
    [ "$rc" = 0 ] || fail "dpkg --root --force-script-chrootless $op exited $rc"
    bad=$(not_noted "$st/err")
    [ -z "$bad" ] || fail "stderr of dpkg --root $op: $bad"
    case $op in
      -i*)
        for u in heird.socket heird-unix.socket; do
          [ -L "$r/etc/systemd/system/sockets.target.wants/$u" ] || fail "DPKG_ROOT: $u is not enabled in the root"
        done
        grep -q '^heird-clients:' "$r/etc/group" || fail "DPKG_ROOT: no group heird-clients in the root's /etc/group"
        [ -s "$r/var/lib/heird/units.sha256" ] || fail "DPKG_ROOT: no units.sha256 in the root" ;;
      -r*) [ "$(readlink "$r/etc/systemd/system/heird.socket")" = /dev/null ] || fail "DPKG_ROOT: heird.socket not masked in the root after -r" ;;
    esac
  done
  [ "$(getent group heird-clients || true)" = "$group_here" ] || fail "DPKG_ROOT: the group changed outside the root"
  [ ! -e /var/lib/heird ] && [ ! -e /etc/systemd/system/heird.socket ] || fail "DPKG_ROOT: the scripts wrote outside the root"
  left=$(cd "$st/upper" && find . -path '*heird*' ! -path './tmp/*' ! -path './var/lib/dpkg/*' -print)
  [ -z "$left" ] || fail "left in the root after dpkg --root -P: $left"
  ok "DPKG_ROOT (dpkg --root --force-script-chrootless -i, -r, -P from outside): enabled, group and record in the root only; masked; purged clean"

  # The .rpm in the same root (an image build): rpm -i / rpm -e inside the chroot, with Fedora's
  # preset policy and a preset that enables the sockets.
  if [ -n "${4:-}" ]; then
    cp "$4" "$r/tmp/heird.rpm"
    mkdir -p "$r/etc/systemd/system-preset"
    echo 'disable *' > "$r/etc/systemd/system-preset/99-default-disable.preset"
    printf 'enable heird.socket\nenable heird-unix.socket\n' > "$r/etc/systemd/system-preset/50-heird.preset"
    rc=0; inroot rpm -i --nodeps /tmp/heird.rpm > "$st/out" 2> "$st/err" || rc=$?
    sed 's/^/    | /' "$st/out" "$st/err"
    [ "$rc" = 0 ] || fail "rpm -i in the chroot exited $rc"
    bad=$(not_noted "$st/err" | grep -v -e '^rpm: RPM should not be used directly' -e '^rpm: However assuming' || true)
    [ -z "$bad" ] || fail "stderr of rpm -i in the chroot: $bad"
    for u in heird.socket heird-unix.socket; do
      [ -L "$r/etc/systemd/system/sockets.target.wants/$u" ] || fail "rpm: the preset did not enable $u"
    done
    [ ! -e "$r/etc/systemd/system/multi-user.target.wants/heird.service" ] || fail "rpm: heird.service enabled (no preset says so)"
    [ -s "$r/var/lib/heird/units.sha256" ] || fail "rpm: no units.sha256"
    ! inroot pgrep -x heird >/dev/null || fail "rpm: a heird process runs"
    [ -z "$(ls -A "$r/run")" ] || fail "rpm: something was written to /run: $(ls -A "$r/run")"
    rc=0; inroot rpm -e --nodeps heird > "$st/out" 2> "$st/err" || rc=$?
    sed 's/^/    | /' "$st/out" "$st/err"
    [ "$rc" = 0 ] || fail "rpm -e in the chroot exited $rc"
    bad=$(not_noted "$st/err" | grep -v -e '^rpm: RPM should not be used directly' -e '^rpm: However assuming' || true)
    [ -z "$bad" ] || fail "stderr of rpm -e in the chroot: $bad"
    left=$(cd "$st/upper" && find . -path '*heird*' ! -path './tmp/*' ! -path './var/lib/dpkg/*' ! -path './etc/systemd/system-preset/*' -print)
    [ -z "$left" ] || fail "left in the chroot after rpm -e: $left"
    ok "rpm -i in a chroot without systemd: exit 0, the preset enabled both sockets (links), nothing started; rpm -e: links gone, nothing named *heird* left"
  fi
  exit 0
fi

# ---------------------------------------------------------------------------------- the host ---
cases=("$@"); [ ${#cases[@]} -gt 0 ] || cases=(deb rpm chroot)
for f in "${cases[@]}"; do case $f in deb | rpm | chroot) ;; *) echo "usage: $0 [deb] [rpm] [chroot]" >&2; exit 2 ;; esac; done
die() { echo "package-upgrade.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (sandbox.sh: namespaces, mounts, a cgroup)"
for t in unshare nsenter setpriv script pivot_root curl dpkg chroot; do command -v "$t" >/dev/null || die "$t not found"; done
[ -x /lib/systemd/systemd ] || die "no /lib/systemd/systemd"
want() { local c; for c in "${cases[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }

target=$(readlink -m "${CARGO_TARGET_DIR:-$project/target}")
cargo_version=$(awk -F'"' '/^\[/ { sect = $0 } sect == "[package]" && /^version *=/ { print $2; exit }' "$project/Cargo.toml")
top=$(sed -n '1s/^heird (\([^)]*\)).*/\1/p' "$project/packaging/debian/changelog")
old_rev=1; [ "${top%-*}" != "$cargo_version" ] || old_rev=${top##*-}
old=$cargo_version
new=${HEIRD_PKG_NEW_VERSION:-$(awk -F. -v OFS=. '{ sub(/[^0-9].*$/, "", $3); $3 = $3 + 1; print $1, $2, $3 }' <<<"$old")}
dpkg --compare-versions "$new" gt "$old" || die "HEIRD_PKG_NEW_VERSION=$new is not higher than $old"

t_build=$(date +%s)
pkg() {   # pkg FORMAT VERSION REVISION [UNIT_EXTRA]: the package file, built unless HEIRD_PKG_NO_BUILD=1
  local f log=$target/pkg-build-$1-$2-$3.log
  case $1 in
    deb) f=$target/deb/heird_$2-$3_$(dpkg --print-architecture).deb ;;
    rpm) f=$target/rpm/heird-$2-$3.$(uname -m).rpm ;;
  esac
  if [ "${HEIRD_PKG_NO_BUILD:-}" != 1 ]; then
    mkdir -p "$target"
    HEIRD_PKG_VERSION=$2 HEIRD_PKG_REVISION=$3 HEIRD_PKG_UNIT_EXTRA=${4:-} "$project/packaging/build-$1.sh" >/dev/null 2>"$log" \
      || { cat "$log" >&2; die "packaging/build-$1.sh ($2-$3) failed"; }
  fi
  [ -f "$f" ] || die "no package $f"
  echo "$f"
}
declare -A old_pkg new_pkg new2_pkg
new3_pkg=
formats=(); want deb || want chroot && formats+=(deb); want rpm || want chroot && formats+=(rpm)
for f in "${formats[@]}"; do
  [ "$f" != rpm ] || command -v rpm >/dev/null || { echo "installing rpm" >&2; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null; } || die "rpm is missing"
  old_pkg[$f]=$(pkg "$f" "$old" "$old_rev") || exit 2
  new_pkg[$f]=$(pkg "$f" "$new" 1) || exit 2
  new2_pkg[$f]=$(pkg "$f" "$new" 2 "Environment=$UNIT_TEST_LINE") || exit 2
  [ "$f" != deb ] || new3_pkg=$(pkg deb "$new" 3 "Environment=$UNIT_TEST_LINE-3") || exit 2
done
load=$(readlink -m "${HEIRD_LOAD:-$target/debug/examples/heird-load}")
if [ ! -x "$load" ]; then
  [ -z "${HEIRD_LOAD:-}" ] || die "no load client at $load"
  (cd "$project" && cargo build --example heird-load >&2) || die "cargo build --example heird-load failed"
fi
echo "packages ready after $(( $(date +%s) - t_build )) s: OLD $old-$old_rev, NEW $new-1, NEW2 $new-2 (heird.service + Environment=$UNIT_TEST_LINE)"

# The systemd versions: the host's, and Debian 13's from rootfs.sh (SKIP when it cannot be built,
# a failure when CI is set).
declare -A roots
passed=0 failed=() skipped=()
for v in ${HEIRD_PKG_SYSTEMD:-252 257}; do
  case $v in
    252) roots[$v]=/ ;;
    257)
      rootfs_err=$(mktemp)
      # Its own root with rpm (rootfs.sh keeps it apart from the systemd suite's, trixie+rpm).
      rc=0; root=$(HEIRD_ROOTFS_EXTRA=rpm "$here/rootfs.sh" trixie 2>"$rootfs_err") || rc=$?
      if [ "$rc" = 0 ]; then roots[$v]=$root
      else
        reason=$(tail -n 1 "$rootfs_err")
        if [ -n "${CI:-}" ]; then echo "FAIL: systemd 257: no Debian 13 root (rootfs.sh exit $rc): $reason"; failed+=(rootfs-257)
        else
          # Not CI: a machine without a reachable mirror may skip 257, and says so.
          echo "SKIP: systemd 257: no Debian 13 root (rootfs.sh exit $rc): $reason (the 257 run is skipped because CI is not set; with CI set this is a FAIL)"
          skipped+=("257 (no Debian 13 root: $reason)")
        fi
      fi
      rm -f "$rootfs_err" ;;
    *) die "HEIRD_PKG_SYSTEMD: $v is neither 252 nor 257" ;;
  esac
done

# What the host has of heird before: nothing of it may change (the sandboxes write to a tmpfs).
host_state() {
  local p
  for p in /usr/bin/heird /lib/systemd/system/heird.service /usr/lib/systemd/system/heird.service \
           /usr/lib/systemd/system/heird.socket /etc/heird /etc/heird/heird.toml /usr/share/doc/heird \
           /var/lib/heird /etc/systemd/system/sockets.target.wants/heird.socket /var/lib/dpkg/info/heird.list; do
    if [ -e "$p" ]; then echo "$p $(stat -c '%s %Y' "$p")"; else echo "$p absent"; fi
  done
  echo "group: $(getent group heird-clients || echo none)"
  echo "dpkg: $(dpkg-query -W -f '${Status} ${Version}' heird 2>/dev/null || echo none)"
  echo "rpm: $(rpm -q heird 2>/dev/null || echo none)"
}
host_before=$(host_state)

binds=$project
case $load in "$project"/*) ;; *) binds="$binds $(dirname "$load")" ;; esac
case $target in "$project"/*) ;; *) binds="$binds $target" ;; esac

current=
trap '[ -z "$current" ] || SANDBOX_NAME=$current "$here/sandbox.sh" down >/dev/null 2>&1; exit 130' INT TERM HUP
# run_case VERSION CASE: one case in a fresh sandbox of that systemd.
run_case() {
  local v=$1 c=$2 f=${2%%-*} name=pkg-$1-$2 t0 rc=0 secs figures
  current=$name
  echo "=== systemd $v, $c: $(basename "${old_pkg[$f]}") -> $(basename "${new_pkg[$f]}") -> $(basename "${new2_pkg[$f]}")"
  t0=$(date +%s%N)
  if SANDBOX_NAME=$name SANDBOX_ROOTFS=${roots[$v]} SANDBOX_BIND_RO="$binds" SANDBOX_SEED='' "$here/sandbox.sh" up 2>&1 | sed 's/^/    /'; [ "${PIPESTATUS[0]}" = 0 ]; then
    SANDBOX_NAME=$name timeout -k 5 "${PKG_TEST_TIMEOUT:-240}" "$here/sandbox.sh" exec \
      env HEIRD_LOAD="$load" "$self" __inside "$c" "${old_pkg[$f]}" "${new_pkg[$f]}" "${new2_pkg[$f]}" "$old" "$new" "$new3_pkg" 2>&1 \
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
  figures=$(grep -h '^FIGURES' "/tmp/heird-sandbox/$name.out" 2>/dev/null | sed 's/^FIGURES [a-z-]* //' | tr '\n' '|' | sed 's/|$//; s/|/ | /g')
  if [ "$rc" = 0 ]; then
    echo "PASS: systemd $v $c ($secs s)${figures:+: $figures}"; passed=$((passed + 1))
  else
    echo "FAIL: systemd $v $c ($secs s, exit $rc)${figures:+: $figures}"; failed+=("$v-$c")
  fi
}

for v in ${HEIRD_PKG_SYSTEMD:-252 257}; do
  [ -n "${roots[$v]:-}" ] || continue
  want deb && run_case "$v" deb
  want rpm && { run_case "$v" rpm-preset; run_case "$v" rpm-helper; run_case "$v" rpm-nopreset; }
done

if want chroot; then
  base=${roots[257]:-/}
  rpm_in_root=; [ -x "$base/usr/bin/rpm" ] && rpm_in_root=${old_pkg[rpm]}
  echo "=== chroot without systemd (root: $base): $(basename "${old_pkg[deb]}")${rpm_in_root:+, $(basename "$rpm_in_root")}"
  rc=0
  unshare --mount --pid --fork --propagation private "$self" __chroot "$base" "${old_pkg[deb]}" "$rpm_in_root" 2>&1 | sed 's/^/    /'
  rc=${PIPESTATUS[0]}
  what=".deb in a chroot without systemd, and with dpkg --root (DPKG_ROOT): install, remove, purge${rpm_in_root:+; .rpm in the chroot: install, erase}"
  if [ "$rc" = 0 ]; then echo "PASS: $what"; passed=$((passed + 1))
  else echo "FAIL: $what (exit $rc)"; failed+=(chroot); fi
fi

host_after=$(host_state)
if [ "$host_before" = "$host_after" ]; then
  echo "PASS: the host is untouched (no heird file, group, dpkg or rpm entry appeared or changed)"; passed=$((passed + 1))
else
  echo "FAIL: the host changed:"; diff <(echo "$host_before") <(echo "$host_after") | sed 's/^/    /'; failed+=(host)
fi
[ ${#skipped[@]} = 0 ] || echo "SKIPPED (CI not set): systemd ${skipped[*]}"
echo "package upgrade: $passed passed, ${#failed[@]} failed${failed:+ (${failed[*]})}"
[ ${#failed[@]} = 0 ]
