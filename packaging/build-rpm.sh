#!/bin/bash
# packaging/build-rpm.sh — builds the RPM package of heird:
#   target/generate-rpm/heird-<version>-1.<arch>.rpm
#
# Installs cargo-generate-rpm (cargo install --locked) when missing, builds the stripped
# release binary ([profile.release] strips it; cargo-generate-rpm does not), and packages it
# with [package.metadata.generate-rpm] and the scriptlets in packaging/rpm/.
#
#   packaging/build-rpm.sh                          the version in Cargo.toml
#   HEIRD_PKG_VERSION=0.1.1 packaging/build-rpm.sh  another version, binary included (for the
#                                                   upgrade test; see packaging/lib.sh)
# Prints the package's path on stdout (the last line).
. "$(dirname "$0")/lib.sh"

need_tool generate-rpm cargo-generate-rpm@0.21.1
pkg_tree
bin=$(build_release)
if command -v file >/dev/null && file -b "$bin" | grep -q 'not stripped'; then
  die "$bin is not stripped ([profile.release] strip = true?)"
fi
out=$TARGET/generate-rpm
mkdir -p "$out"
rpm=$out/heird-$VERSION-1.$(uname -m).rpm
log "cargo generate-rpm (version $VERSION-1)"
(cd "$TREE" && CARGO_TARGET_DIR=$BUILD_TARGET cargo generate-rpm --output "$rpm" >&2)
[ -f "$rpm" ] || die "cargo generate-rpm did not write $rpm"
log "binary $bin: $(stat -c %s "$bin") bytes"
log "package $rpm: $(stat -c %s "$rpm") bytes"
echo "$rpm"
