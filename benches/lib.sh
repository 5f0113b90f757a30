# Shell helpers the benchmark scripts share; source it, do not run it.
# shellcheck shell=bash

die() {
    echo "error: $*" >&2
    exit 1
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
