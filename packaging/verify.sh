#!/bin/bash
# packaging/verify.sh — static checks of the built packages (no install; for that see
# tests/systemd/package-upgrade.sh).
#
#   packaging/verify.sh [DEB] [RPM]
#
# Defaults to target/deb/heird_<version>-<revision>_*.deb and
# target/rpm/heird-<version>-<revision>.*.rpm (built with packaging/build-deb.sh / build-rpm.sh
# when missing; the revision is that of packaging/debian/changelog's newest entry). Installs
# lintian and rpm with apt-get when they are missing.
#   .deb: lintian (no error and no warning; every info tag must be explained in
#         packaging/lintian-expected.txt), the file list, conffiles, md5sums, Depends: (the
#         package of every linked library), the units and the config as shipped, and the
#         maintainer scripts (debhelper's remove/purge, the DPKG_ROOT and running-systemd guards,
#         reload or restart on upgrade, no socket restart).
#   .rpm: rpm -K, rpm -qlp (exact file list, directories included), config(noreplace), %doc,
#         %ghost, Requires, rpm -qp --scripts (presets, no enable --now, disable --now on erase,
#         the guards).
# Exit 0 when every check passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
target=$(readlink -m "${CARGO_TARGET_DIR:-$project/target}")
version=$(awk -F'"' '/^\[/ { sect = $0 } sect == "[package]" && /^version *=/ { print $2; exit }' "$project/Cargo.toml")
version=${HEIRD_PKG_VERSION:-$version}
top=$(sed -n '1s/^heird (\([^)]*\)).*/\1/p' "$here/debian/changelog")
revision=1; [ "${top%-*}" != "$version" ] || revision=${top##*-}
revision=${HEIRD_PKG_REVISION:-$revision}

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# apt_install PACKAGE: as root, with the tests' installer (a line says so); fails naming it.
apt_install() {
  "$project/tests/support/deps.sh" "$1" || { echo "verify.sh: $1 is missing (apt-get install $1, as root)" >&2; exit 2; }
}

deb=${1:-$(ls "$target"/deb/heird_"$version-$revision"_*.deb 2>/dev/null | head -n 1)}
rpm=${2:-$(ls "$target"/rpm/heird-"$version-$revision".*.rpm 2>/dev/null | head -n 1)}
[ -n "$deb" ] || deb=$("$here/build-deb.sh" | tail -n 1)
[ -n "$rpm" ] || rpm=$("$here/build-rpm.sh" | tail -n 1)
[ -f "$deb" ] && [ -f "$rpm" ] || { echo "verify.sh: packages missing ($deb, $rpm)" >&2; exit 2; }

# ------------------------------------------------------------------------------------ deb ---
echo "=== $deb ($(stat -c %s "$deb") bytes)"
command -v lintian >/dev/null || apt_install lintian
# lintian's exit status (man lintian, EXIT STATUS): 0 normal operation, 1 its own run-time
# error (the message on stderr), 2 a tag at or above --fail-on (error) was emitted. A lintian
# that fails must not read as "0 errors": its status is checked, its stderr shown (as root it
# warns there that it runs as root, so a non-empty stderr alone is no failure).
lint_err=$(mktemp)
lint_rc=0
lint=$(lintian --pedantic -I -E --tag-display-limit 0 --fail-on error "$deb" 2>"$lint_err") || lint_rc=$?
echo "lintian $(lintian --version | awk '{ print $2 }'), exit $lint_rc:"
if [ -n "$lint" ]; then sed 's/^/  /' <<<"$lint"; else echo "  (nothing)"; fi
[ ! -s "$lint_err" ] || { echo "lintian's stderr:"; sed 's/^/  /' "$lint_err"; }
errors=$(grep -c '^E:' <<<"$lint")
# Exit 0 with no error tag, or 2 with some; anything else (1: lintian's own failure, or a status
# that does not match the tags) fails here, whatever the output says.
lint_ran() { { [ "$lint_rc" = 0 ] && [ "$errors" = 0 ]; } || { [ "$lint_rc" = 2 ] && [ "$errors" != 0 ]; }; }
check "lintian ran: exit $lint_rc with $errors error tags (0 with none or 2 with some; 1 is lintian's own failure, see its stderr above)" lint_ran
rm -f "$lint_err"
check "lintian: no error ($errors)" [ "$errors" = 0 ]
warnings=$(grep -c '^W:' <<<"$lint")
check "lintian: no warning ($warnings)" [ "$warnings" = 0 ]
unexpected=()
while IFS= read -r line; do
  [ -n "$line" ] || continue
  tag=$(awk '{ print $3 }' <<<"$line")
  grep -qx "$tag" <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$here/lintian-expected.txt") || unexpected+=("$tag")
done < <(grep -E '^[IPX]:' <<<"$lint")
check "lintian: every info tag is explained in packaging/lintian-expected.txt${unexpected:+; new: ${unexpected[*]}}" \
  [ ${#unexpected[@]} = 0 ]

files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's|^\./|/|' | sort)
want_deb=$(sort <<'LIST'
/etc/heird/heird.toml
/usr/bin/heird
/usr/lib/systemd/system/heird-unix.socket
/usr/lib/systemd/system/heird.service
/usr/lib/systemd/system/heird.socket
/usr/lib/sysusers.d/heird.conf
/usr/share/doc/heird/README.md
/usr/share/doc/heird/changelog.Debian.gz
/usr/share/doc/heird/copyright
/usr/share/doc/heird/examples/heird-notify-reload.conf
/usr/share/doc/heird/examples/heird-tls-credentials.conf
/usr/share/heird/units-changed.sh
/usr/share/man/man1/heird.1.gz
LIST
)
check "deb: file list (units in /usr/lib/systemd/system)" diff <(echo "$want_deb") <(echo "$files")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$deb" "$tmp/control"
mkdir "$tmp/data"; dpkg-deb -x "$deb" "$tmp/data"
check "deb: conffiles = /etc/heird/heird.toml" [ "$(cat "$tmp/control/conffiles")" = /etc/heird/heird.toml ]
check "deb: version $version-$revision" [ "$(dpkg-deb -f "$deb" Version)" = "$version-$revision" ]
md5sums_ok() {   # every file but the conffile (dpkg keeps conffiles' sums apart), and they match
  diff <(sed 's/^[0-9a-f]*  //' "$tmp/control/md5sums" | sort) <(sed 's|^/||' <<<"$files" | grep -v '^etc/' | sort) &&
    (cd "$tmp/data" && md5sum --quiet -c "$tmp/control/md5sums")
}
check "deb: md5sums lists every file (but the conffile) and matches" md5sums_ok
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
deps_cover_libs() {
  local lib owner arch; arch=$(dpkg --print-architecture)
  for lib in $(readelf -d "$tmp/data/usr/bin/heird" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    owner=$(dpkg -S "*/$lib" 2>/dev/null | grep ":$arch: " | awk -F: 'NR == 1 { print $1 }')
    echo "  links $lib: package ${owner:-?}"
    [ -n "$owner" ] && grep -qE "(^|, )$owner( |,|$)" <<<"$depends" || return 1
  done
}
check "deb: Depends names the package of every linked library" deps_cover_libs
check "deb: /usr/bin/heird is stripped (no .symtab, no .debug_*)" sh -c "! readelf -S '$tmp/data/usr/bin/heird' | grep -qE '\.symtab|\.debug_'"
check "deb: /usr/bin/heird --version says $version" [ "$("$tmp/data/usr/bin/heird" --version | awk '{ print $NF }')" = "$version" ]

unit=$tmp/data/usr/lib/systemd/system
has() { grep -qxF "$2" "$1"; }
docs_ok() { local u; for u in heird.service heird.socket heird-unix.socket; do has "$unit/$u" 'Documentation=man:heird(1)' || return 1; done; }
check "units: Documentation=man:heird(1) in each" docs_ok
check "heird.service: RestartPreventExitStatus=78" has "$unit/heird.service" 'RestartPreventExitStatus=78'
check "heird.service: ExecStop= skips the stop when \$MAINPID is unset" \
  has "$unit/heird.service" "ExecStop=/bin/sh -c '[ -z \"\$\$MAINPID\" ] || exec /usr/bin/heird stop --pid \"\$\$MAINPID\"'"
unix_ok() {
  has "$unit/heird-unix.socket" SocketMode=0660 && has "$unit/heird-unix.socket" SocketGroup=heird-clients &&
    has "$unit/heird-unix.socket" RemoveOnStop=yes
}
check "heird-unix.socket: SocketMode=0660, SocketGroup=heird-clients, RemoveOnStop=yes" unix_ok
check "heird.socket does not pull in heird-unix.socket (no Wants=/Requires=/BindsTo=/Also=)" \
  sh -c "! grep -qE '^(Wants|Requires|BindsTo|Also)=.*heird-unix' '$unit/heird.socket'"
check "sysusers.d/heird.conf: g heird-clients -" has "$tmp/data/usr/lib/sysusers.d/heird.conf" 'g heird-clients -'
toml=$tmp/data/etc/heird/heird.toml
check "heird.toml: no setting is active (the defaults, as comments)" sh -c "! grep -qE '^[[:space:]]*[a-z_]+[[:space:]]*=' '$toml'"
keys_listed() {
  local k
  for k in greeting listen drain_timeout idle_close_grace header_read_timeout max_sleep handoff_timeout log_level move_connections watchdog_stall supervise pid_file idle_exit shutdown_delay proxy_protocol proxy_from proxy_header_timeout; do
    grep -qE "^# $k = " "$toml" || { echo "  heird.toml does not list $k"; return 1; }
  done
}
check "heird.toml: lists every key (src/bin/heird/config/file.rs)" keys_listed

c=$tmp/control
check "deb postinst: unchanged units -> try-reload-or-restart, changed heird.service -> try-restart" \
  sh -c "grep -q heird_units_record '$c/postinst' && grep -q 'deb-systemd-invoke try-reload-or-restart heird.service' '$c/postinst' && grep -q 'deb-systemd-invoke try-restart heird.service' '$c/postinst'"
check "deb postinst: unmask, was-enabled, then enable or update-state (as debhelper)" \
  sh -c "grep -q 'deb-systemd-helper unmask' '$c/postinst' && grep -q 'was-enabled' '$c/postinst' && grep -q 'update-state' '$c/postinst'"
check "deb postrm: remove masks; purge purges, then unmasks (as debhelper)" \
  awk '/"\$1" = remove/ { r = 1 } r && /deb-systemd-helper mask/ { m = 1 }
       /"\$1" = purge/ { p = 1 } p && /deb-systemd-helper purge/ { q = NR } q && NR > q && /deb-systemd-helper unmask/ { u = 1 }
       END { exit !(m && u) }' "$c/postrm"
# (Lines of a message, echo or a quoted continuation, may name the command for the admin.)
no_socket_restart() { ! grep -hvE '^[[:space:]]*(echo|")' "$@" | grep -qE '(^|[^-])(restart|reload-or-restart|try-restart)[[:space:]]+[^#]*\.socket'; }
check "deb scripts: no restart or stop of a socket on upgrade (only 'stop' in prerm remove)" \
  no_socket_restart "$c/postinst" "$c/prerm" "$c/postrm"
# An if-nesting stack: a systemctl/deb-systemd-invoke line must sit inside an `if` whose test
# checks both DPKG_ROOT and [ -d /run/systemd/system ].
check "deb scripts: every systemctl/deb-systemd-invoke call is under DPKG_ROOT empty and [ -d /run/systemd/system ]" \
  awk 'FNR == 1 { sp = 0; g = 0 }
       /^[[:space:]]*if[[:space:]]/ { sp++; st[sp] = ($0 ~ /DPKG_ROOT/ && $0 ~ /\[ -d \/run\/systemd\/system \]/); g += st[sp] }
       /^[[:space:]]*((el)?if[[:space:]]+(![[:space:]]+)?)?(systemctl|deb-systemd-invoke)[[:space:]]/ && !g { print FILENAME ":" FNR ": " $0; bad = 1 }
       /^[[:space:]]*fi[[:space:]]*$/ && sp { g -= st[sp]; sp-- }
       END { exit bad }' \
  "$c/postinst" "$c/prerm" "$c/postrm"
for s in postinst prerm postrm; do check "deb $s: sh -n" sh -n "$c/$s"; done
check "units-changed.sh: sh -n" sh -n "$tmp/data/usr/share/heird/units-changed.sh"

# ------------------------------------------------------------------------------------ rpm ---
echo "=== $rpm ($(stat -c %s "$rpm") bytes)"
command -v rpm >/dev/null || apt_install rpm
echo "rpm -K:"; rpm -Kv "$rpm" 2>&1 | sed 's/^/  /'
check "rpm -K: digests OK" sh -c "rpm -K '$rpm' 2>/dev/null | grep -q 'digests OK'"
want_rpm=$(sort <<'LIST'
/etc/heird
/etc/heird/heird.toml
/usr/bin/heird
/usr/lib/systemd/system/heird-unix.socket
/usr/lib/systemd/system/heird.service
/usr/lib/systemd/system/heird.socket
/usr/lib/sysusers.d/heird.conf
/usr/share/doc/heird
/usr/share/doc/heird/README.md
/usr/share/doc/heird/examples
/usr/share/doc/heird/examples/heird-notify-reload.conf
/usr/share/doc/heird/examples/heird-tls-credentials.conf
/usr/share/heird
/usr/share/heird/units-changed.sh
/usr/share/licenses/heird
/usr/share/licenses/heird/LICENSE
/usr/share/man/man1/heird.1.gz
/var/lib/heird
/var/lib/heird/after-upgrade
/var/lib/heird/units.sha256
LIST
)
echo "rpm -qlp:"; rpm -qlp "$rpm" 2>/dev/null | sed 's/^/  /'
check "rpm -qlp: file list, the package's own directories included" diff <(echo "$want_rpm") <(rpm -qlp "$rpm" 2>/dev/null | sort)
check "rpm: version $version-$revision" [ "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpm" 2>/dev/null)" = "$version-$revision" ]
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]' "$rpm" 2>/dev/null)
check "rpm: /etc/heird/heird.toml is %config(noreplace) (flags 'cn')" grep -q '^/etc/heird/heird.toml cn ' <<<"$flags"
check "rpm: 6 directories owned (/etc/heird, /usr/share/{doc,doc/examples,licenses,}heird, /var/lib/heird)" \
  [ "$(grep -cE ' d[rwx-]{9}$' <<<"$flags")" = 6 ]
check "rpm: docs flagged %doc / %license" [ "$(grep -cE '^/usr/share/(doc|licenses|man)/[^ ]* [dl] ' <<<"$flags")" = 5 ]
check "rpm: /var/lib/heird's two files are %ghost" [ "$(grep -cE '^/var/lib/heird/[^ ]* g ' <<<"$flags")" = 2 ]
requires=$(rpm -qp --requires "$rpm" 2>/dev/null)
requires_libs() { grep -qxF 'libc.so.6()(64bit)' <<<"$requires" && grep -qxF 'libgcc_s.so.1()(64bit)' <<<"$requires"; }
check "rpm: Requires libc.so.6 and libgcc_s.so.1 (rpmbuild's elfdeps)" requires_libs
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
echo "rpm -qp --scripts: $(grep -c 'scriptlet' <<<"$scripts") scriptlets ($(grep 'scriptlet' <<<"$scripts" | tr -d ':' | tr '\n' ' '))"
has_s() { grep -qF -- "$1" <<<"$scripts"; }
presets_ok() {
  has_s 'systemd-update-helper install-system-units heird.service heird.socket heird-unix.socket' &&
    has_s 'systemctl --no-reload preset heird.service heird.socket heird-unix.socket'
}
check "rpm %post: install applies the presets (systemd-update-helper install-system-units, else systemctl --no-reload preset)" presets_ok
check "rpm: no 'enable --now' (presets decide; nothing starts on install)" eval '! has_s "enable --now"'

upgrade_ok() {
  has_s 'mark-$action-system-units heird.service' && has_s 'systemctl try-reload-or-restart heird.service' &&
    has_s 'systemctl try-restart heird.service' && has_s 'heird_units_record'
}
check "rpm %post/%posttrans: upgrade marks a reload or a restart (helper), else does it at the end of the transaction" upgrade_ok
erase_ok() {
  has_s 'remove-system-units heird.service heird.socket heird-unix.socket' &&
    has_s 'systemctl --no-reload disable --now heird.service heird.socket heird-unix.socket'
}
check "rpm %preun: erase disables --now (systemd-update-helper remove-system-units, else systemctl)" erase_ok
check "rpm scriptlets: no socket restart" no_socket_restart <(echo "$scripts")
check "rpm scriptlets: daemon-reload/reload/restart/stop only under [ -d /run/systemd/system ]" \
  awk '/^[[:space:]]*if[[:space:]]/ { sp++; st[sp] = ($0 ~ /\[ -d \/run\/systemd\/system \]/); g += st[sp] }
       /^[[:space:]]*elif[[:space:]]/ && sp { g -= st[sp]; st[sp] = ($0 ~ /\[ -d \/run\/systemd\/system \]/); g += st[sp] }
       /^[[:space:]]*else[[:space:]]*$/ && sp { g -= st[sp]; st[sp] = 0 }
       /systemctl (daemon-reload|try-restart|try-reload-or-restart|stop|start|--no-reload disable --now)/ && !g { print "  unguarded: " $0; bad = 1 }
       /^[[:space:]]*fi[[:space:]]*$/ && sp { g -= st[sp]; sp-- }
       END { exit bad }' <<<"$scripts"
for s in preinstall postinstall posttrans preuninstall postuninstall; do
  body=$(awk -v s="$s scriptlet" 'index($0, s) == 1 { on = 1; next } / scriptlet/ { on = 0 } on' <<<"$scripts")
  check "rpm $s: present, sh -n" sh -c "[ -n \"\$1\" ] && printf '%s\n' \"\$1\" | sh -n" _ "$body"
done

echo "verify: $passed passed, $failed failed"
[ "$failed" = 0 ]
