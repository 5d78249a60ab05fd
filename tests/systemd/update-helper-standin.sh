#!/bin/bash
# update-helper-standin.sh — a stand-in for Fedora's /usr/lib/systemd/systemd-update-helper (shipped
# by Fedora's systemd, not by Debian's), for package-upgrade.sh's rpm-helper case: the verbs the
# %systemd_* macros and systemd's own rpm file triggers use, with the same systemctl calls.
#   install-system-units UNIT...       systemctl --no-reload preset
#   remove-system-units UNIT...        systemctl --no-reload disable [--now when systemd runs]
#   mark-restart-system-units UNIT...  Markers=+needs-restart
#   mark-reload-system-units UNIT...   Markers=+needs-reload
#   system-reload-restart              daemon-reload, then reload-or-restart --marked (what the
#                                      systemd package's file trigger runs at the end of a
#                                      transaction that installed units; the test calls it after
#                                      rpm -U)
#   system-reload                      daemon-reload (the trigger after units were removed; the
#                                      test calls it after rpm -e)
set -eu
verb=${1:?verb}; shift
command -v systemctl >/dev/null || exit 0
case $verb in
  install-system-units) systemctl --no-reload preset "$@" ;;
  remove-system-units)
    if [ -d /run/systemd/system ]; then systemctl --no-reload disable --now "$@"
    else systemctl --no-reload disable "$@"; fi ;;
  mark-restart-system-units | mark-reload-system-units)
    [ -d /run/systemd/system ] || exit 0
    marker=needs-restart; [ "$verb" = mark-reload-system-units ] && marker=needs-reload
    for unit in "$@"; do systemctl set-property "$unit" Markers=+$marker; done ;;
  system-reload-restart | system-reload)
    [ -d /run/systemd/system ] || exit 0
    systemctl daemon-reload
    [ "$verb" = system-reload ] || systemctl reload-or-restart --marked ;;
  *) echo "unknown verb '$verb'" >&2; exit 3 ;;
esac
