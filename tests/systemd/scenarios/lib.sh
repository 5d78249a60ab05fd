# lib.sh — sourced by the scenarios, which run as root inside the sandbox (see ../run.sh).
# Environment from run.sh: HEIRD_LOAD (load client), SYSTEMD_VERSION, HEIRD_PROJECT.
set -euo pipefail

# Refuse to run on a real machine: the scenarios rewrite /etc and /usr/bin/heird.
[ -e /etc/systemd/system/heird-sandbox.target ] && [ "$(cat /proc/1/comm)" = systemd ] || {
  echo "$(basename "$0"): runs only inside the sandbox: tests/systemd/run.sh $(basename "$0" .sh)" >&2; exit 2; }

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# wait_for SECONDS WHAT CMD...: run CMD every 0.1 s until it succeeds.
wait_for() {
  local secs=$1 what=$2 end; shift 2
  end=$(( $(ms) + secs * 1000 ))
  until "$@"; do
    [ "$(ms)" -lt "$end" ] || fail "waited ${secs} s for: $what"
    sleep 0.1
  done
}

prop() { systemctl show -P "$1" "${2:-heird.service}"; }
mainpid() { prop MainPID; }
is_state() { [ "$(prop ActiveState "${2:-heird.service}")" = "$1" ]; }

# http PATH: GET over TCP; prints the body, fails on a non-2xx status.
http() { curl -sS --fail --max-time 10 "http://127.0.0.1:8080$1"; }
http_unix() { curl -sS --fail --max-time 10 --unix-socket /run/heird.sock "http://heird$1"; }

# json_num FIELD < JSON: the first number (or bare word) value of "FIELD".
json_num() { grep -oE "\"$1\"[[:space:]]*:[[:space:]]*[^,}\"[:space:]]+" | head -n 1 | sed -E 's/.*:[[:space:]]*//'; }

# start_heird: socket-activate heird and wait until it is up.
start_heird() {
  systemctl start heird.socket
  http / >/dev/null || fail "first request after socket activation failed"
  wait_for 10 "heird.service active" is_state active
}

# load_start OUT ARGS...: the load client against 127.0.0.1:8080 in the background (pid in $load_pid).
load_start() {
  local out=$1; shift
  "$HEIRD_LOAD" --addr 127.0.0.1:8080 --path '/sleep?duration=10ms' --json "$@" > "$out" 2> "$out.err" &
  load_pid=$!
}

# load_wait OUT: wait for the load client; its exit status lands in $load_rc; prints the stats.
load_wait() {
  load_rc=0; wait "$load_pid" || load_rc=$?
  echo "load client exit $load_rc: $(cat "$1")"
  [ -s "$1.err" ] && sed 's/^/  load stderr: /' "$1.err"
  return 0
}

# no_failures OUT: every failure counter of the load client's stats is 0, and some requests passed.
no_failures() {
  local f n
  for f in refused reset closed_before_response timeout non_200 other; do
    n=$(json_num "$f" < "$1"); [ "$n" = 0 ] || fail "load client: $f = ${n:-missing}"
  done
  n=$(json_num ok < "$1"); [ "${n:-0}" -gt 0 ] || fail "load client: no request succeeded"
  [ "$load_rc" = 0 ] || fail "load client exited $load_rc"
}
