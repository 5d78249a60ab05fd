# heird %preun. $1: number of heird packages left after this step (0 = erase, 1 = upgrade).
#   erase: stop the service (its ExecStop= drains) and the sockets, and disable the sockets.
#   upgrade: nothing (the new package's %post reloads the service).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop heird.service heird.socket heird-unix.socket || :
    systemctl disable heird.socket heird-unix.socket >/dev/null 2>&1 || :
fi
exit 0
