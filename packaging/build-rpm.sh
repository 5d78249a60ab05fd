#!/bin/bash
# packaging/build-rpm.sh — builds the RPM package of heird:
#   target/rpm/heird-<version>-<release>.<arch>.rpm
#
# Installs rpm (rpmbuild) with apt-get when missing, builds the stripped release binary
# ([profile.release] in Cargo.toml), and packages it with rpmbuild from packaging/rpm/heird.spec
# (not cargo-generate-rpm: 0.21.1, the newest, cannot put a directory in a package). The
# release defaults to the Debian revision (see packaging/lib.sh).
#
#   packaging/build-rpm.sh                          the version in Cargo.toml
#   HEIRD_PKG_VERSION=0.1.1 packaging/build-rpm.sh  another version, binary included (for the
#                                                   upgrade test; see packaging/lib.sh)
#   HEIRD_PKG_REVISION=2 HEIRD_PKG_UNIT_EXTRA=Environment=X=1 packaging/build-rpm.sh
#                                                   release 2, whose heird.service has one more
#                                                   line (the upgrade test's changed unit)
# Prints the package's path on stdout (the last line).
. "$(dirname "$0")/lib.sh"

if ! command -v rpmbuild >/dev/null; then
  [ "$(id -u)" = 0 ] || die "rpmbuild is missing (apt-get install rpm, as root)"
  log "installing rpm (rpmbuild) with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm; } >&2 \
    || die "apt-get install rpm failed"
fi
pkg_tree
bin=$(build_release)
if command -v file >/dev/null && file -b "$bin" | grep -q 'not stripped'; then
  die "$bin is not stripped ([profile.release] strip = true?)"
fi

# What the spec installs, staged (the test-only unit line goes into the staged unit).
work=$BUILD_TARGET/rpmbuild
rm -rf "$work"; mkdir -p "$work/src/packaging"
cp -a "$TREE/deploy" "$TREE/README.md" "$TREE/LICENSE" "$work/src/"
cp -a "$TREE/packaging/units-changed.sh" "$TREE/packaging/heird.1" "$work/src/packaging/"
add_unit_extra "$work/src/deploy/heird.service"

log "rpmbuild -bb packaging/rpm/heird.spec (version $VERSION-$REVISION)"
rpmbuild -bb --quiet \
  --define "_topdir $work" \
  --define "_rpmdir $work/RPMS" \
  --define "heird_version $VERSION" \
  --define "heird_release $REVISION" \
  --define "heird_src $work/src" \
  --define "heird_bin $bin" \
  "$TREE/packaging/rpm/heird.spec" >&2 || die "rpmbuild failed"
arch=$(rpm --eval '%{_arch}')
built=$work/RPMS/$arch/heird-$VERSION-$REVISION.$arch.rpm
[ -f "$built" ] || die "rpmbuild did not write $built"
out=$TARGET/rpm
mkdir -p "$out"
rpm=$out/$(basename "$built")
mv "$built" "$rpm"
rm -rf "$work"
log "binary $bin: $(stat -c %s "$bin") bytes"
log "package $rpm: $(stat -c %s "$rpm") bytes; Requires: $(rpm -qp --requires "$rpm" 2>/dev/null | tr '\n' ' ')"
echo "$rpm"
