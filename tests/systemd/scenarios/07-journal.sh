#!/bin/bash
# heird logs structured entries to the journal, under heird.service, from the old and the new
# process of a reload.
. "$(dirname "$0")/lib.sh"

start_heird
pid0=$(mainpid)
http /info >/dev/null
systemctl reload heird.service || fail "reload exited $?"
pid1=$(mainpid)
[ "$pid1" != "$pid0" ] || fail "MainPID did not change"
http /info >/dev/null
# entries_of PID: heird.service's journal entries (JSON, one a line) sent by heird as PID.
entries_of() {
  journalctl -q --no-pager -u heird.service -o json | grep -E "\"_PID\":\"$1\"" |
    grep -E '"(SYSLOG_IDENTIFIER|_COMM)":"heird"' || true
}
has_entries() { [ -n "$(entries_of "$1")" ]; }
for pid in "$pid0" "$pid1"; do
  wait_for 5 "a journal entry of heird.service from pid $pid" has_entries "$pid"
  mine=$(entries_of "$pid")
  # Native journal protocol (tracing-journald), not just stderr lines: fields like CODE_FILE.
  grep -q '"CODE_FILE":' <<<"$mine" || fail "entries of pid $pid carry no CODE_FILE field (stderr lines, not structured?)"
  echo "pid $pid: $(wc -l <<<"$mine") entries, e.g.: $(head -n 1 <<<"$mine" | grep -oE '"MESSAGE":"[^"]*"')"
done
ok "structured entries from both pids $pid0 and $pid1 under heird.service"
