# heird %postun. $1: number of heird packages left (0 = erase, 1 = upgrade).
# The unit files are gone (erase) or were replaced (upgrade): tell systemd.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # systemd leaves the file of a stopped Unix socket behind (RemoveOnStop=no).
    if [ "$1" -eq 0 ] && [ -S /run/heird.sock ] && ! systemctl --quiet is-active heird-unix.socket; then
        rm -f /run/heird.sock
    fi
fi
# The package owns no directory (cargo-generate-rpm cannot list one), so rpm leaves them
# behind: remove those that are empty now (a modified config kept as .rpmsave stays).
if [ "$1" -eq 0 ]; then
    rmdir /usr/share/doc/heird/examples /usr/share/doc/heird /usr/share/licenses/heird \
        /etc/heird 2>/dev/null || :
fi
exit 0
