#!/bin/bash
# heird in a podman container under systemd, with the units as shipped (deploy/heird-podman.socket
# + heird-podman.service: `podman run --sdnotify=container --network none`, socket activation,
# ExecReload=podman exec … heird reload --pid 1). heird is PID 1 in the container and hands over
# between its workers: 20 `systemctl reload` under load give 0 failed requests and 0 reconnects,
# the container's PID 1 and the unit's MainPID (conmon) stay, the generation goes 1 -> 21; a
# reload whose new worker fails (a bad heird.toml) fails visibly and the old worker keeps
# serving; `systemctl stop` drains a request in flight and the unit stops cleanly (Result=success,
# the container's exit 0, no container left).
#
# podman is set up for this sandbox the way an administrator sets it up for a machine, in
# /etc/containers (../shared/CONTAINERS-NOTES.md): crun without cgroups (the sandbox has no
# controllers to give it), cgroupfs, vfs storage on /run (no /dev/fuse for fuse-overlayfs), no
# default sysctls (crun cannot write ping_group_range here). The image is made offline from
# /usr/bin/heird and what it links (tests/support/image.sh) and imported as localhost/heird:latest.
#
# With QUADLET=1 (scenario 26), the same with deploy/quadlet/heird-podman.container, which
# Quadlet's generator turns into heird-podman.service (podman 5.0 and later).
# run.sh: needs-root podman crun
. "$(dirname "$0")/lib.sh"

U=heird-podman.service
for tool in podman crun conmon ldd tar; do
  command -v "$tool" >/dev/null ||
    cannot_run "this root has no $tool (apt-get install podman crun; a rootfs.sh root gets them with HEIRD_ROOTFS_EXTRA=podman,crun)"
done

mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<'EOF'
[containers]
default_sysctls = []
cgroups = "disabled"

[engine]
runtime = "crun"
cgroup_manager = "cgroupfs"
EOF
cat > /etc/containers/storage.conf <<'EOF'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/run/pstore"
EOF

img=/tmp/heird-image
bash "$HEIRD_PROJECT/tests/support/image.sh" "$img" /usr/bin/heird || fail "tests/support/image.sh failed"
# vfs copies the whole image for each container: leave the debug info of a debug build out.
! command -v strip >/dev/null || strip --strip-debug "$img/heird"
tar -C "$img" -cf /tmp/heird-image.tar . && podman import -q /tmp/heird-image.tar localhost/heird:latest >/dev/null ||
  fail "podman import of the image directory failed"
ok "image localhost/heird:latest: $(find "$img" -type f -size +0 | sed "s|^$img||" | sort | tr '\n' ' ')"

if [ "${QUADLET:-}" = 1 ]; then
  [ -x /usr/libexec/podman/quadlet ] || not_applicable "podman $(podman --version | awk '{ print $3 }') has no Quadlet (4.4 and later; the unit needs 5.0 for StopTimeout=)"
  mkdir -p /etc/containers/systemd
  install -m 0644 "$HEIRD_PROJECT/deploy/quadlet/heird-podman.container" /etc/containers/systemd/
  # Quadlet adds --cgroups=split, which crun cannot do in this sandbox (no cgroup controllers):
  # a drop-in, as an administrator would write one, puts back containers.conf's "disabled" (the
  # last --cgroups wins).
  mkdir -p /etc/containers/systemd/heird-podman.container.d
  printf '[Container]\nPodmanArgs=--cgroups=disabled\n' > /etc/containers/systemd/heird-podman.container.d/sandbox.conf
  install -m 0644 "$HEIRD_PROJECT/deploy/quadlet/heird-podman.socket" /etc/systemd/system/
  systemctl daemon-reload
  [ "$(prop FragmentPath "$U")" = /run/systemd/generator/heird-podman.service ] ||
    fail "Quadlet wrote no heird-podman.service (FragmentPath '$(prop FragmentPath "$U")'): $(/usr/libexec/podman/quadlet -dryrun 2>&1 | tail -5)"
  ok "Quadlet: $(grep -E '^(ExecStart|ExecReload|ExecStop|Type|NotifyAccess|KillMode)=' /run/systemd/generator/heird-podman.service | tr '\n' ' ')"
else
  install -m 0644 "$HEIRD_PROJECT/deploy/heird-podman.socket" "$HEIRD_PROJECT/deploy/heird-podman.service" /etc/systemd/system/
  systemctl daemon-reload
fi

systemctl start heird-podman.socket
http / >/dev/null || fail "first request after socket activation failed"
wait_for 20 "$U active" is_state active "$U"
conmon=$(prop MainPID "$U")
pid1=$(podman inspect --format '{{.State.Pid}}' heird)
[ "$(cat "/proc/$conmon/comm")" = conmon ] || fail "MainPID $conmon is $(cat "/proc/$conmon/comm"), not conmon"
[ "$(http /info | json_num generation)" = 1 ] || fail "not generation 1 at the start: $(http /info)"
http /info | grep -q '"source":"systemd"' ||
  fail "the listener did not come from systemd: $(http /info)"
ok "socket-activated: MainPID $conmon (conmon), the container's PID 1 is host pid $pid1, listener from systemd"

# The load runs until the reloads are done and a second after (SIGINT ends it early).
load_start /tmp/load.json -c 8 -k 2 --duration 120s
sleep 1
t0=$(ms)
for i in $(seq 20); do
  systemctl reload "$U" || fail "reload $i of 20 exited $?"
done
t1=$(ms)
kill -0 "$load_pid" 2>/dev/null || fail "the load client ended during the reloads"
sleep 1
kill -INT "$load_pid"
load_wait /tmp/load.json
no_failures /tmp/load.json
reconnects=$(json_num reconnects < /tmp/load.json)
[ "$reconnects" = 0 ] || fail "load client: $reconnects reconnects"
gen=$(http /info | json_num generation)
[ "$gen" = 21 ] || fail "generation $gen after 20 reloads, not 21"
[ "$(prop MainPID "$U")" = "$conmon" ] || fail "MainPID $conmon -> $(prop MainPID "$U")"
[ "$(podman inspect --format '{{.State.Pid}}' heird)" = "$pid1" ] || fail "the container's PID 1 changed"
is_state active "$U" || fail "$U is $(prop ActiveState "$U") after 20 reloads"
[ "$(prop NRestarts "$U")" = 0 ] || fail "NRestarts = $(prop NRestarts "$U")"
ok "figure: 20 systemctl reloads in $((t1 - t0)) ms under load: $(cat /tmp/load.json | grep -oE '"(ok|reconnects|refused|reset|closed_before_response|timeout)":[0-9]+' | tr '\n' ' ')"
ok "generation 1 -> $gen; MainPID (conmon) $conmon and the container's PID 1 ($pid1) unchanged"

# A reload whose new worker cannot start fails visibly; the old worker keeps serving.
cp /etc/heird/heird.toml /tmp/heird.toml.good
echo 'drain_timeout = "not a duration"' >> /etc/heird/heird.toml
if systemctl reload "$U"; then fail "systemctl reload succeeded with a bad heird.toml"; fi
cp /tmp/heird.toml.good /etc/heird/heird.toml
[ "$(http /info | json_num generation)" = "$gen" ] || fail "after the failed reload: $(http /info)"
is_state active "$U" || fail "$U is $(prop ActiveState "$U") after a failed reload"
ok "a reload with a bad heird.toml failed (systemctl reload exit non-zero); generation $gen still serves"

# The stop: SIGTERM to PID 1, the worker drains a request in flight, the container exits 0.
curl -sS --max-time 20 -o /tmp/slow.out -w '%{http_code}' 'http://127.0.0.1:8080/sleep?duration=2s' > /tmp/slow.code &
slow=$!
# Read by the worker: the server's end of the connection exists and its receive queue is empty.
read_by_server() { ss -Htn state established '( sport = :8080 )' | awk '$1 == 0 { found = 1 } END { exit !found }'; }
wait_for 5 "the worker to read the request in flight" read_by_server
t0=$(ms)
systemctl stop "$U" || fail "systemctl stop exited $?"
t1=$(ms)
wait "$slow" || fail "the request in flight failed: curl exit $?"
[ "$(cat /tmp/slow.code)" = 200 ] || fail "the request in flight got $(cat /tmp/slow.code)"
[ "$(prop Result "$U")" = success ] || fail "Result=$(prop Result "$U") after the stop"
[ "$(prop ActiveState "$U")" = inactive ] || fail "$U is $(prop ActiveState "$U") after the stop"
# (The whole journal read first: grep -q ending the pipe early would fail it under pipefail.)
exited_0() { local j; j=$(journalctl -u "$U" -o cat --no-pager); grep -q 'supervisor exiting code=0' <<< "$j"; }
wait_for 5 "PID 1's 'supervisor exiting code=0' in the journal ($(journalctl -u "$U" -o cat --no-pager | tail -n 3))" exited_0
[ -z "$(podman ps -aq)" ] || fail "a container is left: $(podman ps -a)"
ok "systemctl stop in $((t1 - t0)) ms drained the request in flight (200); Result=success, PID 1 exited 0, no container left"
