#!/bin/sh
# TLS handshakes: full against resumed, beside a plain tokio-rustls server, and how many clients
# resume after a handoff.
#
#   bench/tls.sh [N]       (N sessions for the handoff part, default 100)
#   ROUNDS=2 M=300         (tables, TLS 1.3 connections per s_client row)
#
# Builds release, makes an ECDSA P-256 certificate with openssl, starts target/release/heird
# and the reference (examples/bench-tls-reference.rs: tokio-rustls + hyper with heird's
# provider, versions, ALPN and resumption settings) with it on two free ports, and prints:
# 1. ROUNDS tables of each server's CPU time per connection (from /proc/PID/stat, so the
#    client's cost does not count) and the ratio heird/reference, for full and resumed
#    handshakes: TLS 1.2 with `openssl s_time -new` / `-reuse`, TLS 1.3 with one
#    `openssl s_client -sess_in` and one GET per connection (s_time cannot resume TLS 1.3: the
#    tickets come after the handshake and it does not read them), and, as a check of that
#    method, TLS 1.3 full with a GET by `s_time -new -www` (back to back, no process and no
#    sleep per connection); each row alternates heird and the reference (see below);
# 2. each server's CPU while idle, and the wall time of an s_client connection;
# 3. N clients each save a session (`-sess_out`), one handoff (`heird reload`), then each
#    reconnects with its session (`-sess_in`): how many were resumed by the successor.
# Needs openssl (the command). Runs from the repository root.
set -eu
N=${1:-100}
ROUNDS=${ROUNDS:-2}
M=${M:-300}
cargo build --release -q --bin heird --example bench-tls-reference
BIN=$PWD/target/release/heird
REF_BIN=$PWD/target/release/examples/bench-tls-reference
DIR=$(mktemp -d)
HEIRD=
REF=
cleanup() {
    for p in $HEIRD $REF; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/key.pem" \
    -out "$DIR/cert.pem" -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ADDR=127.0.0.1:$(free_port)
REF_ADDR=127.0.0.1:$(free_port)
RUNTIME_DIRECTORY=$DIR "$BIN" serve --listen "$ADDR" --tls-cert "$DIR/cert.pem" \
    --tls-key "$DIR/key.pem" 2>"$DIR/heird.log" &
HEIRD=$!
"$REF_BIN" "$REF_ADDR" "$DIR/cert.pem" "$DIR/key.pem" >"$DIR/ref.log" 2>&1 &
REF=$!
for a in "$ADDR" "$REF_ADDR"; do
    until openssl s_client -connect "$a" </dev/null >/dev/null 2>&1; do sleep 0.05; done
done

TCK=$(getconf CLK_TCK)
cpu_us() { awk -v t="$TCK" '{printf "%d", ($14+$15)*1000000/t}' "/proc/$1/stat"; }
now_ms() { date +%s%3N; }
req() { printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n'; sleep 0.05; }

# Each row alternates the two servers (s_time: four 1-second runs each; s_client: one
# connection each, M times), so that both see the same load; a server is idle while the other
# one's client runs, so its CPU is read once before the row and once after.
# stime ARGS...: "heird-connections heird-µs reference-connections reference-µs".
stime() {
    h0=$(cpu_us "$HEIRD") r0=$(cpu_us "$REF") hn=0 rn=0 k=0
    while [ $k -lt 4 ]; do
        for a in "$ADDR" "$REF_ADDR"; do
            n=$(openssl s_time -connect "$a" -time 1 "$@" 2>&1 | awk '/connections in [0-9]+ real/ {print $1}')
            if [ "$a" = "$ADDR" ]; then hn=$((hn + n)); else rn=$((rn + n)); fi
        done
        k=$((k + 1))
    done
    echo "$hn $(( ($(cpu_us "$HEIRD") - h0) / hn )) $rn $(( ($(cpu_us "$REF") - r0) / rn ))"
}

# sclient MODE: "heird-reused heird-µs reference-reused reference-µs" for M connections to
# each of one s_client and one GET, full (MODE=full) or resumed from a saved session.
sclient() {
    for a in "$ADDR" "$REF_ADDR"; do
        # A client that quits before the NewSessionTicket arrives (its start took longer than
        # req's sleep) saves a session with no ticket: try again.
        k=0
        until [ $k -ge 20 ] || openssl sess_id -in "$DIR/s13-$a" -noout -text 2>/dev/null |
            grep -q 'TLS session ticket:'; do
            req | openssl s_client -connect "$a" -servername localhost -sess_out "$DIR/s13-$a" >/dev/null 2>&1
            k=$((k + 1))
        done
    done
    t0=$(now_ms) h0=$(cpu_us "$HEIRD") r0=$(cpu_us "$REF") hr=0 rr=0 i=0
    while [ $i -lt "$M" ]; do
        for a in "$ADDR" "$REF_ADDR"; do
            if [ "$1" = full ]; then
                out=$(req | openssl s_client -connect "$a" -servername localhost 2>&1) || true
            else
                out=$(req | openssl s_client -connect "$a" -servername localhost -sess_in "$DIR/s13-$a" 2>&1) || true
            fi
            if echo "$out" | grep -q '^Reused'; then
                if [ "$a" = "$ADDR" ]; then hr=$((hr + 1)); else rr=$((rr + 1)); fi
            fi
        done
        i=$((i + 1))
    done
    echo $(( ($(now_ms) - t0) / M / 2 )) >>"$DIR/wall"
    echo "$hr $(( ($(cpu_us "$HEIRD") - h0) / M )) $rr $(( ($(cpu_us "$REF") - r0) / M ))"
}

# Precise CPU time (ns) of a process's live threads, for the idle reading (none exits then).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), openssl $(openssl version | cut -d' ' -f2); heird $(git rev-parse --short HEAD 2>/dev/null || echo '?'); load $(cut -d' ' -f1-3 /proc/loadavg)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo
    echo "round $r of $ROUNDS"
    echo
    echo "| handshake | client | heird connections | heird CPU per connection | reference connections | reference CPU per connection | heird / reference |"
    echo "|---|---|---|---|---|---|---|"
    for row in 12new 12reuse 13full 13resumed 13www; do
        case $row in
            12new) label="TLS 1.2 full" client='`s_time -new`' ;;
            12reuse) label="TLS 1.2 resumed (ticket)" client='`s_time -reuse`' ;;
            13full) label="TLS 1.3 full, one GET" client='`s_client` per connection' ;;
            13resumed) label="TLS 1.3 resumed, one GET" client='`s_client -sess_in` per connection' ;;
            13www) label="TLS 1.3 full, one GET" client='`s_time -new -www` (back to back)' ;;
        esac
        case $row in
            12new) set -- $(stime -new -tls1_2) ;;
            12reuse) set -- $(stime -reuse -tls1_2) ;;
            13full) set -- $(sclient full) ;;
            13resumed) set -- $(sclient resumed) ;;
            13www) set -- $(stime -new -tls1_3 -www /healthz) ;;
        esac
        case $row in
            13full | 13resumed) h="$M ($1 reused)" f="$M ($3 reused)" ;;
            *) h=$1 f=$3 ;;
        esac
        echo "| $label | $client | $h | $2 µs | $f | $4 µs | $(ratio "$2" "$4") |"
    done
    r=$((r + 1))
done
echo
h0=$(cpu_ns "$HEIRD") r0=$(cpu_ns "$REF")
sleep 5
echo "idle over 5 s: heird $(( ($(cpu_ns "$HEIRD") - h0) / 5000 )) µs of CPU per second, reference $(( ($(cpu_ns "$REF") - r0) / 5000 ))"
echo "wall time of an s_client connection: $(sort -n "$DIR/wall" | head -1)–$(sort -n "$DIR/wall" | tail -1) ms; load $(cut -d' ' -f1-3 /proc/loadavg)"

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
