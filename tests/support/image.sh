#!/bin/bash
# image.sh DIR BINARY — makes DIR a container root that holds BINARY as /heird and only what it
# links (the libraries `ldd` names, the loader included), offline: no registry, no base image.
# Run it with `podman run --rootfs DIR /heird serve ...`, or import it as an image:
#   tar -C DIR -cf heird.tar . && podman import heird.tar localhost/heird:dev
# Or build deploy/Containerfile with DIR as its context (FROM scratch, COPY . /).
# Used by tests/support/image.rs (tests/podman.rs), the systemd scenario 25 and bench/container.sh.
set -euo pipefail
[ $# = 2 ] || { echo "usage: image.sh DIR BINARY" >&2; exit 2; }
dir=$1 bin=$2
[ -x "$bin" ] || { echo "image.sh: $bin is not an executable" >&2; exit 1; }
mkdir -p "$dir"
# What ldd names: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the loader
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
done
# Copy (not link): the directory is bind-mounted into sandboxes and the build may change under it.
install -m 0755 "$bin" "$dir/heird.new" && mv -f "$dir/heird.new" "$dir/heird"
mkdir -p "$dir"/{etc,proc,sys,dev,tmp,run/notify,etc/heird}
chmod 1777 "$dir/tmp"
for f in hosts resolv.conf hostname passwd group; do [ -e "$dir/etc/$f" ] || : > "$dir/etc/$f"; done
ln -sfn /proc/mounts "$dir/etc/mtab"
: > "$dir/run/.containerenv"
