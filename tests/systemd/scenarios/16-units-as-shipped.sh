#!/bin/bash
# The shipped units' settings for admins (issue 18):
#  - heird-unix.socket starts and stops on its own (heird.socket does not pull it in); its file is
#    0660 root:heird-clients and is removed when it stops (RemoveOnStop=yes);
#  - a main process that exits by itself leaves the unit inactive with Result=success: ExecStop=
#    then runs with $MAINPID unset and must not fail;
#  - a bad config (exit 78) fails the unit at once, without restarts (RestartPreventExitStatus=78).
. "$(dirname "$0")/lib.sh"

systemctl start heird.socket
is_state active heird.socket || fail "heird.socket: $(prop ActiveState heird.socket)"
is_state inactive heird-unix.socket || fail "heird.socket pulled in heird-unix.socket ($(prop ActiveState heird-unix.socket))"
[ ! -e /run/heird.sock ] || fail "/run/heird.sock exists with heird-unix.socket stopped"
systemctl start heird-unix.socket
perm=$(stat -c '%a %U:%G' /run/heird.sock)
[ "$perm" = "660 root:heird-clients" ] || fail "/run/heird.sock is $perm, expected 660 root:heird-clients"
systemctl stop heird-unix.socket
is_state active heird.socket || fail "stopping heird-unix.socket stopped heird.socket"
[ ! -e /run/heird.sock ] || fail "/run/heird.sock left after stopping heird-unix.socket (RemoveOnStop=yes)"
ok "heird-unix.socket on its own: 0660 root:heird-clients, file removed at stop; heird.socket unaffected"

[ "$(http /)" = "Hello World" ] || fail "GET / over TCP"
wait_for 10 "heird.service active" is_state active
pid=$(mainpid)
kill -TERM "$pid"
wait_for 40 "heird.service inactive after a SIGTERM by hand" is_state inactive
[ "$(prop Result)" = success ] || fail "Result=$(prop Result) after a SIGTERM by hand"
ok "SIGTERM by hand: pid $pid drained and exited (heird sent STOPPING=1), Result=success"

# systemd runs ExecStop= also after a main process exited by itself without STOPPING=1, with
# $MAINPID unset (systemd.service(5)). heird itself always says STOPPING=1, so a stand-in
# ExecStart= (a drop-in) plays that main process; the shipped ExecStop= line is what is tested.
systemctl stop heird.socket
mkdir -p /etc/systemd/system/heird.service.d
printf '[Service]\nNotifyAccess=all\nExecStart=\nExecStart=/bin/sh -c "systemd-notify --ready; sleep 0.3"\n' \
  > /etc/systemd/system/heird.service.d/exits-by-itself.conf
systemctl daemon-reload
systemctl start heird.service
wait_for 10 "the stand-in main process exited and the unit stopped" is_state inactive
[ "$(prop Result)" = success ] || fail "Result=$(prop Result): the shipped ExecStop= failed without \$MAINPID ($(journalctl -u heird.service -o cat | tail -n 3 | tr '\n' ' '))"
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts=$(prop NRestarts) after a clean exit"
# (systemd forgets a stopped unit's ExecStop= status, but logs a failed one; the old line,
# `heird stop --pid $MAINPID`, failed here: "--pid" without a value, exit 2, Result=exit-code.)
! journalctl -u heird.service -o cat | grep -q 'Control process exited' ||
  fail "a control process failed: $(journalctl -u heird.service -o cat | grep 'Control process exited')"
rm /etc/systemd/system/heird.service.d/exits-by-itself.conf
systemctl daemon-reload
ok "main process exited by itself: ExecStop= ran with \$MAINPID unset and succeeded, Result=success"

systemctl stop heird.socket
systemctl reset-failed heird.service 2>/dev/null || true
echo 'bogus_key = 1' >> /etc/heird/heird.toml
systemctl start heird.service 2>/dev/null && fail "heird.service started with a bad config"
wait_for 10 "heird.service failed" is_state failed
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts=$(prop NRestarts): a bad config was restarted"
[ "$(prop ExecMainStatus)" = 78 ] || fail "ExecMainStatus=$(prop ExecMainStatus), expected 78"
ok "bad config: exit 78, unit failed at once, NRestarts=0 (RestartPreventExitStatus=78)"
