#!/usr/bin/env bash
# Measures opsconsole's L7 balancer (`--role l7`) against Debian's HAProxy in `mode http` and
# nginx's `proxy_pass` on this machine: the same nginx backend (one worker, two servers
# serving a SMALL_BYTES-byte file), the same load generator (wrk, CONNS kept-alive
# connections), one proxy thread or worker each, round robin, kept-alive connections to the
# servers on every side, no health checks, no access logs. By default every proxy does the
# header work opsconsole always does (X-Forwarded-For, -Proto and -Host on the request, Via
# both ways); FORWARD_HEADERS=off leaves HAProxy and nginx at their bare minimum instead.
#
# The three proxies take turns, ROUNDS runs each, a freshly started proxy per run (never two
# at once, so they never compete for the CPU), a WARMUP second unmeasured wrk run first. Every
# run is printed, then the medians and the ratios of the medians: requests/s (higher is
# better), p99 latency (lower is better) and CPU per request. wrk straight at one nginx server
# gives a baseline. Everything listens on loopback only, on ports picked at run time, and every
# run is bounded.
#
# Usage: benches/l7_vs_haproxy_nginx.sh            (from anywhere inside the repository)
#        DURATION=5 ROUNDS=3 THREADS=2 benches/l7_vs_haproxy_nginx.sh

set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}        # measured seconds per run
WARMUP=${WARMUP:-1}             # unmeasured seconds before each run
ROUNDS=${ROUNDS:-5}             # runs per proxy (at least 2)
THREADS=${THREADS:-1}           # proxy threads (haproxy nbthread, nginx worker_processes,
                                # opsconsole [l7] threads)
CONNS=${CONNS:-50}              # wrk connections
WRK_THREADS=${WRK_THREADS:-1}   # wrk threads
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
SMALL_BYTES=${SMALL_BYTES:-100} # size of the file
PROXIES=${PROXIES:-haproxy nginx opsconsole}
FORWARD_HEADERS=${FORWARD_HEADERS:-on}  # on | off (see above)
HAPROXY=${HAPROXY:-haproxy}
NGINX=${NGINX:-nginx}
WRK=${WRK:-wrk}

[[ $FORWARD_HEADERS == on || $FORWARD_HEADERS == off ]] ||
    die "FORWARD_HEADERS must be on or off (got '$FORWARD_HEADERS')"
(( ROUNDS >= 2 )) || die "ROUNDS must be at least 2 (got '$ROUNDS')"
(( THREADS >= 1 )) || die "THREADS must be at least 1 (got '$THREADS')"
need_tools "apt-get install -y haproxy nginx wrk curl" "$HAPROXY" "$NGINX" "$WRK" curl

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=$PWD/target/release/opsconsole
WORK=$(mktemp -d)
BACKEND_PID=
PROXY_PID=

stop_proxy() {
    stop_pid "$PROXY_PID"
    PROXY_PID=
}

cleanup() {
    stop_proxy
    stop_pid "$BACKEND_PID"
    BACKEND_PID=
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx_conf DIR WORKERS BODY: an nginx.conf for a foreground nginx under DIR.
nginx_conf() {
    local dir=$1 workers=$2 body=$3 user_line=
    [[ $EUID -eq 0 ]] && user_line="user root;"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
$user_line
worker_processes $workers;
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
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
$body
}
EOF
}

# The backend: one nginx with two servers, app1 and app2, each serving /small (SMALL_BYTES
# bytes starting with its own name, so the proxies can be seen to use both).
start_backend() {
    local dir=$WORK/backend name
    mkdir -p "$WORK/www1" "$WORK/www2"
    for name in app1 app2; do
        awk -v n="$SMALL_BYTES" -v name="$name" \
            'BEGIN { s = name; while (length(s) < n - 1) s = s "x"; print s }' \
            >"$WORK/www${name#app}/small"
    done
    APP1_PORT=$(free_port)
    APP2_PORT=$(free_port)
    while [[ $APP2_PORT == "$APP1_PORT" ]]; do APP2_PORT=$(free_port); done
    nginx_conf "$dir" "$BACKEND_WORKERS" "    server { listen 127.0.0.1:$APP1_PORT; root $WORK/www1; }
    server { listen 127.0.0.1:$APP2_PORT; root $WORK/www2; }"
    "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    BACKEND_PID=$!
    wait_until_listening "$BACKEND_PID" "$APP1_PORT" "backend nginx" "$dir/error.log"
    wait_until_listening "$BACKEND_PID" "$APP2_PORT" "backend nginx" "$dir/error.log"
}

# The header work opsconsole always does, in HAProxy's and nginx's words (FORWARD_HEADERS=on).
haproxy_forward_headers() {
    [[ $FORWARD_HEADERS == on ]] || return 0
    cat <<'EOF'
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via "1.1 haproxy"
    http-response add-header Via "1.1 haproxy"
EOF
}

nginx_forward_headers() {
    [[ $FORWARD_HEADERS == on ]] || return 0
    cat <<'EOF'
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Via "1.1 nginx";
            add_header Via "1.1 nginx";
EOF
}

# start_proxy haproxy|nginx|opsconsole: a fresh proxy over app1 and app2; sets PROXY_PID and
# PROXY_PORT. Runs in this shell (never in $(...)), so the exit trap knows what to stop.
start_proxy() {
    local kind=$1 port cfg log dir
    port=$(free_port)
    log=$WORK/$kind-$port.log
    case $kind in
        haproxy)
            # Timeouts and retries as opsconsole's defaults: 3 s connect, 30 s response,
            # 60 s idle client, 2 retries. Server connections are reused (http-reuse safe is
            # the default).
            cfg=$WORK/haproxy.cfg
            cat >"$cfg" <<EOF
global
    nbthread $THREADS
    maxconn 4096
defaults
    mode http
    maxconn 4096
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 60s
    retries 2
    option redispatch
frontend bench
    bind 127.0.0.1:$port
    default_backend app
$(haproxy_forward_headers)
backend app
    balance roundrobin
    server app1 127.0.0.1:$APP1_PORT
    server app2 127.0.0.1:$APP2_PORT
EOF
            "$HAPROXY" -db -f "$cfg" >"$log" 2>&1 &
            ;;
        nginx)
            dir=$WORK/proxy-nginx
            nginx_conf "$dir" "$THREADS" "    upstream app {
        server 127.0.0.1:$APP1_PORT;
        server 127.0.0.1:$APP2_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
$(nginx_forward_headers)
        }
    }"
            "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$log" 2>&1 &
            ;;
        opsconsole)
            cfg=$WORK/l7.toml
            cat >"$cfg" <<EOF
[log]
dir = "$WORK/log"
file = "l7.log"
level = "warn"

[l7]
threads = $THREADS

[l7.listeners.bench]
listen = "127.0.0.1:$port"
routes = [{ path = "/", pool = "app" }]

[l7.pools.app]
algorithm = "roundrobin"
servers = [
  { name = "app1", address = "127.0.0.1:$APP1_PORT" },
  { name = "app2", address = "127.0.0.1:$APP2_PORT" },
]
EOF
            "$BIN" --role l7 --headless --config "$cfg" >"$log" 2>&1 &
            ;;
        *) die "unknown proxy '$kind'" ;;
    esac
    PROXY_PID=$!
    PROXY_PORT=$port
    wait_until_listening "$PROXY_PID" "$port" "$kind" "$log"
}

# Fetches /small through PORT until both servers have answered (at most 20 tries).
check_both_servers() {
    local port=$1 name=$2 seen="" _
    for _ in $(seq 20); do
        seen+=" $(curl -sS --max-time 2 "http://127.0.0.1:$port/small" | head -c 4)"
        [[ $seen == *app1* && $seen == *app2* ]] && return
    done
    die "$name did not reach both servers in 20 requests (got:$seen)"
}

write_wrk_report "$WORK/report.lua"

# measure PORT [PID]: one wrk run (after a warmup run) against PORT; sets RESULT (wrk's line),
# RATE (req/s), P50, P99 (us) and CPU (% of one core the processes under PID used during the
# measured run, or "-"; nginx's workers are its master's children).
measure() {
    local port=$1 pid=${2:-} out before after
    timeout $((WARMUP + 30)) "$WRK" -t "$WRK_THREADS" -c "$CONNS" -d "${WARMUP}s" \
        "http://127.0.0.1:$port/small" >/dev/null
    [[ -n $pid ]] && before=$(tree_cpu_ns "$pid")
    out=$(timeout $((DURATION + 30)) "$WRK" -t "$WRK_THREADS" -c "$CONNS" -d "${DURATION}s" \
        --timeout 5s -s "$WORK/report.lua" "http://127.0.0.1:$port/small")
    [[ -n $pid ]] && after=$(tree_cpu_ns "$pid")
    RESULT=$(grep '^RESULT ' <<<"$out") || die "no summary from wrk:$(printf '\n%s' "$out")"
    local requests duration_us
    requests=$(field "$RESULT" requests)
    duration_us=$(field "$RESULT" duration_us)
    RATE=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.1f", r * 1e6 / d }')
    P50=$(field "$RESULT" p50_us)
    P99=$(field "$RESULT" p99_us)
    CPU=-
    if [[ -n $pid ]]; then
        CPU=$(awk -v a="$after" -v b="$before" -v d="$duration_us" \
            'BEGIN { printf "%.0f", 100 * (a - b) / 1e3 / d }')
    fi
}

# tree_cpu_ns PID: cpu_ns of PID and its children.
tree_cpu_ns() {
    local total child children
    total=$(cpu_ns "$1")
    children=$(cat "/proc/$1/task/"*/children 2>/dev/null || true)
    for child in $children; do
        total=$((total + $(cpu_ns "$child")))
    done
    echo "$total"
}

print_run() {
    local name=$1 round=$2 errors bad
    errors=$(field "$RESULT" socket_errors)
    bad=$(field "$RESULT" bad_status)
    printf '  %-10s round %d  %10.1f req/s  p50 %7d us  p99 %7d us  cpu %4s%%  errors %s/%s\n' \
        "$name" "$round" "$RATE" "$P50" "$P99" "$CPU" "$errors" "$bad"
    [[ $errors == 0 && $bad == 0 ]] ||
        echo "  warning: $name: $errors socket errors, $bad non-2xx/3xx responses"
}

echo "== building"
cargo build --release
echo
echo "machine:    $(nproc) cores, $(uname -sr)"
echo "haproxy:    $("$HAPROXY" -v | head -1)"
echo "nginx:      $("$NGINX" -v 2>&1)"
echo "wrk:        $("$WRK" -v 2>&1 | head -1 || true)"
echo "opsconsole: $("$BIN" --version)"
echo "proxies:    $THREADS thread(s)/worker(s) each, round robin over 2 nginx servers," \
    "kept-alive server connections, no checks, no access log, forwarding headers $FORWARD_HEADERS"
echo "load:       wrk -t $WRK_THREADS, $CONNS kept-alive conns, ${DURATION}s runs after" \
    "${WARMUP}s warmup, $ROUNDS rounds per proxy; backend nginx $BACKEND_WORKERS worker(s);" \
    "a $SMALL_BYTES-byte file"

start_backend
for name in $PROXIES; do
    start_proxy "$name"
    check_both_servers "$PROXY_PORT" "$name"
    stop_proxy
done

echo
echo "== baseline: wrk straight at the backend (app1), once"
measure "$APP1_PORT"
print_run backend 1

echo
echo "== keep-alive requests through each proxy, $SMALL_BYTES-byte file"
declare -A rates=() p99s=() cpus=()
for round in $(seq "$ROUNDS"); do
    for name in $PROXIES; do
        start_proxy "$name"
        measure "$PROXY_PORT" "$PROXY_PID"
        stop_proxy
        print_run "$name" "$round"
        rates[$name]+=" $RATE"
        p99s[$name]+=" $P99"
        cpus[$name]+=" $CPU"
    done
done
declare -A rate=() p99=() cpu=() per_request=()
for name in $PROXIES; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    {
        rate[$name]=$(median ${rates[$name]})
        p99[$name]=$(median ${p99s[$name]})
        cpu[$name]=$(median ${cpus[$name]})
    }
    per_request[$name]=$(awk -v c="${cpu[$name]}" -v r="${rate[$name]}" 'BEGIN { print c / r }')
    printf '  median     %-10s %10.1f req/s  p99 %7.0f us  cpu %s%%\n' "$name" "${rate[$name]}" \
        "${p99[$name]}" "${cpu[$name]}"
done
if [[ -n ${rate[opsconsole]:-} ]]; then
    for peer in haproxy nginx; do
        [[ -n ${rate[$peer]:-} ]] || continue
        echo "  opsconsole/$peer: req/s x$(ratio "${rate[opsconsole]}" "${rate[$peer]}") (higher is better)," \
            "p99 x$(ratio "${p99[opsconsole]}" "${p99[$peer]}") (lower is better)," \
            "CPU per request x$(ratio "${per_request[opsconsole]}" "${per_request[$peer]}") (lower is better)"
    done
fi
