#!/bin/bash
# What `systemctl reload` reports when the successor fails, with the shipped unit
# (ExecReload=heird reload) and with the Type=notify-reload drop-in, on the same boot: its exit
# status, the unit's state afterwards, and how long it takes; also how long a good reload takes
# with each. In both cases the old process must keep serving and stay MainPID.
# systemd >= 253 only (the ExecReload= half is scenario 03 on every version).
. "$(dirname "$0")/lib.sh"
needs_systemd 253 "Type=notify-reload"

cp /etc/heird/heird.toml /root/heird.toml.good
cp /usr/bin/heird /usr/lib/heird.real
break_config() { echo 'bogus_key = 1' >> /etc/heird/heird.toml; }
break_binary() {   # a successor that exits 1 at `serve` (see scenario 03)
  printf '#!/bin/sh\nif [ "$1" = serve ]; then echo "broken heird: exiting 1" >&2; exit 1; fi\nexec /usr/lib/heird.real "$@"\n' > /usr/bin/heird.new
  chmod 755 /usr/bin/heird.new && mv /usr/bin/heird.new /usr/bin/heird
}
repair() {
  cp /root/heird.toml.good /etc/heird/heird.toml
  cp /usr/lib/heird.real /usr/bin/heird.new && mv /usr/bin/heird.new /usr/bin/heird
}

# measure VARIANT: 5 good reloads, then a broken config and a broken binary; prints findings.
measure() {
  local variant=$1 good=() i pid what
  for i in 1 2 3 4 5; do
    pid=$(mainpid)
    timed_reload
    [ "$reload_rc" = 0 ] || fail "$variant: good reload $i exited $reload_rc: $(cat /tmp/reload.err)"
    [ "$(mainpid)" != "$pid" ] || fail "$variant: good reload $i: MainPID still $pid"
    [ "$(http /info | json_num pid)" = "$(mainpid)" ] || fail "$variant: good reload $i: the new MainPID does not answer"
    good+=("$reload_ms")
  done
  echo "FINDING [$variant] good reload: exit 0, took ${good[*]} ms (median $(median "${good[@]}") ms)"
  for what in config binary; do
    pid=$(mainpid)
    cursor=$(journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p')
    "break_$what"
    load_start /tmp/load-$variant-$what.json -c 4 -k 2 --duration 1500ms
    sleep 0.3
    timed_reload
    load_wait /tmp/load-$variant-$what.json >/dev/null
    repair
    is_state active || fail "$variant, broken $what: unit is $(prop ActiveState)/$(prop SubState)"
    [ "$(mainpid)" = "$pid" ] || fail "$variant, broken $what: MainPID changed $pid -> $(mainpid)"
    [ "$(http /info | json_num pid)" = "$pid" ] || fail "$variant, broken $what: pid $pid no longer answers"
    no_failures /tmp/load-$variant-$what.json
    echo "FINDING [$variant] broken $what: systemctl reload exit $reload_rc after $reload_ms ms" \
         "($(tr '\n' ' ' < /tmp/reload.err | cut -c1-160)); afterwards ActiveState=$(prop ActiveState)" \
         "SubState=$(prop SubState) Result=$(prop Result) ReloadResult=$(prop ReloadResult)" \
         "MainPID=$(mainpid) (unchanged, still serving; load: $(json_num ok < /tmp/load-$variant-$what.json) ok, 0 failed)"
    echo "FINDING [$variant] broken $what: StatusText=$(prop StatusText | cut -c1-160)"
    eval "bad_${variant//-/_}_$what=\$reload_rc"
    journalctl --sync
    echo "journal of this failed reload:"
    journalctl -q --no-pager -u heird.service --after-cursor "$cursor" -o cat | cut -c1-160 | sed 's/^/  | /'
  done
  timed_reload   # repaired: works again
  [ "$reload_rc" = 0 ] || fail "$variant: reload after the repair exited $reload_rc"
}

start_heird
measure ExecReload
[ "$bad_ExecReload_config" != 0 ] && [ "$bad_ExecReload_binary" != 0 ] || fail "ExecReload=heird reload exited 0 for a failed successor"
ok "ExecReload=heird reload: a failed successor makes systemctl reload fail; the old pid keeps serving"

use_notify_reload
systemctl restart heird.service || fail "restart with the drop-in exited $?"
measure notify-reload
ok "Type=notify-reload: a failed successor leaves the old pid serving; systemctl reload exits $bad_notify_reload_config (config) / $bad_notify_reload_binary (binary): see the FINDING lines"
