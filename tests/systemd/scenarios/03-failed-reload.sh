#!/bin/bash
# A reload whose successor cannot start (invalid config, then a binary that exits 1) fails
# visibly: `systemctl reload` exits non-zero, the old process keeps serving as MainPID, the
# unit stays active. Once repaired, the next reload succeeds.
. "$(dirname "$0")/lib.sh"

# expect_failed_reload WHAT: reload must fail and change nothing.
expect_failed_reload() {
  local pid rc=0
  pid=$(mainpid)
  systemctl reload heird.service || rc=$?
  [ "$rc" != 0 ] || fail "$1: systemctl reload exited 0"
  is_state active || fail "$1: unit is $(prop ActiveState)/$(prop SubState) after the failed reload"
  [ "$(mainpid)" = "$pid" ] || fail "$1: MainPID changed $pid -> $(mainpid)"
  [ "$(http /info | json_num pid)" = "$pid" ] || fail "$1: pid $pid no longer answers"
  ok "$1: reload exited $rc, pid $pid still serving, unit active"
}
expect_good_reload() {
  local pid; pid=$(mainpid)
  systemctl reload heird.service || fail "$1: reload exited $?"
  [ "$(mainpid)" != "$pid" ] || fail "$1: MainPID still $pid"
  [ "$(http /info | json_num pid)" = "$(mainpid)" ] || fail "$1: the new MainPID does not answer"
  ok "$1: reload succeeded, MainPID $pid -> $(mainpid)"
}

start_heird
cp /etc/heird/heird.toml /root/heird.toml.good

echo 'bogus_key = 1' > /etc/heird/heird.toml
expect_failed_reload "unknown key in heird.toml"
printf 'listen = [\n' > /etc/heird/heird.toml
expect_failed_reload "heird.toml with a syntax error"
cp /root/heird.toml.good /etc/heird/heird.toml
expect_good_reload "config repaired"

# The successor is exec'd from /usr/bin/heird. A plain `exit 1` script there would also break
# `heird reload` itself (ExecReload=), and the test would pass without any handoff; so the
# stand-in fails only for `serve` and says so in the journal.
# Files are replaced by rename, as a package manager does: the running binary is busy.
cp /usr/bin/heird /usr/lib/heird.real
cat > /usr/bin/heird.new <<'SH'
#!/bin/sh
if [ "$1" = serve ]; then echo "broken heird: exiting 1" >&2; exit 1; fi
exec /usr/lib/heird.real "$@"
SH
chmod 755 /usr/bin/heird.new && mv /usr/bin/heird.new /usr/bin/heird
t=$(date '+%Y-%m-%d %H:%M:%S')
expect_failed_reload "successor binary exits 1"
# (stderr reaches the journal through a stream that journald reads when it gets to it)
broken_ran() { journalctl -q --no-pager -u heird.service --since "$t" | grep -q "broken heird: exiting 1"; }
wait_for 5 "the broken successor's line in the journal (was it started at all?)" broken_ran
cp /usr/lib/heird.real /usr/bin/heird.new && mv /usr/bin/heird.new /usr/bin/heird
expect_good_reload "binary restored"
