#!/bin/bash
# Standalone, `systemctl stop heird.service` releases the listening socket: the fd store is
# emptied, the port is free (connections refused), and a later start binds it again. Checked
# after a fresh start and after a restart (when the socket came from the store).
. "$(dirname "$0")/lib.sh"

start_standalone
[ "$(nstore)" = 2 ] || { show_store; fail "NFileDescriptorStore=$(nstore) after a standalone start, expected 2 (the listener and the metrics' counters)"; }
systemctl stop heird.service || fail "stop exited $?"
is_state inactive || fail "unit is $(prop ActiveState) after stop"
[ "$(nstore)" = 0 ] || { show_store; fail "NFileDescriptorStore=$(nstore) after stop"; }
port_free 8080 || fail "127.0.0.1:8080 still listening after stop: socket inode $(listen_ino 8080)"
ok "stop after a fresh start: store empty, port 8080 free (connection refused)"

systemctl reset-failed heird.service 2>/dev/null || true
start_standalone
pid=$(mainpid)
systemctl restart heird.service || fail "restart exited $?"
[ "$(mainpid)" != "$pid" ] || fail "MainPID unchanged by restart"
passed_has "$(mainpid)" bound-tcp-127.0.0.1_8080 || fail "after the restart LISTEN_FDNAMES=$(passed_names "$(mainpid)")"
http /healthz >/dev/null || fail "no answer after the restart"
pid=$(mainpid)
systemctl stop heird.service || fail "stop exited $?"
is_state inactive || fail "unit is $(prop ActiveState) after stop"
[ ! -e "/proc/$pid" ] || fail "pid $pid still exists after stop"
[ "$(nstore)" = 0 ] || { show_store; fail "NFileDescriptorStore=$(nstore) after stop"; }
port_free 8080 || fail "127.0.0.1:8080 still listening after stop: socket inode $(listen_ino 8080)"
[ "$(prop Result)" = success ] || fail "Result=$(prop Result)"
ok "stop after a restart (socket from the store): store empty, port 8080 free, Result=success"

systemctl start heird.service || fail "start after stop exited $?"
http /healthz >/dev/null || fail "no answer after start"
[ "$(passed_names "$(mainpid)")" = - ] || fail "a fresh start got LISTEN_FDNAMES=$(passed_names "$(mainpid)") (the store should be empty)"
ok "a new start binds 8080 afresh"
