#!/usr/bin/env bash
# t/bench/rss.sh: does the worker's memory stay flat across 1,000,000
# requests?
#
# One front nginx worker with the module (as in run.sh), in front of the
# bench upstream and a throwaway Redis.  wrk (t/bench/wa.lua) sends
# WhatsApp webhooks from 1,000 senders (so some meet a held lock and get
# 503), every 100th body cut short (a 400); the rest are locked, proxied
# and released.  The worker's VmRSS is read after the first 10,000
# requests, once pools, connections and hiredis's buffers have reached
# their working size, then every 10% of the way to 1,000,000; the
# difference between the first and the last reading is the growth.  Also
# counts the lock keys left in Redis at the end (there should be none).
#
# Exits 1 when the growth is over BENCH_RSS_LIMIT_KB (1024).  Environment:
# BENCH_RSS_REQUESTS (1000000), BENCH_RSS_WARM (10000), BENCH_CONNECTIONS
# (64), BENCH_RSS_VARIANT (module; plain to compare), BENCH_SENDERS
# (1000), BENCH_BAD_EVERY (100), BENCH_RSS_EXTRA (more module directives),
# BENCH_OUT (also write the table to this file), MODULE_SO, NGINX_BINARY,
# BENCH_PORT, BENCH_UPSTREAM_PORT, BENCH_REDIS_PORT, BENCH_KEEP=1.
# At ~15,000 requests/s a run takes about 70 seconds; it stops wrk at
# the first reading past each mark, so readings land a little past it.

set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

total=${BENCH_RSS_REQUESTS:-1000000}
warm=${BENCH_RSS_WARM:-10000}
conns=${BENCH_CONNECTIONS:-64}
variant=${BENCH_RSS_VARIANT:-module}
limit=${BENCH_RSS_LIMIT_KB:-1024}
extra=${BENCH_RSS_EXTRA:-}
out=${BENCH_OUT:-}

export BENCH_SENDERS=${BENCH_SENDERS:-1000}
export BENCH_BAD_EVERY=${BENCH_BAD_EVERY:-100}

bench_need "$NGINX" redis-server redis-cli wrk perl
[ "$variant" != module ] || [ -f "$MODULE_SO" ] \
    || bench_die "$MODULE_SO is missing (./build.sh)"

bench_setup
bench_start_redis
bench_start_upstream

bench_front_conf rss "$variant" "$extra"
bench_start_front rss || bench_die "nginx did not start: $(tail -3 "$tmp/rss.err")"
worker=$(bench_worker_pid "$tmp/rss.pid")

report=$tmp/report
: > "$report"

line() { echo "$*" | tee -a "$report"; }

line "| requests | VmRSS kB | RssAnon kB | non-2xx so far |"
line "|---:|---:|---:|---:|"

non2xx=0
first=
marks="$warm"

for ((i = 1; i <= 10; i++)); do
    marks="$marks $((total * i / 10))"
done

for mark in $marks; do
    bench_wrk_until "$mark" 0.05 -t1 -c"$conns" -d600s --timeout 5s \
        -s "$WA_LUA" "http://127.0.0.1:$PORT_FRONT"

    n=$(awk '/^RESULT/ { for (i = 2; i <= NF; i++) if ($i ~ /^non2xx=/) {
                 sub(/non2xx=/, "", $i); print $i } }' "$tmp/wrk.out")
    non2xx=$((non2xx + ${n:-0}))

    # let the releases of the last requests go out
    sleep 0.2

    served=$(bench_requests)
    rss=$(bench_rss_kb "$worker")
    anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$worker/status")

    [ -n "$first" ] || first=$rss
    line "| $served | $rss | $anon | $non2xx |"
done

growth=$((rss - first))

# every lock given back: what is left are webhook_dedup's marks, if any
keys=$(bench_redis_cli dbsize)
marks=$(bench_redis_cli --scan --pattern 'webhook:dedup:*' | wc -l)

line ""
line "VmRSS of the worker: $first kB after the first $warm requests," \
     "$rss kB after $served: $growth kB of growth (target: at most" \
     "$limit kB); $((keys - marks)) lock key(s) left in Redis" \
     "(and $marks dedup mark(s))."

grep -E '\[(alert|crit|emerg)\]' "$tmp/rss.err" | head -5 || true

if [ -n "$out" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$report" "$out"
fi

if [ "$growth" -gt "$limit" ]; then
    echo "rss: over the target" >&2
    exit 1
fi
