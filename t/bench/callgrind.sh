#!/usr/bin/env bash
# t/bench/callgrind.sh: instructions per request of the webhook gate, by
# library and by function, next to plain proxy_pass.
#
# Runs the front nginx of run.sh (plain, then the module; "master_process
# off; daemon off;", so one process) under valgrind --tool=callgrind,
# twice each: once serving BENCH_CG_SHORT requests, once BENCH_CG_LONG;
# stub_status counts what each run served.  The difference between the
# two runs, divided by the difference in requests, is the steady-state
# cost of one request, without startup and shutdown (cg-summary.pl).
# Counts user-space instructions only: system calls and the kernel's work
# are not in them (run.sh's CPU table has those).
#
# Environment: BENCH_CG_SHORT (2000), BENCH_CG_LONG (12000),
# BENCH_CG_CONNECTIONS (4), BENCH_CG_POLL (seconds between two looks at
# stub_status, 0.2), BENCH_CG_VARIANTS (plain module), BENCH_CG_EXTRA
# (more module directives, e.g. "webhook_lock_hold 1s;"), BENCH_SENDERS,
# BENCH_BODY, BENCH_SECRET (as for wa.lua), BENCH_CG_OUT (a directory to
# keep the callgrind.out files in, for callgrind_annotate or kcachegrind),
# MODULE_SO, NGINX_BINARY, BENCH_KEEP=1.  A default run takes about 2
# minutes.

set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

short=${BENCH_CG_SHORT:-2000}
long=${BENCH_CG_LONG:-12000}
conns=${BENCH_CG_CONNECTIONS:-4}
variants=${BENCH_CG_VARIANTS:-plain module}
extra=${BENCH_CG_EXTRA:-}
cg_keep=${BENCH_CG_OUT:-}
poll=${BENCH_CG_POLL:-0.2}

bench_need "$NGINX" valgrind redis-server redis-cli wrk perl
[ -f "$MODULE_SO" ] || bench_die "$MODULE_SO is missing (./build.sh)"

bench_setup
bench_start_redis
bench_start_upstream

# one run: $1 variant, $2 requests; sets cg_file (callgrind.out), cg_served
cg_run() {
    local v=$1 n=$2 name=cg-$1-$2 pid served i

    bench_front_conf "$name" "$v" "$extra" "master_process off; daemon off;"

    valgrind --tool=callgrind --callgrind-out-file="$tmp/$name.out" \
        "$NGINX" -p "$tmp" -c "$tmp/$name.conf" -e "$tmp/$name.err" \
        > "$tmp/$name.valgrind" 2>&1 &
    pid=$!
    bench_pids+=("$pid")

    bench_wait_port "$PORT_FRONT" 60 \
        || bench_die "nginx under valgrind did not start: $(tail -5 \
                      "$tmp/$name.valgrind" "$tmp/$name.err")"

    # the module's Redis connection is set up a moment after the port
    for ((i = 0; i < 100; i++)); do
        [ "$v" != module ] && break
        bench_redis_cli client list 2>/dev/null | grep -qv 'cmd=client' \
            && break
        sleep 0.1
    done

    bench_wrk_until "$n" "$poll" -t1 -c"$conns" -d900s --timeout 10s \
        -s "$WA_LUA" "http://127.0.0.1:$PORT_FRONT"
    cp "$tmp/wrk.out" "$tmp/$name.wrk"

    # let releases and upstream keepalive settle, then count: the webhooks
    # served are what stub_status counted but its own requests
    sleep 0.5
    served=$(bench_requests)
    served=$((served - bench_polls - 1))

    kill -QUIT "$pid"
    bench_wait_gone "$pid" 60 || bench_die "nginx under valgrind did not exit"
    wait "$pid" 2>/dev/null || true
    bench_forget "$pid"

    if [ -n "$cg_keep" ]; then
        mkdir -p "$cg_keep"
        cp "$tmp/$name.out" "$cg_keep/"
    fi

    cg_file=$tmp/$name.out
    cg_served=${served:-0}
}

args=()

for v in $variants; do
    echo "callgrind: $v, $short then $long requests" >&2
    cg_run "$v" "$short"
    fa=$cg_file na=$cg_served
    cg_run "$v" "$long"

    [ "$cg_served" -gt "$na" ] \
        || bench_die "$v: $na then $cg_served requests served; raise" \
                     "BENCH_CG_LONG or lower BENCH_CG_POLL"
    args+=("$v" "$fa" "$na" "$cg_file" "$cg_served")
    echo "  served $na and $cg_served" >&2
done

perl "$bench_here/cg-summary.pl" --module "$(basename "$MODULE_SO")" \
    "${args[@]}"
