# heird %post. $1: number of heird packages installed after this step (1 = install, 2 = upgrade).
# cargo-generate-rpm has no systemd macros, so this does by hand what the issue asks:
#   install: enable and start heird.socket and heird-unix.socket
#   upgrade: daemon-reload, then try-reload-or-restart heird.service, which runs the unit's
#            ExecReload= (`heird reload`): a handoff to the new /usr/bin/heird, no request lost.
#            The sockets are never stopped or restarted.
# Every systemctl call needs a running systemd ([ -d /run/systemd/system ]), so installing
# into a chroot or an image build does nothing here (`systemctl enable heird.socket` there).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now heird.socket heird-unix.socket || :
    else
        if ! systemctl try-reload-or-restart heird.service; then
            echo "heird: the reload after the upgrade failed; the previous process keeps" \
                "serving. See: systemctl status heird.service; journalctl -u heird.service" >&2
        fi
    fi
fi
exit 0
