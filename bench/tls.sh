#!/bin/sh
# TLS handshakes: full against resumed, and how many clients resume after a handoff.
#
#   bench/tls.sh [N]       (N sessions for the handoff part, default 100)
#
# Builds release, makes an ECDSA P-256 certificate with openssl, starts target/release/heird
# with it on a free port, and prints:
# 1. heird's CPU time per connection (from /proc/PID/stat, so the client's cost does not count)
#    for full and resumed handshakes: TLS 1.2 with `openssl s_time -new` / `-reuse`, TLS 1.3
#    with one `openssl s_client -sess_in` per connection (s_time cannot resume TLS 1.3: the
#    tickets come after the handshake and it does not read them);
# 2. N clients each save a session (`-sess_out`), one handoff (`heird reload`), then each
#    reconnects with its session (`-sess_in`): how many were resumed by the successor.
# Needs openssl (the command). Runs from the repository root.
set -eu
N=${1:-100}
cargo build --release -q
BIN=$PWD/target/release/heird
DIR=$(mktemp -d)
HEIRD=
cleanup() { [ -n "$HEIRD" ] && kill "$HEIRD" 2>/dev/null; sleep 0.3; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/key.pem" \
    -out "$DIR/cert.pem" -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
RUNTIME_DIRECTORY=$DIR "$BIN" serve --listen "$ADDR" --tls-cert "$DIR/cert.pem" \
    --tls-key "$DIR/key.pem" 2>"$DIR/heird.log" &
HEIRD=$!
until openssl s_client -connect "$ADDR" </dev/null >/dev/null 2>&1; do sleep 0.05; done

TCK=$(getconf CLK_TCK)
cpu_us() { awk -v t="$TCK" '{printf "%d", ($14+$15)*1000000/t}' "/proc/$1/stat"; }
req() { printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n'; sleep 0.05; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), openssl $(openssl version | cut -d' ' -f2)"
echo
echo "| handshake | connections | heird CPU per connection |"
echo "|---|---|---|"
for mode in new reuse; do
    c0=$(cpu_us "$HEIRD")
    out=$(openssl s_time -connect "$ADDR" -"$mode" -tls1_2 -time 4 2>&1)
    c1=$(cpu_us "$HEIRD")
    n=$(echo "$out" | awk '/connections in [0-9]+ real/ {print $1}')
    label=$([ "$mode" = new ] && echo "TLS 1.2 full" || echo "TLS 1.2 resumed (ticket)")
    echo "| $label | $n | $(( (c1 - c0) / n )) µs |"
done
M=300
req | openssl s_client -connect "$ADDR" -servername localhost -sess_out "$DIR/s13" >/dev/null 2>&1
for mode in full resumed; do
    c0=$(cpu_us "$HEIRD")
    reused=0
    i=0
    while [ $i -lt $M ]; do
        if [ "$mode" = full ]; then
            out=$(req | openssl s_client -connect "$ADDR" -servername localhost 2>&1) || true
        else
            out=$(req | openssl s_client -connect "$ADDR" -servername localhost -sess_in "$DIR/s13" 2>&1) || true
        fi
        echo "$out" | grep -q '^Reused' && reused=$((reused + 1))
        i=$((i + 1))
    done
    c1=$(cpu_us "$HEIRD")
    echo "| TLS 1.3 $mode ($reused of $M reused) | $M | $(( (c1 - c0) / M )) µs |"
done

echo
mkdir "$DIR/sess"
i=0
while [ $i -lt "$N" ]; do
    req | openssl s_client -connect "$ADDR" -servername localhost -sess_out "$DIR/sess/$i" >/dev/null 2>&1
    i=$((i + 1))
done
OLD=$HEIRD
HEIRD=$("$BIN" reload --socket "$DIR/control.sock" | sed -n 's/.*pid=\([0-9]*\).*/\1/p')
reused=0
offered=0
i=0
while [ $i -lt "$N" ]; do
    # A client that quit before the server's NewSessionTicket arrived has no ticket to offer.
    if openssl sess_id -in "$DIR/sess/$i" -noout -text 2>/dev/null | grep -q 'TLS session ticket:'; then
        offered=$((offered + 1))
        req | openssl s_client -connect "$ADDR" -servername localhost -sess_in "$DIR/sess/$i" 2>&1 \
            | grep -q '^Reused' && reused=$((reused + 1))
    fi
    i=$((i + 1))
done
echo "after a handoff (pid $OLD -> $HEIRD): $offered of $N clients had a ticket; $reused of those $offered resumed with the successor"
