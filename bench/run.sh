#!/usr/bin/env bash
# heird's benchmark, one command: reload under load (heird's handoff and a naive stop-then-start,
# same run), throughput against plain axum, and footprint. See bench/README.md.
#
#   bench/run.sh [--long] [--write bench/RESULTS.md] [--go] [more bench-heird flags]
#   bench/run.sh --h2 [ROUNDS] [RESTARTS]   HTTP/2 instead (bench/h2.sh)
#
# --long    100+ handoffs per reload run (T = 210 s), 9 throughput rounds
# --write F write the tables and raw numbers into F (markdown; this mode's block is replaced)
# --go      also measure a Go net/http hello (installs golang-go when missing)
# Every other flag goes to the driver: `target/release/examples/bench-heird --help`.
# Paths are relative to the repository root (the script runs from there).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --h2 ]; then
  shift
  exec bench/h2.sh "$@"
fi

command_line="bench/run.sh${*:+ $*}"
args=()
go=0
for a in "$@"; do
  case "$a" in
    --go) go=1 ;;
    *) args+=("$a") ;;
  esac
done

# Tools: wrk (client), taskset (pinning), strip (footprint); golang-go only with --go.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v strip >/dev/null || missing+=(binutils)
if [ "$go" = 1 ] && ! command -v go >/dev/null; then missing+=(golang-go); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bench: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  echo "bench: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "bench: cargo build --release (heird, bench-heird, bench-plain-axum, bench-heird-hello)" >&2
cargo build --release --bin heird --example bench-heird --example bench-plain-axum \
  --example bench-heird-hello >&2
# The instructions per request of bench/callgrind.sh (run apart: it needs valgrind and a
# build with line tables) are drawn beside the CPU figures.
[ -f bench/instructions.txt ] && args+=(--instructions bench/instructions.txt)

if [ "$go" = 1 ]; then
  mkdir -p target/bench-go
  GOCACHE="$PWD/target/bench-go/cache" GOPATH="$PWD/target/bench-go/path" GO111MODULE=off \
    go build -o target/bench-go/go-hello bench/go-hello/main.go
  args+=(--go-bin target/bench-go/go-hello)
fi

exec target/release/examples/bench-heird --command "$command_line" "${args[@]}"
