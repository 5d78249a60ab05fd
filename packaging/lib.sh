# shellcheck shell=bash
# packaging/lib.sh — sourced by build-deb.sh and build-rpm.sh.
#
# HEIRD_PKG_VERSION (optional) builds a package of another version than Cargo.toml's. The
# binary must report that version too (`/info` and `--version` use env!("CARGO_PKG_VERSION")
# at compile time), so such a package is built from a copy of the tree with the version patched
# into its Cargo.toml and Cargo.lock, at target/heird-pkg/tree, with its own target directory
# target/heird-pkg/target. The first such build compiles every dependency again unless they
# can be copied from target/release (done when target/heird-pkg/target is new); later ones
# recompile heird alone. The work tree itself is never modified.
set -euo pipefail

PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=$(readlink -m "${CARGO_TARGET_DIR:-$PROJECT/target}")
CARGO_VERSION=$(awk -F'"' '/^\[/ { sect = $0 } sect == "[package]" && /^version *=/ { print $2; exit }' "$PROJECT/Cargo.toml")
VERSION=${HEIRD_PKG_VERSION:-$CARGO_VERSION}
# The package's own revision (Debian revision, RPM release): a package that changes but not the
# binary (a unit, a script) gets a higher one. HEIRD_PKG_UNIT_EXTRA (tests only) is one more
# line for the [Service] section of the packaged heird.service, e.g.
# "Environment=HEIRD_PKG_TEST=2": a package whose unit changed, for the upgrade test.
# Default: the revision of packaging/debian/changelog's newest entry when that entry is of
# VERSION, else 1.
changelog_top=$(sed -n '1s/^heird (\([^)]*\)).*/\1/p' "$PROJECT/packaging/debian/changelog")
if [ "${changelog_top%-*}" = "$VERSION" ]; then default_revision=${changelog_top##*-}; else default_revision=1; fi
REVISION=${HEIRD_PKG_REVISION:-$default_revision}
UNIT_EXTRA=${HEIRD_PKG_UNIT_EXTRA:-}

log() { echo "packaging: $*" >&2; }
die() { echo "packaging: $*" >&2; exit 1; }

case $VERSION in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) die "HEIRD_PKG_VERSION='$VERSION' is not a version like 1.2.3" ;;
esac
case $VERSION in *[!0-9A-Za-z.+~]*) die "HEIRD_PKG_VERSION='$VERSION': use only digits, letters, '.', '+' and '~'" ;; esac
case $REVISION in '' | *[!0-9]*) die "HEIRD_PKG_REVISION='$REVISION' is not a number" ;; esac
case $UNIT_EXTRA in *"
"*) die "HEIRD_PKG_UNIT_EXTRA must be one line" ;; esac

# add_unit_extra FILE: appends UNIT_EXTRA (when set) to the [Service] section of FILE.
add_unit_extra() {
  [ -n "$UNIT_EXTRA" ] || return 0
  awk -v extra="$UNIT_EXTRA" '{ print } /^\[Service\]$/ { print "# Added by HEIRD_PKG_UNIT_EXTRA (packaging test build)."; print extra }' \
    "$1" > "$1.tmp" && mv "$1.tmp" "$1"
  grep -qxF "$UNIT_EXTRA" "$1" || die "could not add '$UNIT_EXTRA' to $1"
}

# need_tool SUBCOMMAND CRATE@VERSION: install the cargo subcommand with `cargo install --locked`
# when missing. The versions are the ones these scripts were checked with (an installed one of
# another version is used as it is).
need_tool() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    log "installing $2 (cargo install --locked $2; a few minutes)"
    cargo install --locked "$2" >&2
  fi
}

# pkg_tree: sets TREE (where cargo runs) and BUILD_TARGET (its target directory). Holds a lock on
# target/heird-pkg (fd 9) for the rest of the script when it lays out a patched tree.
pkg_tree() {
  if [ "$VERSION" = "$CARGO_VERSION" ]; then
    TREE=$PROJECT BUILD_TARGET=$TARGET
    return
  fi
  local base=$TARGET/heird-pkg
  mkdir -p "$base"
  exec 9> "$base/.lock"
  flock 9
  TREE=$base/tree BUILD_TARGET=$base/target
  log "version $VERSION (Cargo.toml says $CARGO_VERSION): building from a patched copy in $TREE"
  rm -rf "$TREE"; mkdir -p "$TREE"
  # The whole tree but target/ and .git (Cargo.toml may name tests, examples, benches).
  # tar keeps the modification times, so that cargo rebuilds only what changed.
  tar -C "$PROJECT" --exclude=./target --exclude=./.git --exclude="./${TARGET#"$PROJECT"/}" -cf - . \
    | tar -C "$TREE" -xf -
  # [package] version, and heird's own entry in Cargo.lock.
  awk -v v="$VERSION" '/^\[/ { sect = $0 } sect == "[package]" && !done && /^version *=/ { print "version = \"" v "\""; done = 1; next } { print }' \
    "$PROJECT/Cargo.toml" > "$TREE/Cargo.toml"
  awk -v v="$VERSION" '/^name = "heird"$/ { hit = 1; print; next } hit && /^version = / { print "version = \"" v "\""; hit = 0; next } { hit = 0; print }' \
    "$PROJECT/Cargo.lock" > "$TREE/Cargo.lock"
  touch -r "$PROJECT/Cargo.lock" "$TREE/Cargo.lock"
  # The project's time on the patched Cargo.toml too: cargo then rebuilds heird only when the
  # version differs from the last build here (a new revision of the same version reuses it).
  touch -r "$PROJECT/Cargo.toml" "$TREE/Cargo.toml"
  # A changelog entry for this version (dpkg and lintian read the newest one).
  {
    printf 'heird (%s-1) unstable; urgency=medium\n\n  * Rebuilt as version %s by packaging/build-*.sh (HEIRD_PKG_VERSION).\n\n' "$VERSION" "$VERSION"
    printf ' -- heird developers <heird@example.org>  %s\n\n' "$(date -R)"
    cat "$PROJECT/packaging/debian/changelog"
  } > "$TREE/packaging/debian/changelog"
  # Seed a new target directory with the dependencies already built for release (same
  # compiler, profile and features, so cargo takes them as they are). Under cargo's own lock.
  if [ ! -d "$BUILD_TARGET/release" ] && [ -d "$TARGET/release/deps" ]; then
    log "seeding $BUILD_TARGET/release from $TARGET/release (dependencies)"
    mkdir -p "$BUILD_TARGET/release"
    flock "$TARGET/release/.cargo-lock" \
      cp -a "$TARGET/release/deps" "$TARGET/release/build" "$TARGET/release/.fingerprint" "$BUILD_TARGET/release/" \
      || { log "seeding failed; building everything"; rm -rf "$BUILD_TARGET/release"; }
  fi
}

# build_release: the stripped release binary of TREE; prints its path.
build_release() {
  log "cargo build --release --locked --bin heird (in $TREE)"
  (cd "$TREE" && CARGO_TARGET_DIR=$BUILD_TARGET cargo build --release --locked --bin heird >&2)
  local bin=$BUILD_TARGET/release/heird got
  got=$("$bin" --version | awk '{ print $NF }')
  [ "$got" = "$VERSION" ] || die "$bin reports version $got, expected $VERSION"
  echo "$bin"
}
