#!/bin/bash
# The watchdog: heird pings at the shipped WatchdogSec= and stays up; when it stops pinging
# (watchdog_stall = true), systemd declares a watchdog timeout and restarts it.
# run.sh: background
. "$(dirname "$0")/lib.sh"

start_heird
wd=$(prop WatchdogUSec)
[ "$wd" != 0 ] && [ -n "$wd" ] || fail "WatchdogSec= is not set in the shipped unit"
pid=$(mainpid); restarts=$(prop NRestarts)
echo "WatchdogUSec=$wd, MainPID $pid, NRestarts $restarts; waiting 3 intervals"
sleep 31
[ "$(mainpid)" = "$pid" ] || fail "MainPID changed $pid -> $(mainpid) without a reload"
[ "$(prop NRestarts)" = "$restarts" ] || fail "NRestarts $restarts -> $(prop NRestarts)"
is_state active || fail "unit is $(prop ActiveState)"
journalctl --sync
if journalctl -q --no-pager -u heird.service | grep -i 'watchdog timeout'; then fail "watchdog fired"; fi
ok "alive across 3 watchdog intervals"

if grep -qE '^[[:space:]]*#?[[:space:]]*watchdog_stall[[:space:]]*=' /etc/heird/heird.toml; then
  sed -i -E 's/^[[:space:]]*#?[[:space:]]*watchdog_stall[[:space:]]*=.*/watchdog_stall = true/' /etc/heird/heird.toml
else
  echo 'watchdog_stall = true' >> /etc/heird/heird.toml
fi
systemctl restart heird.service
stalled=$(mainpid)
restarted() { [ "$(prop NRestarts)" -gt "$restarts" ]; }
wait_for 25 "a restart by the watchdog (NRestarts > $restarts)" restarted
journalctl --sync
journalctl -q --no-pager -u heird.service | grep -i 'watchdog timeout' || fail "NRestarts grew, but the journal shows no watchdog timeout"
ok "stalled pid $stalled: watchdog timeout, NRestarts $restarts -> $(prop NRestarts)"
