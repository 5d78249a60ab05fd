#!/bin/bash
# Scenario 02 (reload under load, then 20 reloads in a row: 0 failed) with the shipped
# Type=notify-reload drop-in: systemd itself sends SIGUSR2 and waits for RELOADING=1 ... READY=1.
# systemd >= 253 only.
. "$(dirname "$0")/lib.sh"
needs_systemd 253 "Type=notify-reload"
use_notify_reload
. "$(dirname "$0")/02-reload-under-load.sh"
