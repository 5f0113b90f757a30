#!/usr/bin/env bash
# Measures replication on this machine:
#   1. full-copy ("marugoto") speed: LOAD_KEYS items of VALUE_SIZE bytes loaded into a master,
#      then a slave joins; time from the copy's start to its end, from the slave's log
#   2. cache throughput with replication on (a streaming pair, load on the master) vs off
#      (a standalone node), alternating, ROUNDS runs each, same load generator
#   3. failover: time from `kill -9` of the master to the slave answering a write, and from
#      `kill -STOP` (a silent master: heartbeat detection) to the same
# Everything listens on loopback; every run is bounded.
#
# Usage: benches/replication.sh            DURATION=5 ROUNDS=3 benches/replication.sh

set -euo pipefail

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-50}
LOAD_KEYS=${LOAD_KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
THREADS=${THREADS:-2}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
BIN=$PWD/target/release/opsconsole
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME ARGS...: runs opsconsole headless in the background, logging to $WORK/NAME.log;
# sets STARTED_PID and STARTED_PORT (its cache port).
start() {
    local name=$1
    shift
    "$BIN" --headless -p 0 -t "$THREADS" -m 1024 --log-dir "$WORK/logs" "$@" >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    local _
    for _ in $(seq 200); do
        STARTED_PORT=$(grep -o 'cache [a-z]* listening on [0-9.]*:[0-9]*' "$WORK/$name.log" | head -1 | sed 's/.*://') || true
        [ -n "${STARTED_PORT:-}" ] && return
        sleep 0.05
    done
    echo "error: $name did not start:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

wait_log() {
    local file=$1 pattern=$2 limit=${3:-120} _
    for _ in $(seq $((limit * 20))); do
        grep -q "$pattern" "$file" && return
        sleep 0.05
    done
    echo "error: '$pattern' never appeared in $file" >&2
    exit 1
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

bench() {
    "$BIN" bench cache --addr "127.0.0.1:$1" --conns "$CONNS" --ratio 1:9 --value-size "$VALUE_SIZE" \
        --keys 100000 --duration "$DURATION" --json
}

json_field() {
    python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"
}

# Seconds between two log lines' timestamps (RFC 3339 at the start of each line).
log_seconds_between() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys, datetime
path, first, last = sys.argv[1:]
def stamp(pattern):
    for line in open(path):
        if pattern in line:
            return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
    raise SystemExit(f"no '{pattern}' in {path}")
print(f"{(stamp(last) - stamp(first)).total_seconds():.3f}")
EOF
}

echo "machine: $(nproc) cores, $(uname -sr); opsconsole $("$BIN" --version | cut -d' ' -f2)"
echo

echo "== 1. full copy of $LOAD_KEYS items of $VALUE_SIZE bytes"
PM=$(free_port)
PS=$(free_port)
start master --role master --repl-listen "127.0.0.1:$PM" --peer "127.0.0.1:$PS"
MPID=$STARTED_PID
MPORT=$STARTED_PORT
"$BIN" bench cache --addr "127.0.0.1:$MPORT" --load --keys "$LOAD_KEYS" --value-size "$VALUE_SIZE" --json >/dev/null
start slave --role slave --repl-listen "127.0.0.1:$PS" --peer "127.0.0.1:$PM"
SPID=$STARTED_PID
SPORT=$STARTED_PORT
wait_log "$WORK/slave.log" "marugoto copy complete" 300
secs=$(log_seconds_between "$WORK/slave.log" "marugoto copying (receiving" "marugoto copy complete")
bytes=$(printf 'stats replication\r\n' | python3 -c '
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); s.sendall(sys.stdin.buffer.read()); out=b""
while not out.endswith(b"END\r\n"): out+=s.recv(65536)
print(next(l.split()[2] for l in out.decode().splitlines() if l.startswith("STAT repl_bytes_received")))' "$SPORT")
python3 -c "
items=$LOAD_KEYS; secs=$secs; b=$bytes
print(f'  copied {items} items ({b/1e6:.1f} MB on the wire) in {secs:.2f} s: {items/secs:,.0f} items/s, {b/1e6/secs:.1f} MB/s')"
wait_log "$WORK/slave.log" "replication: start" 60
echo

echo "== 2. throughput with replication on (streaming pair) vs off (standalone), ${DURATION}s runs"
start solo --role master
SOLO=$STARTED_PORT
SOLO_PID=$STARTED_PID
declare -a on off
for round in $(seq "$ROUNDS"); do
    o=$(bench "$SOLO" | json_field ops_per_sec)
    r=$(bench "$MPORT" | json_field ops_per_sec)
    off+=("$o")
    on+=("$r")
    printf '  round %d  off %12.1f ops/s   on %12.1f ops/s\n' "$round" "$o" "$r"
done
python3 -c "
import statistics
off=[$(IFS=,; echo "${off[*]}")]; on=[$(IFS=,; echo "${on[*]}")]
print(f'  median off {statistics.median(off):,.0f} ops/s, on {statistics.median(on):,.0f} ops/s: on/off x{statistics.median(on)/statistics.median(off):.2f}')"
stop "$SOLO_PID"
echo

echo "== 3. failover: time until the slave accepts a write as master"
measure_takeover() {
    python3 - "$SPORT" <<'EOF'
import socket, sys, time
port = int(sys.argv[1]); start = time.monotonic()
while time.monotonic() - start < 30:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.sendall(b"set failover 0 0 1\r\nx\r\nstats\r\n")
        out = b""
        while not out.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        if out.startswith(b"STORED") and b"STAT replication MASTER" in out:
            print(f"{time.monotonic() - start:.3f}")
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
sys.exit("the slave never took over")
EOF
}
kill -9 "$MPID"
echo "  kill -9 master:   slave took writes as master after $(measure_takeover) s"
# Re-pair: a fresh master joins the survivor (which stays master), then silence it.
start master2 --role master --repl-listen "127.0.0.1:$PM" --peer "127.0.0.1:$PS"
M2PID=$STARTED_PID
wait_log "$WORK/master2.log" "replication: start" 120
sleep 1
# Now master2 is the slave of the survivor; STOP the survivor and watch master2 take over.
SPORT=$(grep -o 'cache [a-z]* listening on [0-9.]*:[0-9]*' "$WORK/master2.log" | head -1 | sed 's/.*://')
kill -STOP "$SPID"
echo "  kill -STOP master: slave took writes as master after $(measure_takeover) s (heartbeat timeout 3 s)"
kill -CONT "$SPID"
stop "$M2PID"
