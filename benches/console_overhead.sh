#!/usr/bin/env bash
# What the console costs: the demo (configs/demo.toml: a replicating pair plus its gentle
# traffic) run with the console open in a real terminal (a private tmux server) and run
# --headless, alternately, in one run:
#
#   1. idle: CPU seconds each process uses over IDLE seconds (the console refreshing at its
#      default 4 Hz on the Overview view, and on the Replication view)
#   2. load: `opsconsole bench cache` against the master, ROUNDS runs each way; the ratio of
#      the medians says how much throughput the open console takes away
#
# Usage: benches/console_overhead.sh        DURATION=10 ROUNDS=3 IDLE=20 by default

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-20}
CONNS=${CONNS:-50}

die() {
    echo "error: $*" >&2
    exit 1
}

command -v tmux >/dev/null || die "tmux not found; install it with: apt-get install -y tmux"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=$PWD/target/release/opsconsole
WORK=$(mktemp -d)
SOCK=$WORK/tmux.sock
PID=

stop() {
    if [[ -n $PID ]]; then
        kill "$PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    fi
    tmux -S "$SOCK" kill-server 2>/dev/null || true
    PID=
}
cleanup() {
    stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MASTER_PORT=$(sed -nE '/^\[master\]/,/^\[/ s/^port *= *([0-9]+).*/\1/p' configs/demo.toml | head -1)
[[ -n $MASTER_PORT ]] || die "no [master] port in configs/demo.toml"

wait_listening() {
    for _ in $(seq 200); do
        kill -0 "$PID" 2>/dev/null || die "opsconsole exited at start (logs in $WORK)"
        (exec 3<>"/dev/tcp/127.0.0.1/$MASTER_PORT") 2>/dev/null && return
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$MASTER_PORT"
}

# start console|headless: the demo in a 120x40 terminal, or as a daemon.
start() {
    case $1 in
        console)
            tmux -S "$SOCK" new-session -d -s bench -x 120 -y 40 \
                "exec $BIN --role demo --config configs/demo.toml --log-dir $WORK/log"
            PID=$(tmux -S "$SOCK" display-message -p -t bench '#{pane_pid}')
            ;;
        headless)
            "$BIN" --role demo --config configs/demo.toml --headless --log-dir "$WORK/log" \
                >"$WORK/headless.log" 2>&1 &
            PID=$!
            ;;
    esac
    wait_listening
    # Let the start-up copy of the preloaded items finish before measuring.
    sleep 6
}

cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# idle_cpu: CPU % of one core used by $PID over IDLE seconds.
idle_cpu() {
    local before after hz
    hz=$(getconf CLK_TCK)
    before=$(cpu_ticks "$PID")
    sleep "$IDLE"
    after=$(cpu_ticks "$PID")
    awk -v d=$((after - before)) -v hz="$hz" -v s="$IDLE" 'BEGIN { printf "%.2f", 100 * d / hz / s }'
}

bench() {
    "$BIN" bench cache --addr "127.0.0.1:$MASTER_PORT" --conns "$CONNS" --duration "$DURATION" \
        --warmup 1 --json | sed -nE 's/.*"ops_per_sec":([0-9.]+).*/\1/p'
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== building"
cargo build --release
echo "machine: $(nproc) cores, $(uname -sr); opsconsole $("$BIN" --version)"

echo
echo "== idle CPU over ${IDLE}s (% of one core; includes the demo's own traffic and replication)"
start headless
printf '  headless                      %s%%\n' "$(idle_cpu)"
stop
start console
printf '  console, Overview view        %s%%\n' "$(idle_cpu)"
tmux -S "$SOCK" send-keys -t bench 2
printf '  console, Replication view     %s%%\n' "$(idle_cpu)"
stop

echo
echo "== load: bench cache against the master, $CONNS conns, ${DURATION}s, $ROUNDS rounds each"
HEADLESS=()
CONSOLE=()
for round in $(seq "$ROUNDS"); do
    start headless
    HEADLESS+=("$(bench)")
    stop
    start console
    CONSOLE+=("$(bench)")
    stop
    printf '  round %d  headless %10.1f ops/s   console %10.1f ops/s\n' "$round" \
        "${HEADLESS[-1]}" "${CONSOLE[-1]}"
done
H=$(median "${HEADLESS[@]}")
C=$(median "${CONSOLE[@]}")
printf '  median   headless %10.1f ops/s   console %10.1f ops/s   console/headless x%s\n' \
    "$H" "$C" "$(awk -v a="$C" -v b="$H" 'BEGIN { printf "%.3f", a / b }')"
