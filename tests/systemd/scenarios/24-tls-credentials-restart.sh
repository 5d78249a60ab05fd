#!/bin/bash
# HTTPS with the shipped credentials drop-in (deploy/heird-tls-credentials.conf: LoadCredential=
# tls.crt and tls.key, DynamicUser=yes, the key readable by root only): heird finds the pair in
# $CREDENTIALS_DIRECTORY with no path in its config and serves HTTPS on its standalone listener,
# as a restart and a reload, which read the credentials again, do too.
# A TLS session saved by `openssl s_client -sess_out` resumes (`Reused`) with the process after
# a `systemctl restart` (the ticket keys waited in the fd store) and after a `systemctl reload`
# (handed over to the successor).
#
# systemd sets the credentials up in a child with its own mount namespace, which moves the
# finished ramfs/tmpfs onto /run/credentials/heird.service; that reaches the service only when
# "/" has shared propagation (sandbox.sh sets it; systemd does it itself outside containers).
. "$(dirname "$0")/lib.sh"

command -v openssl >/dev/null || cannot_run "no openssl command in this root (package openssl)"

mkdir -p /etc/ssl/heird
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout /etc/ssl/heird/privkey.pem -out /etc/ssl/heird/fullchain.pem -days 30 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null || fail "openssl req"
chmod 0600 /etc/ssl/heird/privkey.pem

mkdir -p /etc/systemd/system/heird.service.d
cp "$HEIRD_PROJECT/deploy/heird-tls-credentials.conf" /etc/systemd/system/heird.service.d/tls-credentials.conf
systemctl daemon-reload
grep -q '^\[tls\]' /etc/heird/heird.toml && fail "heird.toml has a [tls] table: the pair must come from the credentials"

https() {
  curl -sS --fail --max-time 10 --cacert /etc/ssl/heird/fullchain.pem \
    --resolve localhost:8080:127.0.0.1 "https://localhost:8080$1"
}
# session IN|OUT FILE: one /info over TLS 1.3 saving or resuming a session; prints "New pid" or
# "Reused pid".
session() {
  local out how pid
  out=$( (printf 'GET /info HTTP/1.1\r\nHost: localhost\r\n\r\n'; sleep 0.5) |
    openssl s_client -connect 127.0.0.1:8080 -servername localhost -CAfile /etc/ssl/heird/fullchain.pem \
      "-sess_${1,,}" "$2" 2>&1) || true
  how=$(grep -oE '^(New|Reused), TLSv1\.3' <<<"$out" | head -n 1 | cut -d, -f1) || true
  pid=$(grep -oE '"pid":[0-9]+' <<<"$out" | head -n 1 | cut -d: -f2) || true
  echo "${how:-none} ${pid:-none}"
}

is_state inactive heird.socket && is_state inactive heird-unix.socket || fail "a socket unit is active: not standalone"
if ! systemctl start heird.service; then
  journalctl -q --no-pager -u heird.service -n 5 -o cat | sed 's/^/  /'
  fail "systemctl start heird.service failed (no credentials? they need \"/\" shared: see sandbox.sh)"
fi
https_up() { https /healthz >/dev/null 2>&1; }
end=$(( $(ms) + 10000 ))
until https_up || [ "$(ms)" -ge "$end" ]; do sleep 0.1; done
if ! https_up; then
  echo "  LoadCredential=$(prop LoadCredential); environment of MainPID: $(tr '\0' ' ' < "/proc/$(mainpid)/environ")"
  ls -la "/run/credentials/heird.service" 2>&1 | sed "s/^/  /" || true
  https /healthz || true
  fail "no HTTPS answer within 10 s (heird serves TLS only with the credentials; they need \"/\" shared: see sandbox.sh)"
fi
pid0=$(mainpid)
https /info | grep -q "\"pid\":$pid0" || fail "/info over HTTPS is not from MainPID $pid0"
heird_log > /tmp/heird.log
grep -q 'tls: certificate loaded' /tmp/heird.log || fail "no 'certificate loaded' line"
# credentials_loaded PID: the process serves the pair systemd copied for it, which its dynamic
# user can read while the original key (0600 root) stays out of its reach.
credentials_loaded() {
  local dir
  dir=$(tr '\0' '\n' < "/proc/$1/environ" | sed -n 's/^CREDENTIALS_DIRECTORY=//p')
  [ "$dir" = /run/credentials/heird.service ] || fail "pid $1: CREDENTIALS_DIRECTORY='$dir'"
  [ -s "$dir/tls.crt" ] && [ -s "$dir/tls.key" ] || { ls -la "$dir" 2>&1 | sed 's/^/  /' || true; fail "pid $1: no tls.crt/tls.key in $dir"; }
  cmp -s "$dir/tls.key" /etc/ssl/heird/privkey.pem || fail "$dir/tls.key is not the key in /etc/ssl/heird"
  setpriv --reuid "$(stat -c %u "/proc/$1")" --regid "$(stat -c %g "/proc/$1")" --clear-groups \
    cat /etc/ssl/heird/privkey.pem >/dev/null 2>&1 && fail "the service's user can read /etc/ssl/heird/privkey.pem itself"
  local logged
  journalctl --sync 2>/dev/null || true
  logged=$(journalctl -q --no-pager "_PID=$1" -o export | grep -a '^F_CERT=') || true
  grep -qx "F_CERT=$dir/tls.crt" <<<"$logged" || fail "pid $1 did not log cert=$dir/tls.crt (logged: '$logged')"
}
credentials_loaded "$pid0"
[ "$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/)" = 400 ] \
  || fail "plain HTTP on the TLS port did not get 400"
wait_for 5 "the ticket keys in the fd store (NFileDescriptorStore=$(nstore))" store_is 3
show_store
ok "HTTPS with the pair from LoadCredential= (/run/credentials/heird.service of MainPID $pid0); the listener, the ticket keys and the metrics' counters in the fd store"

read -r how pid <<<"$(session OUT /tmp/s1)"
[ "$how $pid" = "New $pid0" ] || fail "first session: '$how $pid', expected 'New $pid0'"

systemctl restart heird.service || fail "systemctl restart exited $?"
wait_for 10 "HTTPS answers after the restart" https_up
pid1=$(mainpid)
[ "$pid1" != "$pid0" ] || fail "MainPID still $pid0 after the restart"
passed_has "$pid1" tls-ticket-keys || fail "LISTEN_FDNAMES=$(passed_names "$pid1") lacks tls-ticket-keys"
read -r how pid <<<"$(session IN /tmp/s1)"
[ "$how $pid" = "Reused $pid1" ] || fail "after the restart: '$how $pid', expected 'Reused $pid1'"
credentials_loaded "$pid1"
ok "systemctl restart: $pid0 -> $pid1, the session saved before it resumed (Reused)"

systemctl reload heird.service || fail "systemctl reload exited $?"
pid2=$(mainpid)
[ "$pid2" != "$pid1" ] || fail "MainPID still $pid1 after the reload"
read -r how pid <<<"$(session IN /tmp/s1)"
[ "$how $pid" = "Reused $pid2" ] || fail "after the reload: '$how $pid', expected 'Reused $pid2'"
store_is 3 || fail "NFileDescriptorStore=$(nstore) after the reload, expected 3"
credentials_loaded "$pid2"
ok "systemctl reload: $pid1 -> $pid2, the same session resumed again"
