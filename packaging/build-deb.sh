#!/bin/bash
# packaging/build-deb.sh — builds the Debian package of heird:
#   target/deb/heird_<version>-<revision>_<arch>.deb
# (not target/debian: cargo-deb deletes the other versions' packages there at every build)
#
# Installs cargo-deb (cargo install --locked) when missing and dpkg-dev (dpkg-shlibdeps, for
# Depends:) with apt-get, builds the stripped release binary ([profile.release] in Cargo.toml),
# and packages it with the metadata of [package.metadata.deb] and the maintainer scripts in
# packaging/debian/. cargo-deb writes no md5sums, so the package is then unpacked and built again
# with dpkg-deb, with DEBIAN/md5sums added.
#
#   packaging/build-deb.sh                          the version in Cargo.toml, revision 1
#   HEIRD_PKG_VERSION=0.1.1 packaging/build-deb.sh  another version, binary included (for the
#                                                   upgrade test; see packaging/lib.sh)
#   HEIRD_PKG_REVISION=2 HEIRD_PKG_UNIT_EXTRA=Environment=X=1 packaging/build-deb.sh
#                                                   revision 2, whose heird.service has one more
#                                                   line (the upgrade test's changed unit)
# Prints the package's path on stdout (the last line).
. "$(dirname "$0")/lib.sh"

need_tool deb cargo-deb@3.8.0
if ! command -v dpkg-shlibdeps >/dev/null; then
  [ "$(id -u)" = 0 ] || die "dpkg-shlibdeps is missing (apt-get install dpkg-dev, as root)"
  log "installing dpkg-dev (dpkg-shlibdeps) with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev; } >&2 \
    || die "apt-get install dpkg-dev failed"
fi
pkg_tree
bin=$(build_release)
out=$TARGET/deb
mkdir -p "$out"
log "cargo deb --no-build --strip (version $VERSION-$REVISION)"
raw=$(cd "$TREE" && CARGO_TARGET_DIR=$BUILD_TARGET cargo deb --no-build --strip --locked \
  --deb-revision "$REVISION" --output "$BUILD_TARGET/cargo-deb/" | tail -n 1)
[ -f "$raw" ] || die "cargo deb did not report a package file (got '$raw')"

# Unpack, finish, build again: md5sums (debsums, dpkg --verify), the test-only unit line, and a
# changelog entry when its newest one is not of this version and revision, and Depends:.
stage=$BUILD_TARGET/cargo-deb/stage
rm -rf "$stage"
dpkg-deb -R "$raw" "$stage"
add_unit_extra "$stage/usr/lib/systemd/system/heird.service"
cl=$stage/usr/share/doc/heird/changelog.Debian.gz
if [ "$(gzip -dc "$cl" | sed -n '1s/^heird (\([^)]*\)).*/\1/p')" != "$VERSION-$REVISION" ]; then
  {
    printf 'heird (%s-%s) unstable; urgency=medium\n\n' "$VERSION" "$REVISION"
    printf '  * Packaging rebuild by packaging/build-deb.sh (HEIRD_PKG_REVISION).\n\n'
    printf ' -- heird developers <heird@example.org>  %s\n\n' "$(date -R)"
    gzip -dc "$cl"
  } | gzip -9n > "$cl.new" && mv "$cl.new" "$cl"
fi
# Depends: from dpkg-shlibdeps itself. cargo-deb's `$auto` runs it too, but drops libgcc-s1
# ("always present"); the binary links libgcc_s (unwinding), so the package names it.
shl=$BUILD_TARGET/cargo-deb/shlibdeps
rm -rf "$shl"; mkdir -p "$shl/debian"; : > "$shl/debian/control"
shlibs=$(cd "$shl" && dpkg-shlibdeps -O "$stage/usr/bin/heird" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependency of usr/bin/heird"
sed -i "s/^Depends: .*/Depends: $shlibs/" "$stage/DEBIAN/control"
# md5sums of every file but the conffiles (dpkg keeps theirs in its database), as dh_md5sums.
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' \
  | grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null) | LC_ALL=C sort \
  | xargs -d '\n' md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
# The unpacked folders got today's time; give them the files' time (cargo-deb's
# SOURCE_DATE_EPOCH), as in cargo-deb's own package.
find "$stage" -path "$stage/DEBIAN" -prune -o -type d -exec touch -h -r "$stage/usr/bin/heird" {} +
deb=$out/$(basename "$raw")
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
rm -rf "$stage"

# Depends: must name the package of every shared library the binary links.
depends=$(dpkg-deb -f "$deb" Depends)
arch=$(dpkg --print-architecture)
for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
  owner=$(dpkg -S "*/$lib" 2>/dev/null | grep ":$arch: " | awk -F: 'NR == 1 { print $1 }')
  [ -n "$owner" ] || die "no installed package provides $lib (linked by $bin)"
  grep -qE "(^|, )$owner( |,|$)" <<<"$depends" || die "Depends: '$depends' does not name $owner ($lib)"
done
log "binary $bin: $(stat -c %s "$bin") bytes; Depends: $depends"
log "package $deb: $(stat -c %s "$deb") bytes"
echo "$deb"
