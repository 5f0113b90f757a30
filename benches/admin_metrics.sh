#!/usr/bin/env bash
# Times a Prometheus scrape of a balancer with SERVERS servers in one pool: opsconsole's
# `GET /metrics` (admin API) against HAProxy's built-in exporter (`prometheus-exporter`
# service, Debian's haproxy is built with it), both over the same pool of SERVERS nginx
# ports after TRAFFIC seconds of requests through them, so every server has counters and
# latencies to report.
#
# A scrape is one wrk connection asking for /metrics back to back for DURATION seconds:
# the median and p99 of the scrape time, the size of the answer and its number of samples.
# Everything listens on loopback only, on ports picked at run time, and every run is bounded.
#
# Usage: benches/admin_metrics.sh                  (from anywhere inside the repository)
#        SERVERS=300 DURATION=5 benches/admin_metrics.sh

set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVERS=${SERVERS:-100}     # servers in the pool
TRAFFIC=${TRAFFIC:-3}       # seconds of requests through each balancer before it is scraped
DURATION=${DURATION:-10}    # seconds of back-to-back scrapes
ROUNDS=${ROUNDS:-3}         # scrape runs per balancer (the median is reported)
HAPROXY=${HAPROXY:-haproxy}
NGINX=${NGINX:-nginx}
WRK=${WRK:-wrk}
TOKEN=bench-token-0123456789abcdef

(( SERVERS >= 1 && SERVERS <= 1000 )) || die "SERVERS must be 1..1000 (got '$SERVERS')"
(( ROUNDS >= 1 )) || die "ROUNDS must be at least 1 (got '$ROUNDS')"
need_tools "apt-get install -y haproxy nginx wrk curl" "$HAPROXY" "$NGINX" "$WRK" curl

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=$PWD/target/release/opsconsole
WORK=$(mktemp -d)
BACKEND_PID=
BALANCER_PID=

cleanup() {
    stop_pid "$BALANCER_PID"
    stop_pid "$BACKEND_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One nginx worker listening on SERVERS ports, each serving /small.
start_backend() {
    local dir=$WORK/backend user_line="" listens="" port i
    [[ $EUID -eq 0 ]] && user_line="user root;"
    mkdir -p "$dir/www"
    echo "ok" >"$dir/www/small"
    PORTS=()
    for i in $(seq "$SERVERS"); do
        port=$(free_port)
        while [[ " ${PORTS[*]} " == *" $port "* ]]; do port=$(free_port); done
        PORTS+=("$port")
        listens+="        listen 127.0.0.1:$port;"$'\n'
    done
    cat >"$dir/nginx.conf" <<EOF
daemon off;
$user_line
worker_processes 1;
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
    keepalive_requests 100000000;
    server {
$listens        root $dir/www;
    }
}
EOF
    "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    BACKEND_PID=$!
    wait_until_listening "$BACKEND_PID" "${PORTS[-1]}" "backend nginx" "$dir/error.log"
}

# start_balancer haproxy|opsconsole: sets BALANCER_PID, PROXY_PORT (traffic) and
# METRICS_PORT (scrapes).
start_balancer() {
    local kind=$1 cfg log i servers=""
    PROXY_PORT=$(free_port)
    METRICS_PORT=$(free_port)
    while [[ $METRICS_PORT == "$PROXY_PORT" ]]; do METRICS_PORT=$(free_port); done
    log=$WORK/$kind.log
    case $kind in
        haproxy)
            for i in "${!PORTS[@]}"; do
                servers+="    server app$i 127.0.0.1:${PORTS[$i]}"$'\n'
            done
            cfg=$WORK/haproxy.cfg
            cat >"$cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$PROXY_PORT
    default_backend app
frontend prometheus
    bind 127.0.0.1:$METRICS_PORT
    http-request use-service prometheus-exporter if { path /metrics }
backend app
    balance roundrobin
$servers
EOF
            "$HAPROXY" -db -f "$cfg" >"$log" 2>&1 &
            ;;
        opsconsole)
            for i in "${!PORTS[@]}"; do
                servers+="  { name = \"app$i\", address = \"127.0.0.1:${PORTS[$i]}\" },"$'\n'
            done
            cfg=$WORK/l7.toml
            cat >"$cfg" <<EOF
[log]
dir = "$WORK/log"
level = "warn"

[admin]
listen = "127.0.0.1:$METRICS_PORT"
token = "$TOKEN"

[l7]
threads = 1

[l7.listeners.bench]
listen = "127.0.0.1:$PROXY_PORT"
routes = [{ path = "/", pool = "app" }]

[l7.pools.app]
servers = [
$servers]
EOF
            "$BIN" --role l7 --headless --config "$cfg" >"$log" 2>&1 &
            ;;
        *) die "unknown balancer '$kind'" ;;
    esac
    BALANCER_PID=$!
    wait_until_listening "$BALANCER_PID" "$PROXY_PORT" "$kind" "$log"
    wait_until_listening "$BALANCER_PID" "$METRICS_PORT" "$kind" "$log"
}

# scrape KIND: one DURATION-second run of back-to-back scrapes; sets RESULT (wrk's line).
scrape() {
    local kind=$1 auth=()
    [[ $kind == opsconsole ]] && auth=(-H "Authorization: Bearer $TOKEN")
    RESULT=$(timeout $((DURATION + 30)) "$WRK" -t 1 -c 1 -d "${DURATION}s" --timeout 5s \
        "${auth[@]}" -s "$WORK/report.lua" "http://127.0.0.1:$METRICS_PORT/metrics" |
        grep '^RESULT ') || die "no summary from wrk for $kind"
}

write_wrk_report "$WORK/report.lua"

echo "== building"
cargo build --release
echo
echo "machine:    $(nproc) cores, $(uname -sr)"
echo "haproxy:    $("$HAPROXY" -v | head -1)"
echo "opsconsole: $("$BIN" --version)"
echo "pool:       $SERVERS servers (one nginx, one worker), ${TRAFFIC}s of traffic through each" \
    "balancer first; scrapes back to back on one connection for ${DURATION}s, $ROUNDS rounds"

start_backend
declare -A p50s=() p99s=() rates=()
for kind in haproxy opsconsole; do
    start_balancer "$kind"
    timeout $((TRAFFIC + 30)) "$WRK" -t 1 -c 20 -d "${TRAFFIC}s" \
        "http://127.0.0.1:$PROXY_PORT/small" >/dev/null
    auth=()
    [[ $kind == opsconsole ]] && auth=(-H "Authorization: Bearer $TOKEN")
    curl -sS --max-time 5 "${auth[@]}" "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/$kind.prom"
    bytes=$(wc -c <"$WORK/$kind.prom")
    samples=$(grep -cv '^#' "$WORK/$kind.prom" || true)
    printf '  %-10s one scrape: %8d bytes, %6d samples\n' "$kind" "$bytes" "$samples"
    for round in $(seq "$ROUNDS"); do
        scrape "$kind"
        rate=$(awk -v r="$(field "$RESULT" requests)" -v d="$(field "$RESULT" duration_us)" \
            'BEGIN { printf "%.1f", r * 1e6 / d }')
        printf '  %-10s round %d  %8.1f scrapes/s  p50 %6d us  p99 %6d us\n' "$kind" "$round" \
            "$rate" "$(field "$RESULT" p50_us)" "$(field "$RESULT" p99_us)"
        rates[$kind]+=" $rate"
        p50s[$kind]+=" $(field "$RESULT" p50_us)"
        p99s[$kind]+=" $(field "$RESULT" p99_us)"
    done
    stop_pid "$BALANCER_PID"
    BALANCER_PID=
done
echo
for kind in haproxy opsconsole; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    printf '  median     %-10s %8.1f scrapes/s  p50 %6.0f us  p99 %6.0f us\n' "$kind" \
        "$(median ${rates[$kind]})" "$(median ${p50s[$kind]})" "$(median ${p99s[$kind]})"
done
# shellcheck disable=SC2086
echo "  opsconsole/haproxy: scrape time p50 x$(ratio "$(median ${p50s[opsconsole]})" \
    "$(median ${p50s[haproxy]})"), p99 x$(ratio "$(median ${p99s[opsconsole]})" \
    "$(median ${p99s[haproxy]})") (lower is better)"
