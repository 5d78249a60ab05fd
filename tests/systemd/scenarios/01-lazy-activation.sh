#!/bin/bash
# Socket activation: nothing runs until the first connection; then heird is the unit's main
# process, serves on both sockets, and runs as an unprivileged dynamic user.
. "$(dirname "$0")/lib.sh"

systemctl start heird.socket heird-unix.socket
is_state active heird.socket || fail "heird.socket: $(prop ActiveState heird.socket)"
is_state active heird-unix.socket || fail "heird-unix.socket: $(prop ActiveState heird-unix.socket)"
perm=$(stat -c '%a %U:%G' /run/heird.sock)
[ "$perm" = "660 root:heird-clients" ] || fail "/run/heird.sock is $perm, expected 660 root:heird-clients"
sleep 0.5
is_state inactive || fail "heird.service is $(prop ActiveState) before any connection"
ok "sockets listening, service inactive"

body=$(http /) || fail "GET / over TCP"
case $body in *"Hello World"*) ;; *) fail "GET / returned '$body', expected the greeting" ;; esac
wait_for 10 "heird.service active after the first connection" is_state active
ok "first connection activated heird.service"

body=$(http_unix /) || fail "GET / over /run/heird.sock"
case $body in *"Hello World"*) ;; *) fail "GET / over the Unix socket returned '$body'" ;; esac
ok "Unix socket answers"

info=$(http /info)
echo "/info: $info"
pid=$(mainpid)
[ "$(json_num pid <<<"$info")" = "$pid" ] || fail "MainPID $pid but /info says pid $(json_num pid <<<"$info")"
for name in http unix; do
  grep -q "\"name\"[[:space:]]*:[[:space:]]*\"$name\"" <<<"$info" || fail "/info lists no listener named '$name'"
done
ok "MainPID $pid is the process that answers; listeners http and unix"

uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
[ "$uid" != 0 ] || fail "heird runs as root (DynamicUser= not in effect)"
ok "runs as uid $uid"
