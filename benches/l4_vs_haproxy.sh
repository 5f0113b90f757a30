#!/usr/bin/env bash
# Measures opsconsole's L4 balancer (`--role l4`) against Debian's HAProxy in `mode tcp` on
# this machine: the same two nginx backends, the same load generator (wrk), the same number of
# balancer threads, round robin, no health checks on either side.
#
#   1. keep-alive: requests/s and p99 latency, CONNS connections, a SMALL_BYTES-byte file
#   2. new connections/s: the same with `Connection: close` (one request per connection, so
#      every request is a fresh client connection and a fresh backend connection)
#   3. bulk: MB/s (10^6 bytes) fetching a BULK_MB MiB file over BULK_CONNS connections
#
# Each measure alternates haproxy and opsconsole, ROUNDS runs each, a freshly started balancer
# per run (the two never run at the same time, so they never compete for the CPU), a WARMUP
# second unmeasured wrk run first. Every run is printed, then the medians and the
# opsconsole/haproxy ratio of the medians. wrk straight at one nginx port gives a baseline.
# The balancer's CPU use during the measured run (% of one core, all its threads) is printed too,
# and the ratio of CPU spent per request (connection, MB).
# Everything listens on loopback only, on ports picked at run time, and every run is bounded.
#
# Usage: benches/l4_vs_haproxy.sh                 (from anywhere inside the repository)
#        DURATION=5 ROUNDS=3 THREADS=2 benches/l4_vs_haproxy.sh
#        MEASURES=close benches/l4_vs_haproxy.sh      (any of: small close bulk)
#        SPLICE=off benches/l4_vs_haproxy.sh          (both copy through user space)

set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}        # measured seconds per run
WARMUP=${WARMUP:-1}             # unmeasured seconds before each run
ROUNDS=${ROUNDS:-5}             # runs per balancer and measure (at least 2)
THREADS=${THREADS:-1}           # balancer threads (haproxy nbthread, opsconsole [l4] threads);
                                # 1 leaves the other of 2 cores to wrk and nginx
CONNS=${CONNS:-50}              # wrk connections, measures 1 and 2
BULK_CONNS=${BULK_CONNS:-4}     # wrk connections, measure 3
WRK_THREADS=${WRK_THREADS:-1}   # wrk threads
NGINX_WORKERS=${NGINX_WORKERS:-1}
SMALL_BYTES=${SMALL_BYTES:-100} # size of the small file
BULK_MB=${BULK_MB:-64}          # size of the large file, MiB
MEASURES=${MEASURES:-small close bulk} # which of the three to run
SPLICE=${SPLICE:-auto}          # auto: both balancers splice(2) bulk transfers (haproxy
                                # `option splice-auto`, opsconsole `splice = "auto"`);
                                # off: both copy through user space
HAPROXY=${HAPROXY:-haproxy}
NGINX=${NGINX:-nginx}
WRK=${WRK:-wrk}

(( ROUNDS >= 2 )) || die "ROUNDS must be at least 2 (got '$ROUNDS')"
(( THREADS >= 1 )) || die "THREADS must be at least 1 (got '$THREADS')"
[[ $SPLICE == auto || $SPLICE == off ]] || die "SPLICE must be auto or off (got '$SPLICE')"
need_tools "apt-get install -y haproxy nginx wrk curl" "$HAPROXY" "$NGINX" "$WRK" curl

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=$PWD/target/release/opsconsole
WORK=$(mktemp -d)
NGINX_PID=
BALANCER_PID=

stop_balancer() {
    stop_pid "$BALANCER_PID"
    BALANCER_PID=
}

cleanup() {
    stop_balancer
    stop_pid "$NGINX_PID"
    NGINX_PID=
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The backends: one nginx (NGINX_WORKERS workers) with two servers, app1 and app2, on two
# ports. Each serves /small (SMALL_BYTES bytes starting with its own name, so the balancers
# can be seen to use both) and /big (BULK_MB MiB, one file linked into both roots).
start_backends() {
    local dir=$WORK/nginx name user_line=
    mkdir -p "$dir" "$WORK/www1" "$WORK/www2"
    for name in app1 app2; do
        awk -v n="$SMALL_BYTES" -v name="$name" \
            'BEGIN { s = name; while (length(s) < n - 1) s = s "x"; print s }' \
            >"$WORK/www${name#app}/small"
    done
    head -c "$((BULK_MB * 1024 * 1024))" /dev/zero >"$WORK/www1/big"
    ln "$WORK/www1/big" "$WORK/www2/big"
    APP1_PORT=$(free_port)
    APP2_PORT=$(free_port)
    while [[ $APP2_PORT == "$APP1_PORT" ]]; do APP2_PORT=$(free_port); done
    [[ $EUID -eq 0 ]] && user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
$user_line
worker_processes $NGINX_WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$APP1_PORT; root $WORK/www1; }
    server { listen 127.0.0.1:$APP2_PORT; root $WORK/www2; }
}
EOF
    "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    wait_until_listening "$NGINX_PID" "$APP1_PORT" nginx "$dir/error.log"
    wait_until_listening "$NGINX_PID" "$APP2_PORT" nginx "$dir/error.log"
}

# start_balancer haproxy|opsconsole: a fresh balancer over app1 and app2, round robin, no
# checks, THREADS threads; sets BALANCER_PID and BALANCER_PORT. Runs in this shell (never in
# $(...)), so the exit trap knows what to stop.
start_balancer() {
    local kind=$1 port cfg log
    port=$(free_port)
    log=$WORK/$kind-$port.log
    case $kind in
        haproxy)
            # Timeouts and retries as opsconsole's defaults: 3 s connect, 900 s idle, 2 retries.
            cfg=$WORK/haproxy.cfg
            cat >"$cfg" <<EOF
global
    nbthread $THREADS
    maxconn 4096
defaults
    mode tcp
    maxconn 4096
    timeout connect 3s
    timeout client 900s
    timeout server 900s
    retries 2
    option redispatch
$( [[ $SPLICE == auto ]] && echo "    option splice-auto")
frontend bench
    bind 127.0.0.1:$port
    default_backend app
backend app
    balance roundrobin
    server app1 127.0.0.1:$APP1_PORT
    server app2 127.0.0.1:$APP2_PORT
EOF
            "$HAPROXY" -db -f "$cfg" >"$log" 2>&1 &
            ;;
        opsconsole)
            cfg=$WORK/l4.toml
            cat >"$cfg" <<EOF
[log]
dir = "$WORK/log"
file = "l4.log"
level = "warn"

[l4]
threads = $THREADS

[l4.services.bench]
listen = "127.0.0.1:$port"
scheduler = "rr"
splice = "$SPLICE"
servers = [
  { name = "app1", address = "127.0.0.1:$APP1_PORT" },
  { name = "app2", address = "127.0.0.1:$APP2_PORT" },
]
EOF
            "$BIN" --role l4 --headless --config "$cfg" >"$log" 2>&1 &
            ;;
        *) die "unknown balancer '$kind'" ;;
    esac
    BALANCER_PID=$!
    BALANCER_PORT=$port
    wait_until_listening "$BALANCER_PID" "$port" "$kind" "$log"
}

# Fetches /small through PORT until both backends have answered (at most 20 tries).
check_both_backends() {
    local port=$1 name=$2 seen="" _
    for _ in $(seq 20); do
        seen+=" $(curl -sS --max-time 2 "http://127.0.0.1:$port/small" | head -c 4)"
        [[ $seen == *app1* && $seen == *app2* ]] && return
    done
    die "$name did not reach both backends in 20 requests (got:$seen)"
}

write_wrk_report "$WORK/report.lua"

# measure small|close|bulk PORT [PID]: one wrk run (after a warmup run) against PORT; sets
# RESULT (wrk's line), RATE (req/s, conns/s or MB/s), P50, P99 (us) and CPU (% of one core
# that PID used during the measured run, or "-").
measure() {
    local kind=$1 port=$2 pid=${3:-} url conns args=() out before after
    case $kind in
        small) url=/small conns=$CONNS ;;
        close) url=/small conns=$CONNS args=(-H "Connection: close") ;;
        bulk) url=/big conns=$BULK_CONNS ;;
    esac
    timeout $((WARMUP + 30)) "$WRK" -t "$WRK_THREADS" -c "$conns" -d "${WARMUP}s" "${args[@]}" \
        "http://127.0.0.1:$port$url" >/dev/null
    [[ -n $pid ]] && before=$(cpu_ns "$pid")
    out=$(timeout $((DURATION + 30)) "$WRK" -t "$WRK_THREADS" -c "$conns" -d "${DURATION}s" \
        --timeout 5s -s "$WORK/report.lua" "${args[@]}" "http://127.0.0.1:$port$url")
    [[ -n $pid ]] && after=$(cpu_ns "$pid")
    RESULT=$(grep '^RESULT ' <<<"$out") || die "no summary from wrk:$(printf '\n%s' "$out")"
    local requests duration_us bytes
    requests=$(field "$RESULT" requests)
    duration_us=$(field "$RESULT" duration_us)
    bytes=$(field "$RESULT" bytes)
    if [[ $kind == bulk ]]; then
        RATE=$(awk -v b="$bytes" -v d="$duration_us" 'BEGIN { printf "%.1f", b / d }')
    else
        RATE=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.1f", r * 1e6 / d }')
    fi
    P50=$(field "$RESULT" p50_us)
    P99=$(field "$RESULT" p99_us)
    CPU=-
    if [[ -n $pid ]]; then
        CPU=$(awk -v a="$after" -v b="$before" -v d="$duration_us" \
            'BEGIN { printf "%.0f", 100 * (a - b) / 1e3 / d }')
    fi
}

unit_of() {
    case $1 in
        small) echo "req/s" ;;
        close) echo "conn/s" ;;
        bulk) echo "MB/s" ;;
    esac
}

print_run() {
    local name=$1 round=$2 kind=$3 errors bad
    errors=$(field "$RESULT" socket_errors)
    bad=$(field "$RESULT" bad_status)
    printf '  %-10s round %d  %10.1f %-6s  p50 %7d us  p99 %7d us  cpu %4s%%  errors %s/%s\n' \
        "$name" "$round" "$RATE" "$(unit_of "$kind")" "$P50" "$P99" "$CPU" "$errors" "$bad"
    [[ $errors == 0 && $bad == 0 ]] ||
        echo "  warning: $name: $errors socket errors, $bad non-2xx/3xx responses"
}

# compare TITLE small|close|bulk: alternates the balancers ROUNDS times; prints the medians.
compare() {
    local title=$1 kind=$2 round name unit unit_one
    local -A rates=() p99s=() cpus=()
    unit=$(unit_of "$kind")
    unit_one=${unit%/s}
    echo
    echo "== $title"
    for round in $(seq "$ROUNDS"); do
        for name in haproxy opsconsole; do
            start_balancer "$name"
            measure "$kind" "$BALANCER_PORT" "$BALANCER_PID"
            stop_balancer
            print_run "$name" "$round" "$kind"
            rates[$name]+=" $RATE"
            p99s[$name]+=" $P99"
            cpus[$name]+=" $CPU"
        done
    done
    local hp_rate oc_rate hp_p99 oc_p99 hp_cpu oc_cpu
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    {
        hp_rate=$(median ${rates[haproxy]})
        oc_rate=$(median ${rates[opsconsole]})
        hp_p99=$(median ${p99s[haproxy]})
        oc_p99=$(median ${p99s[opsconsole]})
        hp_cpu=$(median ${cpus[haproxy]})
        oc_cpu=$(median ${cpus[opsconsole]})
    }
    printf '  median     haproxy %.1f %s p99 %.0f us cpu %.0f%% | opsconsole %.1f %s p99 %.0f us cpu %.0f%%\n' \
        "$hp_rate" "$unit" "$hp_p99" "$hp_cpu" "$oc_rate" "$unit" "$oc_p99" "$oc_cpu"
    echo "  opsconsole/haproxy: $unit x$(ratio "$oc_rate" "$hp_rate") (higher is better)," \
        "p99 x$(ratio "$oc_p99" "$hp_p99") (lower is better)," \
        "CPU per $unit_one x$(ratio "$(awk -v c="$oc_cpu" -v r="$oc_rate" 'BEGIN { print c / r }')" \
            "$(awk -v c="$hp_cpu" -v r="$hp_rate" 'BEGIN { print c / r }')")" \
        "(lower is better)"
}

echo "== building"
cargo build --release
echo
echo "machine:    $(nproc) cores, $(uname -sr)"
echo "haproxy:    $("$HAPROXY" -v | head -1)"
echo "nginx:      $("$NGINX" -v 2>&1)"
echo "wrk:        $("$WRK" -v 2>&1 | head -1 || true)"
echo "opsconsole: $("$BIN" --version)"
echo "balancers:  $THREADS thread(s) each, round robin over 2 nginx servers, no health checks," \
    "splice $SPLICE"
echo "load:       wrk -t $WRK_THREADS, $CONNS conns ($BULK_CONNS for bulk), ${DURATION}s runs" \
    "after ${WARMUP}s warmup, $ROUNDS rounds per balancer; nginx $NGINX_WORKERS worker(s);" \
    "files of $SMALL_BYTES bytes and $BULK_MB MiB"

start_backends
for name in haproxy opsconsole; do
    start_balancer "$name"
    check_both_backends "$BALANCER_PORT" "$name"
    stop_balancer
done

echo
echo "== baseline: wrk straight at nginx (app1), once"
for kind in $MEASURES; do
    measure "$kind" "$APP1_PORT"
    print_run nginx 1 "$kind"
done

for kind in $MEASURES; do
    case $kind in
        small) compare "keep-alive requests, $SMALL_BYTES-byte file" small ;;
        close) compare "new connections (Connection: close), $SMALL_BYTES-byte file" close ;;
        bulk) compare "bulk transfer, $BULK_MB MiB file, $BULK_CONNS connections" bulk ;;
        *) die "unknown measure '$kind' in MEASURES (small, close, bulk)" ;;
    esac
done
