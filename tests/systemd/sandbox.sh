#!/bin/bash
# sandbox.sh — boot a throw-away systemd as PID 1 for heird's systemd suite.
#
# The sandbox is a set of fresh namespaces (pid, mount, uts, ipc, net, cgroup) whose root is an
# overlay: the lower layer is a root file system (the host's "/" by default), the upper layer a
# tmpfs. Everything written inside lands in RAM and is gone after `down`; the host is never
# written to. The network namespace has only loopback, so 127.0.0.1:8080 inside is private.
#
# Usage (as root):
#   sandbox.sh up                  boot; returns once `systemctl is-system-running --wait` returns
#   sandbox.sh exec CMD [ARG...]   run CMD inside (clean environment, cwd /); its exit code
#   sandbox.sh run SCRIPT [ARG...] up (SCRIPT's folder bound read-only) + exec SCRIPT + down
#   sandbox.sh down                power off, wait, clean up (SIGKILL if systemd hangs)
#   sandbox.sh status | logs
#
# Environment:
#   SANDBOX_NAME     instance name (default heird); state in /tmp/heird-sandbox/NAME
#   SANDBOX_ROOTFS   lower layer of the root (default /). A Debian root made with mmdebstrap
#                    boots that distribution's systemd; host files are then visible only where
#                    SANDBOX_BIND/SANDBOX_BIND_RO put them.
#   SANDBOX_BIND     space-separated host folders bound read-write at the same path inside
#   SANDBOX_BIND_RO  same, read-only (folders under /tmp too: /tmp inside is a fresh tmpfs)
#   SANDBOX_SEED     a host folder copied over the root before boot (e.g. SEED/usr/bin/heird
#                    becomes /usr/bin/heird inside), so units exist before systemd starts
#   SANDBOX_BOOT_TIMEOUT  seconds (default 60)
#   SANDBOX_NET      "private" (default): a network namespace of its own, loopback only;
#                    "shared": the caller's network namespace, for several boots that talk to
#                    each other over loopback addresses (scenario 40's fleet boots its hosts
#                    inside its own sandbox, so they share that sandbox's private namespace)
set -euo pipefail

NAME=${SANDBOX_NAME:-heird}
ROOTFS=$(readlink -f "${SANDBOX_ROOTFS:-/}")
ST=/tmp/heird-sandbox/$NAME
SELF=$(readlink -f "$0")
SAFE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BOOT_TIMEOUT=${SANDBOX_BOOT_TIMEOUT:-60}
# Capabilities that act on the whole machine, not just on the namespaces: nothing inside needs them.
DROP_CAPS=-sys_module,-sys_time,-sys_rawio,-sys_boot,-syslog,-mac_admin,-mac_override,-wake_alarm,-block_suspend,-sys_pacct,-audit_control

die() { echo "sandbox.sh: $*" >&2; exit 1; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --------------------------------------------------------------------------------- inside ---
# PID 1 of the new pid namespace, in the new mount namespace, before it becomes systemd.
boot_inside() {
  local r=$ST/root hostpid _
  # /proc is still the host's here, so it shows our host pid: systemd's pid once we exec it.
  read -r hostpid _ < /proc/self/stat
  echo "$hostpid" > "$ST/pid"
  mount --make-rprivate /
  mkdir -p "$ST/rw" "$r"
  mount -t tmpfs -o mode=755 heird-sbx-rw "$ST/rw"
  mkdir "$ST/rw/upper" "$ST/rw/work"
  mount -t overlay -o "lowerdir=$ROOTFS,upperdir=$ST/rw/upper,workdir=$ST/rw/work" heird-sbx "$r"

  # Configuration of the guest (in the overlay only).
  local sys=$r/etc/systemd/system u
  mkdir -p "$sys" "$r/etc/tmpfiles.d" "$r/etc/systemd/journald.conf.d"
  printf '[Unit]\nDescription=heird sandbox\nWants=sysinit.target\nAfter=sysinit.target\nAllowIsolate=yes\n' \
    > "$sys/heird-sandbox.target"
  # Units that touch kernel-wide state or hardware, or just cost boot time here.
  for u in systemd-sysctl.service systemd-modules-load.service systemd-binfmt.service \
           proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
           systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
           systemd-hwdb-update.service systemd-timesyncd.service systemd-pstore.service \
           systemd-random-seed.service systemd-firstboot.service systemd-journald-audit.socket \
           sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
           sys-fs-fuse-connections.mount dev-hugepages.mount getty.target \
           apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$sys/$u"
  done
  # Debian's "D /tmp" rule would empty /tmp at boot, binds below /tmp included.
  ln -sf /dev/null "$r/etc/tmpfiles.d/tmp.conf"
  printf '[Journal]\nStorage=volatile\n' > "$r/etc/systemd/journald.conf.d/heird-sandbox.conf"
  echo "$NAME" > "$r/etc/hostname"
  if [ -n "${SANDBOX_SEED:-}" ]; then tar -C "$SANDBOX_SEED" -cf - . | tar -C "$r" -xf - --no-overwrite-dir; fi

  # API file systems: own proc, read-only sys, cgroup2 (rooted at our cgroup by the cgroup ns).
  mount -t proc proc "$r/proc"
  mount --bind "$r/proc/sys" "$r/proc/sys"; mount -o remount,bind,ro "$r/proc/sys"
  if [ -e "$r/proc/sysrq-trigger" ]; then
    mount --bind "$r/proc/sysrq-trigger" "$r/proc/sysrq-trigger"; mount -o remount,bind,ro "$r/proc/sysrq-trigger"
  fi
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup"
  mount -t tmpfs -o mode=755,nosuid heird-sbx-dev "$r/dev"
  local dev n major minor
  for dev in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r n major minor <<<"$dev"; mknod -m 666 "$r/dev/$n" c "$major" "$minor"
  done
  mkdir "$r/dev/pts" "$r/dev/shm" "$r/dev/mqueue"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$r/dev/pts"
  ln -s pts/ptmx "$r/dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev heird-sbx-shm "$r/dev/shm"
  mount -t mqueue mqueue "$r/dev/mqueue" 2>/dev/null || true
  ln -s /proc/self/fd "$r/dev/fd"
  for n in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${n%%:*}" "$r/dev/${n#*:}"; done
  # `script` (see cmd_up) gave us a pty: it becomes the console, logged to console.log.
  touch "$r/dev/console"; mount --bind "$(tty)" "$r/dev/console"
  mount -t tmpfs -o mode=755,nosuid,nodev heird-sbx-run "$r/run"
  mount -t tmpfs -o mode=1777,nosuid,nodev heird-sbx-tmp "$r/tmp"

  local b
  for b in ${SANDBOX_BIND:-}; do mkdir -p "$r$b"; mount --rbind "$b" "$r$b"; done
  for b in ${SANDBOX_BIND_RO:-}; do mkdir -p "$r$b"; mount --rbind "$b" "$r$b"; mount -o remount,bind,ro "$r$b"; done

  mkdir "$r/.host"
  cd "$r"
  pivot_root . .host
  umount -l /.host
  rmdir /.host
  # Shared propagation, as systemd sets it up itself when the kernel starts it (mount-setup.c)
  # but not in a container (`container=` below): systemd sets credentials up (LoadCredential=,
  # SetCredential=) in a child with its own mount namespace, which moves the finished ramfs onto
  # /run/credentials/UNIT; under a private "/" that mount stays in the child's namespace and
  # the service finds $CREDENTIALS_DIRECTORY empty. The peer groups are new, and local to this
  # namespace (every mount was made private above), so nothing propagates to the host.
  mount --make-rshared /
  exec env -i container=heird-sandbox TERM=dumb PATH=$SAFE_PATH \
    setpriv --bounding-set "$DROP_CAPS" /lib/systemd/systemd --unit=heird-sandbox.target --show-status=no
}

# ----------------------------------------------------------------------------------- host ---
pid() { cat "$ST/pid" 2>/dev/null || true; }
alive() { local p; p=$(pid); [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ]; }
enter() { nsenter -t "$(pid)" -m -u -i -n -p -C -r -w "$@"; }
CLEAN_ENV=(env -i "PATH=$SAFE_PATH" HOME=/root LANG=C.UTF-8 TERM=dumb)
inside() { enter "${CLEAN_ENV[@]}" "$@"; }

kill_cgroup() {
  local cg=$1
  [ -d "$cg" ] || return 0
  echo 1 > "$cg/cgroup.kill" 2>/dev/null || true
  # "populated 0" once no process is left in the whole subtree; rmdir may still race the exits
  for _ in $(seq 100); do
    grep -q '^populated 0' "$cg/cgroup.events" 2>/dev/null && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$cg" ] || return 0
    sleep 0.05
  done
  echo "sandbox.sh: could not remove cgroup $cg" >&2
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  alive && die "sandbox '$NAME' is already up (systemd pid $(pid))"
  local t cg2 cg t0 deadline state net=--net
  case ${SANDBOX_NET:-private} in private) ;; shared) net= ;; *) die "SANDBOX_NET='$SANDBOX_NET': private or shared" ;; esac
  for t in unshare nsenter setpriv script pivot_root mknod tar; do command -v "$t" >/dev/null || die "missing $t"; done
  for t in /lib/systemd/systemd /usr/bin/setpriv /usr/bin/env; do [ -x "$ROOTFS$t" ] || die "no $t in root $ROOTFS"; done
  cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  [ -n "$cg2" ] || die "no cgroup2 file system mounted"
  cg=$cg2/heird-sandbox-$NAME
  kill_cgroup "$cg"
  rm -rf "$ST"; mkdir -p "$ST"; mkdir "$cg"; echo "$cg" > "$ST/cgroup"
  t0=$(ms); deadline=$(( t0 + BOOT_TIMEOUT * 1000 ))
  # The launcher joins the cgroup first, so that the cgroup namespace is rooted there. `script`
  # provides a pty for systemd's console and writes it to console.log.
  # The environment (SANDBOX_*) reaches `__boot` through script and unshare.
  setsid script -qfec \
    "echo \$\$ > '$cg/cgroup.procs' && exec unshare --pid --fork --kill-child --mount --uts --ipc $net --cgroup '$SELF' __boot" \
    "$ST/console.log" </dev/null >/dev/null 2>&1 &
  local launcher=$!
  until alive && enter test -S /run/systemd/private 2>/dev/null; do
    kill -0 "$launcher" 2>/dev/null || { cat "$ST/console.log" >&2; die "the sandbox launcher exited"; }
    [ "$(ms)" -lt "$deadline" ] || { cat "$ST/console.log" >&2; die "systemd did not come up"; }
    sleep 0.02
  done
  state=$(inside timeout "$BOOT_TIMEOUT" systemctl is-system-running --wait 2>/dev/null || true)
  echo "sandbox '$NAME': $(inside systemctl --version | head -n 1) on root $ROOTFS, pid $(pid), $state after $(( $(ms) - t0 )) ms" >&2
  case $state in running | degraded) ;; *) die "boot ended in state '$state' (console: $ST/console.log)" ;; esac
}

cmd_down() {
  local t0 cg; t0=$(ms); cg=$(cat "$ST/cgroup" 2>/dev/null || true)
  if alive; then
    kill -s SIGRTMIN+4 "$(pid)" 2>/dev/null || true   # systemd's "poweroff"
    for _ in $(seq 300); do alive || break; sleep 0.05; done
    if alive; then echo "sandbox.sh: systemd did not power off within 15 s, killing it" >&2; kill -KILL "$(pid)" || true; fi
  fi
  [ -z "$cg" ] || kill_cgroup "$cg"
  rm -f "$ST/pid"
  echo "sandbox '$NAME' down after $(( $(ms) - t0 )) ms" >&2
}

# exec CMD inside. nsenter forks CMD into the sandbox's pid namespace and waits for it with
# WUNTRACED: when CMD stops, nsenter stops itself (job control) and continues CMD only once it is
# continued itself. Before a soft-reboot's final kill, PID 1 stops every process of its namespace
# for a moment (kill(-1, SIGSTOP), then SIGCONT; systemd's killall.c), CMD included; CMD goes on,
# but nothing outside would continue nsenter, which then never returned. So a watcher continues
# it; TERM, INT and HUP (run.sh's timeout) are passed on to it.
cmd_exec() {
  local child watcher rc
  nsenter -t "$(pid)" -m -u -i -n -p -C -r -w "${CLEAN_ENV[@]}" "$@" <&0 &
  child=$!
  ( while [ -e "/proc/$child" ]; do
      [ "$(cut -d ' ' -f 3 "/proc/$child/stat" 2>/dev/null)" != T ] || kill -CONT "$child" 2>/dev/null
      sleep 0.2
    done ) </dev/null >/dev/null 2>&1 &
  watcher=$!
  trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
  while :; do
    rc=0; wait "$child" || rc=$?
    [ -e "/proc/$child" ] || break   # wait returns early when a trapped signal arrives
  done
  kill "$watcher" 2>/dev/null || true
  return "$rc"
}

cmd_run() {
  local script rc=0
  script=$(readlink -f "${1:-}") && [ -x "$script" ] || die "run: '${1:-}' is not an executable script"
  shift
  SANDBOX_BIND_RO="${SANDBOX_BIND_RO:-} $(dirname "$script")" cmd_up
  trap 'cmd_down; exit 130' INT TERM HUP
  inside "$script" "$@" & wait $! || rc=$?
  [ "$rc" = 0 ] || inside journalctl -b --no-pager -q > "$ST/journal.txt" 2>&1 || true
  cmd_down
  return "$rc"
}

case ${1:-} in
  __boot) boot_inside ;;
  up) cmd_up ;;
  down) cmd_down ;;
  exec) shift; alive || die "sandbox '$NAME' is not up"; cmd_exec "$@" ;;
  run) shift; cmd_run "$@" ;;
  status) if alive; then echo "up: systemd pid $(pid), $(inside systemctl is-system-running 2>&1)"; else echo "down"; exit 3; fi ;;
  logs) alive || die "sandbox '$NAME' is not up"; inside journalctl -b --no-pager; echo "--- console"; cat "$ST/console.log" ;;
  *) sed -n '2,/^set -euo/p' "$SELF" | sed '$d'; exit 2 ;;
esac
