# shellcheck shell=sh
# Installed as /usr/share/heird/units-changed.sh and sourced by the Debian postinst and the RPM
# %post (the new package's copy: it is unpacked before they run). Decides whether an upgrade may hand over (reload) or
# must restart heird.service, and records the shipped units for the next upgrade.
#
# A handoff reuses the running process's argv, environment and sandbox. When the package ships
# another heird.service, only a restart applies it. /var/lib/heird/units.sha256 holds the
# sha256sum of the three unit files as the previous install or upgrade left them; no record (an
# upgrade from a package without it) counts as changed.
#
# heird_units_record ROOT: compares, then writes the record. Sets heird_service_changed and
# heird_sockets_changed ("yes" or "no"; "yes" both when no record was there).
heird_units_record() {
    _hr_dir="$1/usr/lib/systemd/system"
    _hr_state="$1/var/lib/heird/units.sha256"
    heird_service_changed=yes heird_sockets_changed=yes
    _hr_new=$(cd "$_hr_dir" && sha256sum heird.service heird.socket heird-unix.socket) || return 0
    if [ -f "$_hr_state" ]; then
        _hr_line=$(printf '%s\n' "$_hr_new" | grep ' heird.service$')
        grep -qxF "$_hr_line" "$_hr_state" && heird_service_changed=no
        heird_sockets_changed=no
        for _hr_u in heird.socket heird-unix.socket; do
            _hr_line=$(printf '%s\n' "$_hr_new" | grep " $_hr_u\$")
            grep -qxF "$_hr_line" "$_hr_state" || heird_sockets_changed=yes
        done
    fi
    mkdir -p "${_hr_state%/*}"
    printf '%s\n' "$_hr_new" > "$_hr_state.new" && mv "$_hr_state.new" "$_hr_state"
}
