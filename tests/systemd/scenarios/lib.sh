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

# start_heird: socket-activate heird (both socket units) and wait until it is up.
start_heird() {
  systemctl start heird.socket heird-unix.socket
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

# A scenario that does not run ends in one of two ways, which run.sh tells apart by the exit
# status (and reports in its summary):
# not_applicable WHY: the case does not exist on this systemd (Type=notify-reload before 253):
#   prints "NOT APPLICABLE: WHY", exits 76; never a failure.
# cannot_run WHY: this machine or build lacks something the scenario needs (a tool, a
#   fault-injection build): prints "SKIP: WHY", exits 77; a failure when CI is set.
not_applicable() { echo "NOT APPLICABLE: $*"; exit 76; }
cannot_run() { echo "SKIP: $*"; exit 77; }

# needs_systemd MIN WHAT: not applicable when this systemd is older than MIN.
needs_systemd() {
  [ "${SYSTEMD_VERSION:-0}" -ge "$1" ] && return 0
  not_applicable "$2 needs systemd >= $1; this is systemd ${SYSTEMD_VERSION:-?}"
}

# start_standalone: heird.service without its socket units (heird binds `listen` itself), up and
# answering. The socket units must not be active: heird would get their fds instead.
start_standalone() {
  is_state inactive heird.socket && is_state inactive heird-unix.socket || fail "a socket unit is active: not standalone"
  systemctl start heird.service || fail "systemctl start heird.service exited $?"
  is_state active || fail "heird.service is $(prop ActiveState) after start"
  http /healthz >/dev/null || fail "no answer after a standalone start"
}

# set_listen ADDR...: the config's `listen` (other keys as shipped).
set_listen() {
  local list
  list=$(printf '"%s", ' "$@"); list="[${list%, }]"
  if grep -qE '^[[:space:]]*listen[[:space:]]*=' /etc/heird/heird.toml; then
    sed -i -E "s|^[[:space:]]*listen[[:space:]]*=.*|listen = $list|" /etc/heird/heird.toml
  else
    echo "listen = $list" >> /etc/heird/heird.toml
  fi
  grep -E '^listen' /etc/heird/heird.toml >/dev/null || fail "could not set listen in heird.toml"
}

# nstore: how many fds heird.service holds in its fd store.
nstore() { prop NFileDescriptorStore; }

# passed_names PID: the LISTEN_FDNAMES that systemd passed to PID at exec, or "-" when none.
# (/proc/PID/environ keeps the exec-time environment even after heird unsets the variables.)
passed_names() {
  local names
  names=$(tr '\0' '\n' < "/proc/$1/environ" | sed -n 's/^LISTEN_FDNAMES=//p')
  echo "${names:--}"
}

# passed_has PID NAME: systemd passed an fd named NAME to PID.
passed_has() { case ":$(passed_names "$1"):" in *":$2:"*) return 0 ;; *) return 1 ;; esac; }
# passed_conns PID: how many stored connections (conn-*) systemd passed to PID.
passed_conns() { passed_names "$1" | tr ':' '\n' | grep -c '^conn-' || true; }
# store_is N: the fd store holds exactly N fds (stored connections taken back by the new process
# are removed from it shortly after its start).
store_is() { [ "$(nstore)" = "$1" ]; }

# show_store: what the store holds, for the log. systemd >= 254 lists it with names.
show_store() {
  echo "  NFileDescriptorStore=$(nstore), passed to MainPID $(mainpid): LISTEN_FDNAMES=$(passed_names "$(mainpid)")"
  if [ "${SYSTEMD_VERSION:-0}" -ge 254 ]; then
    systemd-analyze fdstore heird.service 2>&1 | sed 's/^/  | /' || true
  fi
}

# stored_names: the names in the store, sorted, space-separated (systemd >= 254 only).
stored_names() {
  systemd-analyze fdstore --json=short heird.service 2>/dev/null | grep -oE '"fdname":"[^"]*"' | cut -d'"' -f4 |
    sort | tr '\n' ' ' | sed 's/ $//'
}

# heird_log [JOURNALCTL_ARGS...]: heird.service's messages with heird's name/address fields and
# the pid, one a line (journalctl -o cat drops the fields).
heird_log() {
  local line msg f extra
  journalctl --sync 2>/dev/null || true
  journalctl -q --no-pager -u heird.service -o json "$@" | while IFS= read -r line; do
    msg=$(grep -oE '"MESSAGE":"([^"\\]|\\.)*"' <<<"$line" | head -n 1 | cut -c12- | sed 's/"$//') || true
    extra=
    for f in F_NAME F_ADDRESS; do   # tracing-journald prefixes the event's fields with F_
      v=$(grep -oE "\"$f\":\"[^\"]*\"" <<<"$line" | head -n 1 | cut -d'"' -f4) || true
      [ -z "$v" ] || extra="$extra ${f#F_}=$v"
    done
    echo "[$(grep -oE '"_PID":"[0-9]+"' <<<"$line" | cut -d'"' -f4)] $msg$extra"
  done
}

# listeners PORT: the socket inodes of the TCP listeners on port PORT, one a line (from
# /proc/net/tcp, so that no `ss` is needed: state 0A is LISTEN).
listeners() {
  awk -v port="$(printf ':%04X' "$1")" 'NR > 1 && substr($2, length($2) - 4) == port && $4 == "0A" { print $10 }' /proc/net/tcp
}
# listen_ino PORT: the socket inode of the TCP listener on PORT ("" when none).
listen_ino() { listeners "$1" | head -n 1; }
# port_free PORT: nothing listens on PORT and a connection to 127.0.0.1:PORT is refused.
port_free() {
  local rc=0
  [ -z "$(listeners "$1")" ] || return 1
  curl -sS --max-time 2 -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null || rc=$?
  [ "$rc" = 7 ]   # curl: "Failed to connect" (ECONNREFUSED)
}

# restart_timed: `systemctl restart heird.service` while /info is polled. Sets
# first_ms (restart issued -> first response from a new pid) and cmd_ms (-> systemctl returned),
# new_pid (the pid that answered); fails if systemctl fails or no new pid answers within 20 s.
restart_timed() {
  local old t0 p rpid rc=0
  old=$(mainpid); t0=$(ms)
  systemctl restart heird.service & rpid=$!
  new_pid= first_ms=
  while :; do
    p=$(curl -s --max-time 5 "http://127.0.0.1:${RESTART_PORT:-8080}/info" 2>/dev/null | json_num pid || true)
    if [ -n "$p" ] && [ "$p" != "$old" ]; then new_pid=$p; first_ms=$(( $(ms) - t0 )); break; fi
    [ $(( $(ms) - t0 )) -lt 20000 ] || { wait "$rpid" || true; fail "no new pid answered within 20 s of systemctl restart (old $old)"; }
    sleep 0.005
  done
  wait "$rpid" || rc=$?
  cmd_ms=$(( $(ms) - t0 ))
  [ "$rc" = 0 ] || fail "systemctl restart exited $rc"
}

# load_line OUT: one line with the load client's main counters.
load_line() {
  local f out=""
  for f in ok failed refused reset closed_before_response timeout non_200 other reconnects connection_close_seen; do
    out="$out $f=$(json_num "$f" < "$1")"
  done
  echo "${out# } pids=$(grep -oE '"pids":\{[^}]*\}' "$1" | grep -oE '"[0-9]+":' | wc -l)"
}

# use_notify_reload: install the shipped deploy/heird-notify-reload.conf as a drop-in, as the
# README tells users of systemd >= 253 to do.
use_notify_reload() {
  mkdir -p /etc/systemd/system/heird.service.d
  cp "$HEIRD_PROJECT/deploy/heird-notify-reload.conf" /etc/systemd/system/heird.service.d/notify-reload.conf
  systemctl daemon-reload
  [ "$(prop Type)" = notify-reload ] || fail "Type=$(prop Type) with the notify-reload drop-in"
  echo "heird.service with deploy/heird-notify-reload.conf: Type=$(prop Type), ReloadSignal=$(prop ReloadSignal), ExecReload='$(prop ExecReload)'"
}

# timed_reload: `systemctl reload heird.service`; sets reload_rc and reload_ms, never fails.
timed_reload() {
  local t0; t0=$(ms); reload_rc=0
  systemctl reload heird.service 2>/tmp/reload.err || reload_rc=$?
  reload_ms=$(( $(ms) - t0 ))
}

# median N...: the median of integers.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)) }'; }

# spare_from_final_kill "$@": for a scenario that runs `systemctl soft-reboot`. Before PID 1
# re-executes, it kills every process left in its pid namespace, the scenario's own included
# (a plain `sleep` there ended with status 137 on 257), except root processes whose argv[0]
# starts with "@" (systemd's killall.c, https://systemd.io/ROOT_STORAGE_DAEMONS). So the scenario re-executes itself once
# as "@<name>", and starts its clients with `spared NAME CMD...`. Across the soft-reboot it
# waits only with builtins (`wait`, `nap`): a `sleep` or `curl` running then would be killed.
spare_from_final_kill() {
  if [ "$(head -c 1 /proc/$$/cmdline)" != @ ]; then
    exec -a "@$(basename "$0" .sh)" /bin/bash "$0" "$@"
  fi
  local fifo=/tmp/.nap-$$
  mkfifo "$fifo"; exec {nap_fd}<>"$fifo"; rm -f "$fifo"
}
# spared NAME CMD [ARG...]: exec CMD with argv[0] "@NAME" (use in a background subshell).
spared() { local name=$1; shift; exec -a "@$name" "$@"; }
# nap SECS: sleep without a child process (a `read` that times out on a fifo nobody writes).
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }

# soft_reboots: how many soft-reboots PID 1 has gone through since the boot (systemd >= 256).
soft_reboots() { systemctl show -P SoftRebootsCount 2>/dev/null || echo "?"; }
