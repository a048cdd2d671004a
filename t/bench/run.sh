#!/usr/bin/env bash
# t/bench/run.sh: the webhook gate side by side with what it replaces, in
# one run, on one machine.  `./build.sh bench` builds the module and runs
# this.
#
# One front nginx worker at a time, in front of the same upstream nginx
# (answers 200 at once, like Chatwoot's webhook controller) and the same
# Redis, in three variants:
#   plain   proxy_pass only: the ceiling for this path
#   lua     the OpenResty-style peer (t/bench/peer-lua.lua, a copy of the
#           project's shared bench/peer-lua.lua): cjson, SET NX PX, 503 when
#           held, compare-and-delete release from the log phase
#   module  webhook_lock whatsapp (build/ngx_http_webhook_lock_module.so)
#   tls     the same module through rediss:// to the same Redis's TLS
#           port (fresh only)
# wrk (t/bench/wa.lua) posts WhatsApp Cloud API message webhooks, in the
# scenarios:
#   fresh         no contention: a fresh sender per request, ~0.6 KB body
#   contended     heavy contention: one of 10 senders (most answers are 503)
#   dedup-signed  webhook_dedup 24h + webhook_signature (X-Hub-Signature-256
#                 on every request); skipped, with the reason, while nginx -t
#                 rejects those directives; no Lua peer for this one
#   body-1k       fresh senders, bodies padded to 1 KB
#   body-64k      fresh senders, bodies padded to 64 KB
# Prints, and writes to build/bench/results.md, a table of requests/s, p50,
# p99, share of 2xx, the front worker's CPU per request, the ratios
# module/plain and module/lua (throughput, p99, worker CPU), and the CPU
# each process spent per request.  Ratios come from the same run; absolute
# numbers depend on the machine and on whatever else runs on it.
#
# Environment (all optional):
#   BENCH_DURATION      seconds per cell (10); BENCH_WARMUP seconds of warm-up
#                       per cell, not measured (1)
#   BENCH_CONNECTIONS   wrk connections (64); BENCH_THREADS wrk threads (1)
#   BENCH_ROUNDS        run every cell this many times, interleaved, and
#                       report the median (1)
#   BENCH_SCENARIOS     which scenarios, in order (all of the above)
#   BENCH_VARIANTS      which variants (plain lua module tls)
#   BENCH_OUT           the results file (build/bench/results.md)
#   BENCH_MODULE_EXTRA  more directives for the module's location, e.g.
#                       "webhook_lock_hold 1s;"
#   BENCH_PORT, BENCH_UPSTREAM_PORT, BENCH_REDIS_PORT,
#   BENCH_REDIS_TLS_PORT: fixed ports instead
#                       of free ones; MODULE_SO, NGINX_BINARY; BENCH_KEEP=1
# Everything listens on 127.0.0.1 only; every process started here is
# stopped on exit.  A default run takes under 3 minutes (about 2.5).

set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

secs=${BENCH_DURATION:-10}
warm=${BENCH_WARMUP:-1}
conns=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-1}
rounds=${BENCH_ROUNDS:-1}
scenarios=${BENCH_SCENARIOS:-fresh contended dedup-signed body-1k body-64k}
variants=${BENCH_VARIANTS:-plain lua module tls}
out=${BENCH_OUT:-$bench_repo/build/bench/results.md}
module_extra=${BENCH_MODULE_EXTRA:-}
secret=bench-app-secret
tab=$(printf '\t')

bench_need "$NGINX" redis-server redis-cli wrk perl

if [[ " $variants " == *" tls "* ]] && [[ " $scenarios " == *" fresh "* ]]
then
    bench_need openssl
    export BENCH_REDIS_TLS=1
fi

mkdir -p "$(dirname "$out")"
bench_setup

cells=$tmp/cells.tsv        # one line per cell and round
notes=$tmp/notes
: > "$cells"
: > "$notes"

note() { echo "- $*" >> "$notes"; echo "note: $*"; }

[ -f "$MODULE_SO" ] || note "module: $MODULE_SO is missing (./build.sh)"
[ -z "$module_extra" ] || note "module: with \`$module_extra\` everywhere"

bench_start_redis
bench_start_upstream

up_pid=$(bench_worker_pid "$tmp/up.pid")
redis_pid=$(cat "$tmp/redis.pid")

# a scenario: its wrk environment, the module's extra directives, variants
scenario() {
    sc_env="BENCH_SENDERS=0"
    sc_extra=""
    sc_variants="plain lua module"

    case $1 in
    fresh)
        sc_desc="no contention: a fresh sender per request, ~0.6 KB body"
        sc_variants="plain lua module tls" ;;
    contended)
        sc_desc="heavy contention: 10 senders (503 when held)"
        sc_env="BENCH_SENDERS=10" ;;
    dedup-signed)
        sc_desc="fresh senders, webhook_dedup 24h + webhook_signature"
        sc_desc="$sc_desc (X-Hub-Signature-256 on every request)"
        sc_env="BENCH_SENDERS=0 BENCH_SECRET=$secret"
        sc_extra="webhook_dedup 24h; webhook_signature $secret;"
        sc_variants="plain module" ;;
    body-1k)
        sc_desc="fresh senders, bodies of 1 KB"
        sc_env="BENCH_SENDERS=0 BENCH_BODY=1024" ;;
    body-64k)
        sc_desc="fresh senders, bodies of 64 KB"
        sc_env="BENCH_SENDERS=0 BENCH_BODY=65536" ;;
    *)
        bench_die "unknown scenario $1" ;;
    esac
}

# wrk for $1 seconds, its output to $tmp/wrk.out, then "CPU <microseconds
# wrk used>"
run_wrk() {
    bench_bg env $sc_env perl -e "$bench_timed" -- \
        timeout $(($1 + 30)) wrk -t"$threads" -c"$conns" -d"$1s" \
        --timeout 5s -s "$WA_LUA" "http://127.0.0.1:$PORT_FRONT" \
        > "$tmp/wrk.out" 2>&1 || true
}

cell() {        # scenario variant order
    local sc=$1 v=$2 order=$3 name=$1-$2 res out front_pid
    local f0 u0 r0 m0 t0 f1 u1 r1 m1 t1 w

    bench_front_conf "$name" "$v" "$sc_extra $module_extra"

    if ! bench_start_front "$name"; then
        note "$sc/$v: nginx did not start: $(tail -2 "$tmp/$name.err")"
        bench_stop_front "$name"
        return 0
    fi

    front_pid=$(bench_worker_pid "$tmp/$name.pid")

    [ "$warm" -gt 0 ] && run_wrk "$warm"

    bench_redis_cli flushall >/dev/null

    f0=$(bench_cpu_ticks "$front_pid")
    u0=$(bench_cpu_ticks "$up_pid")
    r0=$(bench_cpu_ticks "$redis_pid")
    read -r m0 t0 < <(bench_machine_ticks)

    run_wrk "$secs"
    out=$(cat "$tmp/wrk.out")

    f1=$(bench_cpu_ticks "$front_pid")
    u1=$(bench_cpu_ticks "$up_pid")
    r1=$(bench_cpu_ticks "$redis_pid")
    read -r m1 t1 < <(bench_machine_ticks)

    bench_stop_front "$name"

    res=$(echo "$out" | grep -m1 '^RESULT' || true)
    w=$(echo "$out" | awk '/^CPU/ { print $2 }')

    if [ -z "$res" ]; then
        note "$sc/$v: wrk failed: $(echo "$out" | head -3 | tr '\n' ' ')"
        return 0
    fi

    printf '%-13s %-7s %s\n' "$sc" "$v" "${res#RESULT }"

    # order scenario variant rps p50 p99 requests non2xx sockerr, then CPU
    # microseconds per request: front upstream redis wrk other, then how
    # busy the machine was (%)
    echo "$res" | awk -v order="$order" -v sc="$sc" -v v="$v" \
        -v f=$((f1 - f0)) -v u=$((u1 - u0)) -v r=$((r1 - r0)) -v w="${w:-0}" \
        -v busy=$((m1 - m0)) -v total=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); x[kv[1]] = kv[2] } }
        END {
            n = x["requests"] ? x["requests"] : 1; us = 1e6 / hz
            other = busy * us - (f + u + r) * us - w
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", order, sc, v,
                x["rps"], x["p50_us"], x["p99_us"], x["requests"],
                x["non2xx"], x["sockerr"]
            printf "\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\n",
                f * us / n, u * us / n, r * us / n, w / n,
                (other > 0 ? other : 0) / n, total ? 100 * busy / total : 0
        }' >> "$cells"
}

started=$(date +%s)

echo "cells of ${secs}s (+${warm}s warm-up), $conns connections," \
     "$threads wrk thread(s), $rounds round(s); front :$PORT_FRONT," \
     "upstream :$PORT_UP, redis :$PORT_REDIS"

# which (scenario, variant) cells run, in order: "order scenario variant"
plan=$tmp/plan
: > "$plan"
i=0

for sc in $scenarios; do
    scenario "$sc"
    i=$((i + 1))

    if [ -n "$sc_extra" ] && [[ " $variants " == *" module "* ]]; then
        bench_front_conf "$sc-check" module "$sc_extra $module_extra"

        if ! why=$(bench_conf_test "$sc-check"); then
            note "$sc: skipped, nginx -t rejects the module's config" \
                 "(${why:-no reason given}); it runs once the directives land"
            continue
        fi
    fi

    j=0
    for v in $sc_variants; do
        j=$((j + 1))
        [[ " $variants " == *" $v "* ]] || continue

        if { [ "$v" = module ] || [ "$v" = tls ]; } && [ ! -f "$MODULE_SO" ]
        then
            continue
        fi

        bench_front_conf "$sc-$v-check" "$v" "$sc_extra $module_extra"

        if ! why=$(bench_conf_test "$sc-$v-check"); then
            note "$sc/$v: skipped, nginx -t failed: ${why:-no reason given}"
            continue
        fi

        echo "$((i * 10 + j)) $sc $v" >> "$plan"
    done
done

for ((round = 1; round <= rounds; round++)); do
    while read -r order sc v; do
        scenario "$sc"
        cell "$sc" "$v" "$order"
    done < "$plan"
done

elapsed=$(($(date +%s) - started))

# the median round of each cell, by requests/s (the whole row of it)
sort -t"$tab" -k1,1n -k4,4n "$cells" | awk -F"$tab" '
    { n[$1]++; row[$1, n[$1]] = $0; if (!seen[$1]++) keys[++k] = $1 }
    END {
        for (i = 1; i <= k; i++) {
            r = row[keys[i], int((n[keys[i]] + 1) / 2)]
            sub(/^[^\t]*\t/, "", r)
            print r
        }
    }' > "$tmp/median.tsv"

# the report: one row per cell; ratios on the module's rows

report() {
    local per="${secs} s per cell after ${warm} s of warm-up"

    [ "$rounds" -gt 1 ] && per="$per, the median of $rounds rounds"

    echo "# webhook_lock benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), \`./build.sh bench\`" \
         "(t/bench/run.sh): $per, $conns connections, $threads wrk" \
         "thread(s), $elapsed s in all. One front nginx worker; the" \
         "upstream nginx, Redis and wrk on the same machine. Ratios compare" \
         "cells of this one run."
    echo
    bench_machine
    echo
    echo "| scenario | variant | req/s | p50 ms | p99 ms | 2xx | worker µs/req | module/plain | module/lua | p99 module/plain | worker CPU module/plain |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

    awk -F"$tab" '
        { rps[$1, $2] = $3; p99[$1, $2] = $5; cpu[$1, $2] = $9 }
        { row[NR] = $0 }
        END {
            for (i = 1; i <= NR; i++) {
                split(row[i], c, "\t")
                sc = c[1]; v = c[2]
                ok = c[6] ? 100 * (c[6] - c[7]) / c[6] : 0
                mp = ml = pp = wc = ""
                if (v == "module" || v == "tls") {
                    if (rps[sc, "plain"])
                        mp = sprintf("%.2fx", c[3] / rps[sc, "plain"])
                    if (rps[sc, "lua"])
                        ml = sprintf("%.2fx", c[3] / rps[sc, "lua"])
                    if (p99[sc, "plain"])
                        pp = sprintf("%.2fx", c[5] / p99[sc, "plain"])
                    if (cpu[sc, "plain"] > 0 && c[9] != "")
                        wc = sprintf("%.2fx", c[9] / cpu[sc, "plain"])
                }
                printf "| %s | %s | %d | %.2f | %.2f | %.1f%% | %s | %s | %s | %s | %s |\n",
                    sc, v, c[3], c[4] / 1000, c[5] / 1000, ok, c[9], mp, ml, pp, wc
            }
        }' "$tmp/median.tsv"

    awk -F"$tab" '
        { rps[$1, $2] = $3; cpu[$1, $2] = $9; if (!seen[$1]++) sc[++n] = $1 }
        END {
            for (i = 1; i <= n; i++) {
                s = sc[i]
                if (!rps[s, "tls"] || !rps[s, "module"]) continue
                if (!said++) print "\nThrough TLS (the tls rows'"'"' ratios are tls/plain, tls/lua):\n"
                w = cpu[s, "module"] > 0 ? cpu[s, "tls"] / cpu[s, "module"] : 0
                printf "- %s: tls/module %.2fx req/s, worker CPU tls/module %.2fx\n",
                    s, rps[s, "tls"] / rps[s, "module"], w
            }
        }' "$tmp/median.tsv"

    echo
    echo "\"worker µs/req\": the front worker's CPU (user + system) per request."
    echo "\"worker CPU module/plain\": that with the module over the same with"
    echo "plain proxy_pass; its inverse is the throughput ratio one saturated"
    echo "worker would reach when nothing else shares its cores."
    echo
    echo "CPU per request in microseconds (user + system, from /proc): the"
    echo "front worker, the upstream worker, Redis, wrk, and everything else"
    echo "the machine ran meanwhile (\"other\": softirqs, kernel threads, other"
    echo "users' jobs); and how busy the machine was (100% = every core)."
    echo
    echo "| scenario | variant | front nginx | upstream | redis | wrk | other | machine busy |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"

    awk -F"$tab" '{
        printf "| %s | %s | %s | %s | %s | %s | %s | %s%% |\n",
            $1, $2, $9, $10, $11, $12, $13, $14
    }' "$tmp/median.tsv"

    echo
    echo "Scenarios:"
    echo
    for sc in $scenarios; do
        scenario "$sc"
        echo "- $sc: $sc_desc"
    done

    if [ -s "$notes" ]; then
        echo
        echo "Notes:"
        echo
        cat "$notes"
    fi
}

report > "$out"

echo
cat "$out"
echo
echo "written to $out"
