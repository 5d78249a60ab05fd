#!/bin/bash
# packaging/build-deb.sh — builds the Debian package of heird:
#   target/debian/heird_<version>-1_<arch>.deb
#
# Installs cargo-deb (cargo install --locked) when missing, builds the stripped release binary
# ([profile.release] in Cargo.toml), and packages it with the metadata of
# [package.metadata.deb] and the maintainer scripts in packaging/debian/.
#
#   packaging/build-deb.sh                          the version in Cargo.toml
#   HEIRD_PKG_VERSION=0.1.1 packaging/build-deb.sh  another version, binary included (for the
#                                                   upgrade test; see packaging/lib.sh)
# Prints the package's path on stdout (the last line).
. "$(dirname "$0")/lib.sh"

need_tool deb cargo-deb@3.8.0
pkg_tree
bin=$(build_release)
out=$TARGET/debian
mkdir -p "$out"
log "cargo deb --no-build --strip (version $VERSION-1)"
deb=$(cd "$TREE" && CARGO_TARGET_DIR=$BUILD_TARGET cargo deb --no-build --strip --locked --output "$out/" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report a package file (got '$deb')"
log "binary $bin: $(stat -c %s "$bin") bytes"
log "package $deb: $(stat -c %s "$deb") bytes"
echo "$deb"
