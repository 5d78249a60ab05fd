#!/bin/bash
# packaging/verify.sh — static checks of the built packages (no install; for that see
# tests/systemd/package-upgrade.sh).
#
#   packaging/verify.sh [DEB] [RPM]
#
# Defaults to target/debian/heird_<version>-1_*.deb and target/generate-rpm/heird-<version>-1.*.rpm
# (built with packaging/build-deb.sh / build-rpm.sh when missing). Installs lintian and rpm with
# apt-get when they are missing.
#   .deb: lintian (no error allowed; every warning or info tag is listed, and one that is not
#         in packaging/lintian-expected.txt fails), the file list, conffiles, and the
#         maintainer scripts (reload on upgrade, no socket restart).
#   .rpm: rpm -K, rpm -qlp (exact file list), config(noreplace), rpm -qp --scripts.
# Exit 0 when every check passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
target=$(readlink -m "${CARGO_TARGET_DIR:-$project/target}")
version=$(awk -F'"' '/^\[/ { sect = $0 } sect == "[package]" && /^version *=/ { print $2; exit }' "$project/Cargo.toml")
version=${HEIRD_PKG_VERSION:-$version}

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "verify.sh: $1 is missing (apt-get install $1, as root)" >&2; exit 2; }
  echo "verify.sh: installing $1" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null \
    || { echo "verify.sh: apt-get install $1 failed" >&2; exit 2; }
}

deb=${1:-$(ls "$target"/debian/heird_"$version"-1_*.deb 2>/dev/null | head -n 1)}
rpm=${2:-$(ls "$target"/generate-rpm/heird-"$version"-1.*.rpm 2>/dev/null | head -n 1)}
[ -n "$deb" ] || deb=$("$here/build-deb.sh" | tail -n 1)
[ -n "$rpm" ] || rpm=$("$here/build-rpm.sh" | tail -n 1)
[ -f "$deb" ] && [ -f "$rpm" ] || { echo "verify.sh: packages missing ($deb, $rpm)" >&2; exit 2; }

# ------------------------------------------------------------------------------------ deb ---
echo "=== $deb ($(stat -c %s "$deb") bytes)"
command -v lintian >/dev/null || apt_install lintian
lint=$(lintian --pedantic -I -E --tag-display-limit 0 "$deb" 2>/dev/null)
echo "lintian $(lintian --version | awk '{ print $2 }'):"
if [ -n "$lint" ]; then sed 's/^/  /' <<<"$lint"; else echo "  (nothing)"; fi
errors=$(grep -c '^E:' <<<"$lint")
check "lintian: no error ($errors)" [ "$errors" = 0 ]
unexpected=()
while IFS= read -r line; do
  [ -n "$line" ] || continue
  tag=$(awk '{ print $3 }' <<<"$line")
  grep -qx "$tag" <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$here/lintian-expected.txt") || unexpected+=("$tag")
done < <(grep -E '^[WIPX]:' <<<"$lint")
check "lintian: every warning/info tag is a known one (packaging/lintian-expected.txt)${unexpected:+; new: ${unexpected[*]}}" \
  [ ${#unexpected[@]} = 0 ]

files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's|^\./|/|' | sort)
want_deb=$(sort <<'EOF'
/etc/heird/heird.toml
/lib/systemd/system/heird-unix.socket
/lib/systemd/system/heird.service
/lib/systemd/system/heird.socket
/usr/bin/heird
/usr/share/doc/heird/README.md
/usr/share/doc/heird/changelog.Debian.gz
/usr/share/doc/heird/copyright
/usr/share/doc/heird/examples/heird-notify-reload.conf
/usr/share/doc/heird/examples/heird-tls-credentials.conf
/usr/share/man/man1/heird.1.gz
EOF
)
check "deb: file list" diff <(echo "$want_deb") <(echo "$files")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$deb" "$tmp/control"
check "deb: conffiles = /etc/heird/heird.toml" [ "$(cat "$tmp/control/conffiles")" = /etc/heird/heird.toml ]
check "deb: version $version-1" [ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ]
dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/bin/heird > "$tmp/heird"
check "deb: /usr/bin/heird is stripped (no .symtab, no .debug_*)" sh -c "! readelf -S '$tmp/heird' | grep -qE '\.symtab|\.debug_'"
chmod +x "$tmp/heird"
check "deb: /usr/bin/heird --version says $version" [ "$("$tmp/heird" --version | awk '{ print $NF }')" = "$version" ]
post=$tmp/control/postinst
check "deb postinst: upgrade runs daemon-reload, then try-reload-or-restart heird.service" \
  awk '/daemon-reload/ { d = NR } /try-reload-or-restart heird.service/ { r = NR } END { exit !(d && r && d < r) }' "$post"
check "deb scripts: no restart or stop of a socket on upgrade (only 'stop' in prerm remove)" \
  sh -c "! grep -hE '(^|[^-])(restart|reload-or-restart|try-restart)[[:space:]]+[^#]*\.socket' '$tmp'/control/postinst '$tmp'/control/prerm '$tmp'/control/postrm"
# An if-nesting stack: a systemctl/deb-systemd-invoke line must sit inside an `if` whose test
# is [ -d /run/systemd/system ].
check "deb scripts: every systemctl/deb-systemd-invoke call is under [ -d /run/systemd/system ]" \
  awk 'FNR == 1 { sp = 0; g = 0 }
       /^[[:space:]]*if[[:space:]]/ { sp++; st[sp] = ($0 ~ /\[ -d \/run\/systemd\/system \]/); g += st[sp] }
       /^[[:space:]]*(if[[:space:]]+(![[:space:]]+)?)?(systemctl|deb-systemd-invoke)[[:space:]]/ && !g { print FILENAME ":" FNR ": " $0; bad = 1 }
       /^[[:space:]]*fi[[:space:]]*$/ && sp { g -= st[sp]; sp-- }
       END { exit bad }' \
  "$tmp"/control/postinst "$tmp"/control/prerm "$tmp"/control/postrm
for s in postinst prerm postrm; do check "deb $s: sh -n" sh -n "$tmp/control/$s"; done

# ------------------------------------------------------------------------------------ rpm ---
echo "=== $rpm ($(stat -c %s "$rpm") bytes)"
command -v rpm >/dev/null || apt_install rpm
echo "rpm -K:"; rpm -Kv "$rpm" 2>&1 | sed 's/^/  /'
check "rpm -K: digests OK" sh -c "rpm -K '$rpm' 2>/dev/null | grep -q 'digests OK'"
want_rpm=$(sort <<'EOF'
/etc/heird/heird.toml
/usr/bin/heird
/usr/lib/systemd/system/heird-unix.socket
/usr/lib/systemd/system/heird.service
/usr/lib/systemd/system/heird.socket
/usr/share/doc/heird/README.md
/usr/share/doc/heird/examples/heird-notify-reload.conf
/usr/share/doc/heird/examples/heird-tls-credentials.conf
/usr/share/licenses/heird/LICENSE
/usr/share/man/man1/heird.1
EOF
)
echo "rpm -qlp:"; rpm -qlp "$rpm" 2>/dev/null | sed 's/^/  /'
check "rpm -qlp: file list" diff <(echo "$want_rpm") <(rpm -qlp "$rpm" 2>/dev/null | sort)
check "rpm: version $version-1" [ "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpm" 2>/dev/null)" = "$version-1" ]
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null)
check "rpm: /etc/heird/heird.toml is %config(noreplace) (flags 'cn')" grep -qx '/etc/heird/heird.toml cn' <<<"$flags"
check "rpm: docs flagged %doc" [ "$(grep -cE '^/usr/share/(doc|licenses|man)/.* d$' <<<"$flags")" = 5 ]
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
echo "rpm -qp --scripts: $(grep -c 'scriptlet' <<<"$scripts") scriptlets ($(grep 'scriptlet' <<<"$scripts" | tr -d ':' | tr '\n' ' '))"
check "rpm %post: install enables and starts the sockets" grep -q 'systemctl enable --now heird.socket heird-unix.socket' <<<"$scripts"
check "rpm %post: upgrade runs try-reload-or-restart heird.service" grep -q 'systemctl try-reload-or-restart heird.service' <<<"$scripts"
stops_and_disables() {
  grep -q 'systemctl stop heird.service heird.socket heird-unix.socket' <<<"$scripts" &&
    grep -q 'systemctl disable heird.socket heird-unix.socket' <<<"$scripts"
}
check "rpm %preun: erase stops and disables" stops_and_disables
check "rpm scriptlets: no socket restart" sh -c "! grep -qE '(restart|try-restart)[[:space:]]+[^#]*\.socket'" <<<"$scripts"
for s in postinstall preuninstall postuninstall; do
  body=$(awk -v s="$s scriptlet" 'index($0, s) == 1 { on = 1; next } / scriptlet/ { on = 0 } on' <<<"$scripts")
  check "rpm $s: present, sh -n" sh -c "[ -n \"\$1\" ] && printf '%s\n' \"\$1\" | sh -n" _ "$body"
done

echo "verify: $passed passed, $failed failed"
[ "$failed" = 0 ]
