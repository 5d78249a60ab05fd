#!/bin/bash
# on-demand-inner.sh — runs inside the sandbox for bench/on-demand.sh (heird installed as a
# package installs it, systemd as PID 1). Cold start: STARTS times, wait until heird.service is
# inactive (heird exited when idle) with heird.socket listening, then one GET /healthz with curl
# and the time from the TCP connect (the socket unit's backlog accepted it) to the first response
# byte, then a second request on that connection (warm). Prints one "LABEL start N cold_us U
# warm_us W" line each: LABEL shipped (the units as shipped), then plain (a drop-in that turns
# the unit's sandboxing off).
set -euo pipefail
STARTS=${1:-100}

echo 'idle_exit = "50ms"' >> /etc/heird/heird.toml
mkdir -p /etc/systemd/system/heird.service.d /etc/systemd/system/heird.socket.d
printf '[Unit]\nStartLimitIntervalSec=0\n' > /etc/systemd/system/heird.service.d/idle-exit.conf
printf '[Socket]\nTriggerLimitIntervalSec=0\n' > /etc/systemd/system/heird.socket.d/idle-exit.conf
systemctl daemon-reload
systemctl start heird.socket

inactive() { [ "$(systemctl show -P ActiveState heird.service)" = inactive ]; }
until_inactive() {
  local i
  for i in $(seq 1 200); do inactive && return 0; sleep 0.05; done
  echo "heird.service did not exit when idle" >&2; exit 1
}
# µs between curl's connect and its first byte, from -w's seconds with 6 decimals.
us() { awk -v c="$1" -v f="$2" 'BEGIN { printf "%d", (f - c) * 1000000 }'; }

# cold STARTS LABEL: STARTS cold starts, each followed by a second request on the same connection
# (warm: the process is running and the connection open).
cold() {
  local n out c f code p2 f2
  for n in $(seq 1 "$1"); do
    until_inactive
    out=$(curl -sS --max-time 10 -o /dev/null -o /dev/null \
      -w '%{time_connect} %{time_starttransfer} %{http_code} %{time_pretransfer}\n' \
      http://127.0.0.1:8080/healthz http://127.0.0.1:8080/healthz)
    read -r c f code _ <<<"$(sed -n 1p <<<"$out")"
    read -r _ f2 _ p2 <<<"$(sed -n 2p <<<"$out")"
    [ "$code" = 200 ] || { echo "start $n: HTTP $code" >&2; exit 1; }
    echo "$2 start $n cold_us $(us "$c" "$f") warm_us $(us "$p2" "$f2")"
  done
}

cold "$STARTS" shipped
# The same without the unit's sandboxing (DynamicUser=, the namespaces, the seccomp filter): what
# systemd's setup of the sandbox costs at each start.
cat > /etc/systemd/system/heird.service.d/no-sandbox.conf <<'UNIT'
[Service]
DynamicUser=no
PrivateTmp=no
PrivateDevices=no
DevicePolicy=auto
PrivateMounts=no
PrivateUsers=no
ProtectSystem=no
ProtectHome=no
ProtectProc=default
ProcSubset=all
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
KeyringMode=shared
RemoveIPC=no
RestrictAddressFamilies=
RestrictNamespaces=no
RestrictRealtime=no
RestrictSUIDSGID=no
LockPersonality=no
MemoryDenyWriteExecute=no
SystemCallArchitectures=
SystemCallFilter=
NoNewPrivileges=no
UNIT
systemctl daemon-reload
cold "$STARTS" plain
