#!/bin/bash
# Scenario 25 with the Quadlet units (deploy/quadlet/heird-podman.container + .socket): Quadlet's
# generator writes heird-podman.service; 20 `systemctl reload` under load lose nothing, a failed
# reload is visible, `systemctl stop` drains. Not applicable where podman has no Quadlet
# (Debian 12's 4.3).
# run.sh: needs-root podman crun
QUADLET=1 exec "$(dirname "$0")/25-podman-reload.sh"
