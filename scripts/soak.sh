#!/usr/bin/env bash
# The soak campaign: a replicated cache pair, an L4 balancer over it, HTTP backends and an L7
# balancer over them, all on 127.0.0.1 from the release binary, under steady bounded load for
# DURATION seconds while a seeded random schedule kills and restarts cache nodes and backends,
# drains and readies servers and reloads the balancers. It fails (exit 1) on a client-visible
# error outside every failover window, a descriptor leak, RSS growth past its bound, a pair
# that does not converge, or a process that exits by itself. See RELIABILITY.md, "Soak".
#
#   scripts/soak.sh                        # 600 s, a random seed (printed)
#   scripts/soak.sh --duration 60 --seed 7 # a short, reproducible run
#
# Environment: SOAK_DURATION, SOAK_SEED, SOAK_RATE (scales every client's request rate,
# default 1), SOAK_DIR (where configs, logs and CSVs go; default a new temp dir),
# OPSCONSOLE_BIN (default target/release/opsconsole).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${OPSCONSOLE_BIN:-$root/target/release/opsconsole}
duration=${SOAK_DURATION:-600}
seed=${SOAK_SEED:-$(( (RANDOM << 15) | RANDOM ))}
rate=${SOAK_RATE:-1}
dir=${SOAK_DIR:-}

while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$bin" ]; then
  echo "soak.sh: no binary at $bin (cargo build --release, or set OPSCONSOLE_BIN)" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "soak.sh: python3 is needed" >&2; exit 2; }

if [ -z "$dir" ]; then
  dir=$(mktemp -d "${TMPDIR:-/tmp}/opsconsole-soak.XXXXXX")
else
  mkdir -p "$dir"
fi
: > "$dir/pids"

driver=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$driver" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$driver" 2>/dev/null || true
  fi
  # Every process the driver started, by the pid it recorded, and only while that pid
  # still runs a command naming this campaign's directory.
  local pid name
  while read -r pid name; do
    [ -n "$pid" ] || continue
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$dir"; then
      kill -KILL "$pid" 2>/dev/null || true
      echo "soak.sh: stopped leftover $name (pid $pid)" >&2
    fi
  done < "$dir/pids"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "soak.sh: seed $seed, duration $duration s, rate x$rate, binary $bin ($("$bin" --version)), files in $dir"
python3 -u "$root/scripts/soak.py" --bin "$bin" --dir "$dir" --duration "$duration" \
  --seed "$seed" --rate "$rate" &
driver=$!
wait "$driver"
