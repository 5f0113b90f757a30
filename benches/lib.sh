# Shell helpers the benchmark scripts share; source it, do not run it.
# shellcheck shell=bash

die() {
    echo "error: $*" >&2
    exit 1
}

# need_tools HINT TOOL...: dies naming the first TOOL not on the PATH, and HINT (how to
# install them).
need_tools() {
    local hint=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "'$tool' not found; install the tools with: $hint"
    done
}

# A port nothing listens on, below the usual ephemeral range so client sockets cannot take it.
free_port() {
    local port tries
    for tries in $(seq 100); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free loopback port found after $tries tries"
}

# Waits (at most 10 s) until the process accepts connections, failing early if it died.
wait_until_listening() {
    local pid=$1 port=$2 name=$3 log=$4 _
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; its log:$(printf '\n'; cat "$log")"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s"
}

median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.1f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}

# Stops one child of this shell: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_pid() {
    local pid=$1 _
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        # A child that exited stays a zombie (state Z) until it is waited for.
        [[ -e /proc/$pid && $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# write_wrk_report FILE: a wrk script whose `done` hook prints one RESULT line with exact
# counts and percentiles.
write_wrk_report() {
    cat >"$1" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d bytes=%d p50_us=%.0f p99_us=%.0f socket_errors=%d bad_status=%d\n",
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
}

# field LINE NAME: one value of the RESULT line.
field() {
    sed -nE "s/.*[ ]$2=([^ ]*).*/\1/p" <<<"$1"
}

# cpu_ns PID: nanoseconds on a CPU the process's threads have used so far (the scheduler's
# exact sum_exec_runtime, rather than the tick-sampled utime and stime of /proc/PID/stat).
cpu_ns() {
    awk '{ s += $1 } END { printf "%.0f\n", s }' "/proc/$1/task/"*/schedstat 2>/dev/null || true
}
