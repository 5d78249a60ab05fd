#!/bin/bash
# Standalone, the config's listen addresses change between restarts: an address no longer listed
# is closed and removed from the fd store, a new one is bound and stored, and one that stays is
# taken from the store (same socket inode), not bound twice.
. "$(dirname "$0")/lib.sh"

expect_store() {   # expect_store N NAME...: N fds stored, and (systemd >= 254) exactly these names
  local want
  [ "$(nstore)" = "$1" ] || { show_store; fail "$what: NFileDescriptorStore=$(nstore), expected $1"; }
  shift
  if [ "${SYSTEMD_VERSION:-0}" -ge 254 ]; then
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//')
    [ "$(stored_names)" = "$want" ] || { show_store; fail "$what: the store holds '$(stored_names)', expected '$want'"; }
  fi
}
serves() { [ "$(curl -sS --fail --max-time 5 "http://127.0.0.1:$1/info" | json_num pid)" = "$(mainpid)" ]; }

what="start on 8080"
start_standalone
expect_store 2 bound-tcp-127.0.0.1_8080 heird-metrics
show_store
ok "$what: stored bound-tcp-127.0.0.1_8080"

what="8080 -> 8081 + 8082"
set_listen 127.0.0.1:8081 127.0.0.1:8082
pid=$(mainpid)
systemctl restart heird.service || fail "$what: restart exited $?"
[ "$(mainpid)" != "$pid" ] || fail "$what: MainPID unchanged"
echo "  new MainPID $(mainpid) got LISTEN_FDNAMES=$(passed_names "$(mainpid)")"
serves 8081 || fail "$what: 8081 does not serve"
serves 8082 || fail "$what: 8082 does not serve"
wait_for 5 "127.0.0.1:8080 to be closed" port_free 8080
expect_store 3 bound-tcp-127.0.0.1_8081 bound-tcp-127.0.0.1_8082 heird-metrics
show_store
ino81=$(listen_ino 8081) ino82=$(listen_ino 8082)
ok "$what: 8080 closed (connection refused) and out of the store; 8081 and 8082 serve and are stored"

what="restart with the same config"
pid=$(mainpid)
systemctl restart heird.service || fail "$what: restart exited $?"
names=$(passed_names "$(mainpid)")
echo "  new MainPID $(mainpid) got LISTEN_FDNAMES=$names"
case ":$names:" in *:bound-tcp-127.0.0.1_8081:*) ;; *) fail "$what: 8081 was not passed back from the store" ;; esac
case ":$names:" in *:bound-tcp-127.0.0.1_8082:*) ;; *) fail "$what: 8082 was not passed back from the store" ;; esac
serves 8081 && serves 8082 || fail "$what: 8081/8082 do not both serve"
[ "$(listen_ino 8081)" = "$ino81" ] && [ "$(listen_ino 8082)" = "$ino82" ] ||
  fail "$what: socket inodes changed (8081 $ino81 -> $(listen_ino 8081), 8082 $ino82 -> $(listen_ino 8082)): bound again instead of reused"
[ "$(listeners 8081 | wc -l)" = 1 ] || fail "$what: more than one listener on 8081"
expect_store 3 bound-tcp-127.0.0.1_8081 bound-tcp-127.0.0.1_8082 heird-metrics
ok "$what: both listeners taken from the store (same socket inodes $ino81 $ino82), store still 2"

what="8081 + 8082 -> 8082"
set_listen 127.0.0.1:8082
systemctl restart heird.service || fail "$what: restart exited $?"
serves 8082 || fail "$what: 8082 does not serve"
[ "$(listen_ino 8082)" = "$ino82" ] || fail "$what: 8082's socket inode changed"
wait_for 5 "127.0.0.1:8081 to be closed" port_free 8081
port_free 8080 || fail "$what: 8080 is open again"
expect_store 2 bound-tcp-127.0.0.1_8082 heird-metrics
show_store
ok "$what: 8081 closed and out of the store; 8082 kept (same socket)"

echo "journal (fd store lines):"
heird_log | grep -iE 'fd store' | sed 's/^/  | /' || true
