#!/usr/bin/env bash
# Measures opsconsole's cache against Debian's memcached on this machine, with the same load
# generator (`opsconsole bench cache`) and the same server thread count and memory limit.
#
#   1. request mix: memcached and opsconsole alternate, ROUNDS runs each, one request in flight
#      per connection; prints every run and opsconsole/memcached ratios of the medians
#   2. the same with PIPELINE-deep pipelining
#   3. memory: fresh servers, LOAD_KEYS keys stored once into each, then VmRSS of both
#
# Runs alternate so that drift on the box (thermal, other tenants) hits both servers alike.
# Everything listens on loopback only, and every run is bounded by DURATION.
#
# Usage: benches/cache_vs_memcached.sh          (from anywhere inside the repository)
#        DURATION=5 ROUNDS=3 benches/cache_vs_memcached.sh

set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-20}          # measured seconds per run
WARMUP=${WARMUP:-1}               # unmeasured seconds before each run
CONNS=${CONNS:-50}                # client connections per run
ROUNDS=${ROUNDS:-2}               # runs per server and section (at least 2)
RATIO=${RATIO:-1:9}               # SET:GET weights
VALUE_SIZE=${VALUE_SIZE:-100}     # bytes per value
KEYS=${KEYS:-100000}              # key space of the mixed runs
PIPELINE=${PIPELINE:-16}          # depth of the pipelined section
LOAD_KEYS=${LOAD_KEYS:-1000000}   # keys stored before reading RSS
SERVER_THREADS=${SERVER_THREADS:-2}
CLIENT_THREADS=${CLIENT_THREADS:-1}
MEMORY_MB=${MEMORY_MB:-1024}
MEMCACHED=${MEMCACHED:-memcached}

(( ROUNDS >= 2 )) || die "ROUNDS must be at least 2 (got '$ROUNDS')"
command -v "$MEMCACHED" >/dev/null ||
    die "'$MEMCACHED' not found; install it with: apt-get install -y memcached"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=target/release/opsconsole
WORK=$(mktemp -d)
SERVER_PIDS=()

stop_all_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
}

cleanup() {
    stop_all_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server memcached|opsconsole: starts a fresh server and sets SERVER_PID and SERVER_PORT.
# Runs in this shell (never in $(...)), so the exit trap knows every server to stop.
start_server() {
    local kind=$1 port log
    port=$(free_port)
    log="$WORK/$kind-$port.log"
    case $kind in
        memcached)
            # memcached refuses to run as root unless told which user to become.
            local as_user=()
            [[ $EUID -eq 0 ]] && as_user=(-u nobody)
            "$MEMCACHED" "${as_user[@]}" -l 127.0.0.1 -p "$port" -U 0 \
                -t "$SERVER_THREADS" -m "$MEMORY_MB" >"$log" 2>&1 &
            ;;
        opsconsole)
            "$BIN" --role master --headless -l 127.0.0.1 -p "$port" \
                -t "$SERVER_THREADS" -m "$MEMORY_MB" >"$log" 2>&1 &
            ;;
        *) die "unknown server kind '$kind'" ;;
    esac
    SERVER_PID=$!
    SERVER_PORT=$port
    SERVER_PIDS+=("$SERVER_PID")
    wait_until_listening "$SERVER_PID" "$port" "$kind" "$log"
}

# json_field JSON NAME: the value of one field of the bench's one-line JSON report.
json_field() {
    sed -nE "s/.*\"$2\":\"?([^,\"}]*).*/\1/p" <<<"$1"
}

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# bench PORT EXTRA_ARGS...: one run; prints its JSON line.
bench() {
    local port=$1
    shift
    "$BIN" bench cache --addr "127.0.0.1:$port" --conns "$CONNS" --ratio "$RATIO" \
        --value-size "$VALUE_SIZE" --keys "$KEYS" --duration "$DURATION" --warmup "$WARMUP" \
        --threads "$CLIENT_THREADS" --json "$@"
}

print_run() {
    local name=$1 round=$2 json=$3 errors
    errors=$(json_field "$json" errors)
    printf '  %-10s round %d  %12.1f ops/s   p50 %8.1f   p99 %8.1f   p99.9 %8.1f us   errors %s\n' \
        "$name" "$round" "$(json_field "$json" ops_per_sec)" "$(json_field "$json" p50_us)" \
        "$(json_field "$json" p99_us)" "$(json_field "$json" p999_us)" "$errors"
    [[ $errors == 0 ]] || echo "  warning: $name reported errors: $(json_field "$json" error_kinds)"
}

# compare TITLE EXTRA_ARGS...: alternates the two servers ROUNDS times and compares medians.
compare() {
    local title=$1 round json
    shift
    local mc_ops=() mc_p99=() oc_ops=() oc_p99=()
    echo
    echo "== $title"
    for round in $(seq "$ROUNDS"); do
        json=$(bench "$MC_PORT" "$@")
        print_run memcached "$round" "$json"
        mc_ops+=("$(json_field "$json" ops_per_sec)")
        mc_p99+=("$(json_field "$json" p99_us)")

        json=$(bench "$OC_PORT" "$@")
        print_run opsconsole "$round" "$json"
        oc_ops+=("$(json_field "$json" ops_per_sec)")
        oc_p99+=("$(json_field "$json" p99_us)")
    done
    local mc_ops_med oc_ops_med mc_p99_med oc_p99_med
    mc_ops_med=$(median "${mc_ops[@]}")
    oc_ops_med=$(median "${oc_ops[@]}")
    mc_p99_med=$(median "${mc_p99[@]}")
    oc_p99_med=$(median "${oc_p99[@]}")
    printf '  median     memcached %.1f ops/s p99 %.1f us | opsconsole %.1f ops/s p99 %.1f us\n' \
        "$mc_ops_med" "$mc_p99_med" "$oc_ops_med" "$oc_p99_med"
    echo "  opsconsole/memcached: ops/s x$(ratio "$oc_ops_med" "$mc_ops_med") (higher is better)," \
        "p99 x$(ratio "$oc_p99_med" "$mc_p99_med") (lower is better)"
}

echo "== building"
cargo build --release
echo
echo "machine:    $(nproc) cores, $(uname -sr)"
echo "memcached:  $("$MEMCACHED" -V)"
echo "opsconsole: $("$BIN" --version)"
echo "servers:    -t $SERVER_THREADS -m $MEMORY_MB, loopback; client: $CLIENT_THREADS thread(s)"
echo "workload:   $CONNS conns, set:get $RATIO, $VALUE_SIZE-byte values, $KEYS keys," \
    "${DURATION}s runs after ${WARMUP}s warmup, $ROUNDS rounds per server"

start_server memcached
MC_PORT=$SERVER_PORT
start_server opsconsole
OC_PORT=$SERVER_PORT
compare "request mix, one request in flight per connection"
compare "request mix, pipeline $PIPELINE" --pipeline "$PIPELINE"
stop_all_servers

echo
echo "== memory after storing $LOAD_KEYS keys of $VALUE_SIZE bytes into fresh servers"
declare -A LOADED_RSS_KB
for kind in memcached opsconsole; do
    start_server "$kind"
    idle_kb=$(rss_kb "$SERVER_PID")
    json=$("$BIN" bench cache --addr "127.0.0.1:$SERVER_PORT" --load --keys "$LOAD_KEYS" \
        --value-size "$VALUE_SIZE" --conns "$CONNS" --pipeline "$PIPELINE" --json)
    loaded_kb=$(rss_kb "$SERVER_PID")
    printf '  %-10s stored %s items at %.1f items/s, errors %s; VmRSS idle %d KiB, loaded %d KiB\n' \
        "$kind" "$(json_field "$json" sets)" "$(json_field "$json" ops_per_sec)" \
        "$(json_field "$json" errors)" "$idle_kb" "$loaded_kb"
    LOADED_RSS_KB[$kind]=$loaded_kb
done
echo "  opsconsole/memcached: VmRSS x$(ratio "${LOADED_RSS_KB[opsconsole]}" "${LOADED_RSS_KB[memcached]}")" \
    "(lower is better)"
