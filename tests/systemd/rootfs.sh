#!/bin/bash
# rootfs.sh — a Debian root file system for sandbox.sh's SANDBOX_ROOTFS, so that the systemd
# suite also runs under another distribution's systemd (Debian 13 "trixie": systemd 257).
#
# Usage (as root): tests/systemd/rootfs.sh [SUITE]      (default trixie)
#   Prints the root's path on stdout (progress and reasons on stderr). The root is built once
#   with mmdebstrap (installed with apt-get when missing) from the Debian mirror that apt's
#   sources already use, and cached; it is rebuilt only when it is missing or was built with
#   another package list. About 25 s and 140 MB (measured 2026-12-02).
#
# Environment:
#   HEIRD_ROOTFS_CACHE   where roots are kept (default /var/cache/heird-sandbox); SUITE's root is
#                        CACHE/SUITE
#   HEIRD_ROOTFS_MIRROR  Debian mirror (default: the first one in apt's sources)
#   HEIRD_ROOTFS_EXTRA   more packages, comma-separated (e.g. "rpm" for package-upgrade.sh). Such
#                        a root is kept apart, in CACHE/SUITE+EXTRA (e.g. trixie+rpm), so that
#                        the suite's own root (and other checkouts sharing the cache) keep theirs.
#
# Exit status: 0 with the path on stdout; 3 when the root cannot be built here (not root, no
# mmdebstrap and apt-get cannot install it, no mirror, no network): the reason is the last line
# on stderr, and callers may skip; 1 when mmdebstrap itself fails although the mirror answers.
set -euo pipefail

suite=${1:-trixie}
cache=${HEIRD_ROOTFS_CACHE:-/var/cache/heird-sandbox}
extra=${HEIRD_ROOTFS_EXTRA:-}
case $extra in *[!a-z0-9.+,-]*) echo "rootfs.sh: HEIRD_ROOTFS_EXTRA='$extra' is not a package list" >&2; exit 1 ;; esac
dir=$cache/$suite${extra:++${extra//,/+}}
# What the scenarios use inside: systemctl/journalctl/systemd-analyze (systemd), curl, kill/ps
# (procps), ss (iproute2), setpriv/flock (util-linux, setpriv is also sandbox.sh's launcher),
# podman/crun/catatonit (scenarios 25 and 26: heird in a container under systemd, Quadlet),
# haproxy (scenario 40: a fleet of heird hosts behind it).
# The list is recorded in the root; a root built with another list is rebuilt.
packages=systemd,systemd-sysv,dbus,curl,procps,iproute2,util-linux,coreutils,mawk,sed,grep,python3-websockets,openssl,podman,crun,catatonit,haproxy${extra:+,$extra}
stamp=.heird-rootfs

log() { echo "rootfs.sh: $*" >&2; }
cannot() { log "cannot build the $suite root: $*"; exit 3; }

[ "$(id -u)" = 0 ] || cannot "must run as root"

have_root() {
  [ -x "$dir/lib/systemd/systemd" ] && [ "$(cat "$dir/$stamp" 2>/dev/null)" = "$suite $packages" ]
}
version() { chroot "$dir" /lib/systemd/systemd --version | head -n 1; }

if have_root; then
  log "$dir: $(version) (cached)"; echo "$dir"; exit 0
fi

mkdir -p "$cache"
# One builder at a time (two suites, or two `cargo test` runs, may ask at once).
exec 9>"$cache/.$suite.lock"
flock 9
if have_root; then
  log "$dir: $(version) (built meanwhile)"; echo "$dir"; exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap with apt-get"
  { apt-get update -qq && apt-get install -y -qq mmdebstrap; } >&2 ||
    cannot "mmdebstrap is not installed and apt-get could not install it (offline?)"
fi

mirror=${HEIRD_ROOTFS_MIRROR:-}
# deb822 sources (Debian 12+: /etc/apt/sources.list.d/*.sources), else one-line sources.
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "URIs:" && $2 !~ /security/ { print $2; exit }' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { if ($i !~ /security/) { print $i; exit } break } }' || true)
fi
[ -n "$mirror" ] || cannot "no Debian mirror in apt's sources (set HEIRD_ROOTFS_MIRROR)"

case $mirror in
  http://* | https://*)
    command -v curl >/dev/null || cannot "curl not found (needed to reach $mirror)"
    curl -sSf --max-time 20 -o /dev/null "${mirror%/}/dists/$suite/InRelease" ||
      cannot "$mirror does not answer for $suite (offline?)"
    ;;
esac

log "building $dir ($suite from $mirror with mmdebstrap; about 20 s)"
t0=$(date +%s)
rm -rf "$dir.part"
# Documentation, man pages and translations are not needed inside; leaving them out saves time
# and space.
if ! mmdebstrap --variant=minbase --include="$packages" \
       --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
       --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
       "$suite" "$dir.part" "$mirror" >&2; then
  rm -rf "$dir.part"
  log "mmdebstrap $suite from $mirror failed (see above)"; exit 1
fi
echo "$suite $packages" > "$dir.part/$stamp"
rm -rf "$dir"
mv "$dir.part" "$dir"
log "$dir: $(version), built in $(( $(date +%s) - t0 )) s, $(du -sh "$dir" | cut -f1)"
echo "$dir"
