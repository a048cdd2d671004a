# shellcheck shell=bash
# t/bench/lib.sh: what run.sh, rss.sh and callgrind.sh share.  Sourced,
# not run.  Gives a throwaway directory ($tmp), four free ports on
# 127.0.0.1 (or BENCH_REDIS_PORT, BENCH_UPSTREAM_PORT, BENCH_PORT,
# BENCH_REDIS_TLS_PORT), a throwaway Redis (with BENCH_REDIS_TLS=1 also
# listening with TLS, its certificates made by openssl in $tmp/pki), an
# upstream nginx standing in for Chatwoot's webhook controller (answers
# 200 at once), front nginx configs in four variants (plain, lua, module,
# tls: the module through rediss://), and a trap that stops every
# process it started, by the pids it recorded, when the script exits.
#
# NGINX_BINARY (default /usr/sbin/nginx), MODULE_SO (default
# build/ngx_http_webhook_lock_module.so), BENCH_KEEP=1 keeps $tmp.

bench_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_repo=$(cd "$bench_here/../.." && pwd)

NGINX=${NGINX_BINARY:-/usr/sbin/nginx}
MODULE_SO=${MODULE_SO:-$bench_repo/build/ngx_http_webhook_lock_module.so}
[ ! -e "$MODULE_SO" ] || MODULE_SO=$(readlink -f "$MODULE_SO")
LUA_MODULES=${LUA_MODULES:-/usr/lib/nginx/modules}
PEER_LUA=$bench_here/peer-lua.lua
WA_LUA=$bench_here/wa.lua

tmp=
bench_rev=
bench_pids=()       # background processes of ours: killed on exit

# runs "$@" in the background and waits for it, so that a signal stops
# the script at once (bash runs traps only between foreground commands);
# the exit trap stops it if it is still running then
bench_bg() {
    local pid rc=0

    "$@" &
    pid=$!
    bench_pids+=("$pid")

    wait "$pid" || rc=$?
    bench_forget "$pid"

    return $rc
}

# a background process of ours that is gone: not to be killed on exit
bench_forget() {
    local p keep=()

    for p in "${bench_pids[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done

    bench_pids=("${keep[@]}")
}

# perl -e "$bench_timed" -- CMD...: runs CMD, passes TERM, INT and HUP
# on to it, then prints "CPU <microseconds of user + system time that CMD
# and its children used>"
bench_timed='
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) { exec @ARGV or die "$ARGV[0]: $!\n" }
    $SIG{$_} = sub { kill "TERM", $pid } for qw(TERM INT HUP);
    while (waitpid($pid, 0) != $pid) {}
    my $rc = $?;
    my @t = times;
    printf "CPU %.0f\n", ($t[2] + $t[3]) * 1e6;
    exit($rc & 127 ? 1 : $rc >> 8);'

bench_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

bench_need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 \
            || bench_die "$c not found (./build.sh deps installs it as root)"
    done
}

# four distinct free ports, held open together while they are chosen
bench_free_ports() {
    perl -MIO::Socket::INET -e '
        my @s = map { IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                          LocalPort => 0, Listen => 1, ReuseAddr => 1)
                      or die "no free port: $!\n" } 1 .. 4;
        print join(" ", map { $_->sockport } @s), "\n";'
}

bench_setup() {
    local ports

    bench_rev=$(git -C "$bench_repo" describe --always --dirty 2>/dev/null \
                || echo "not a git checkout")

    tmp=$(mktemp -d -t webhook-bench.XXXXXX)
    chmod 755 "$tmp"        # workers run as nobody when we are root
    mkdir -p "$tmp/temp"

    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM HUP

    ports=$(bench_free_ports)
    set -- $ports
    PORT_REDIS=${BENCH_REDIS_PORT:-$1}
    PORT_UP=${BENCH_UPSTREAM_PORT:-$2}
    PORT_FRONT=${BENCH_PORT:-$3}
    PORT_REDIS_TLS=${BENCH_REDIS_TLS_PORT:-$4}
    export BENCH_REDIS_PORT=$PORT_REDIS     # read by peer-lua.lua

    [ -n "${BENCH_KEEP:-}" ] && echo "keeping $tmp" >&2
    return 0
}

# pid is gone: no such process, or a zombie (a daemon's parent is init,
# which may take its time to reap it)
bench_gone() {
    local state

    kill -0 "$1" 2>/dev/null || return 0
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -z "$state" ] || [ "$state" = Z ]
}

# pid exits within $2 seconds (default 10)?
bench_wait_gone() {
    local pid=$1 i

    for ((i = 0; i < ${2:-10} * 20; i++)); do
        bench_gone "$pid" && return 0
        sleep 0.05
    done

    return 1
}

# stops one of our daemons by its pid file: $2 signal (QUIT), then KILL
bench_stop_pidfile() {
    local f=$1 sig=${2:-QUIT} pid

    [ -s "$f" ] || return 0
    pid=$(cat "$f")

    if ! bench_gone "$pid"; then
        kill -"$sig" "$pid" 2>/dev/null || true
        bench_wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        bench_wait_gone "$pid" 2 || true
    fi

    rm -f "$f"
}

bench_cleanup() {
    local rc=$? f pid

    trap - EXIT INT TERM HUP

    for pid in "${bench_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        bench_wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
    done

    if [ -n "$tmp" ] && [ -d "$tmp" ]; then
        for f in "$tmp"/*.pid; do
            [ -e "$f" ] || continue
            bench_stop_pidfile "$f" TERM
        done

        if [ -n "${BENCH_KEEP:-}" ]; then
            echo "kept $tmp" >&2
        else
            rm -rf "$tmp"
        fi
    fi

    exit $rc
}

# 127.0.0.1:$1 accepts within $2 seconds (default 10)?
bench_wait_port() {
    local i

    for ((i = 0; i < ${2:-10} * 20; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done

    return 1
}

# a CA and a certificate it signs for 127.0.0.1, in $tmp/pki
bench_make_pki() {
    local d=$tmp/pki ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1"

    mkdir -p "$d"
    echo "subjectAltName=IP:127.0.0.1" > "$d/ext"

    openssl req -x509 $ec -nodes -days 2 -subj "/CN=bench ca" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null \
    && openssl req -new $ec -nodes -subj "/CN=127.0.0.1" \
        -keyout "$d/key.pem" -out "$d/req.pem" 2>/dev/null \
    && openssl x509 -req -days 2 -in "$d/req.pem" -CA "$d/ca.pem" \
        -CAkey "$d/ca.key" -CAcreateserial -extfile "$d/ext" \
        -out "$d/cert.pem" 2>/dev/null \
    || bench_die "openssl could not make the certificates"

    chmod 644 "$d"/*
}

# with BENCH_REDIS_TLS=1, the same Redis also on a TLS port
bench_start_redis() {
    local tls=()

    if [ -n "${BENCH_REDIS_TLS:-}" ]; then
        bench_make_pki
        tls=(--tls-port "$PORT_REDIS_TLS" --tls-cert-file "$tmp/pki/cert.pem"
             --tls-key-file "$tmp/pki/key.pem"
             --tls-ca-cert-file "$tmp/pki/ca.pem" --tls-auth-clients no)
    fi

    redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize yes --pidfile "$tmp/redis.pid" \
        --logfile "$tmp/redis.log" "${tls[@]}" >/dev/null
    bench_wait_port "$PORT_REDIS" \
        || bench_die "redis-server did not start: $(tail -3 "$tmp/redis.log")"

    # daemonized: the pid file may come a moment after the port
    local i
    for ((i = 0; i < 50; i++)); do
        [ -s "$tmp/redis.pid" ] && break
        sleep 0.05
    done
}

bench_redis_cli() {
    redis-cli -h 127.0.0.1 -p "$PORT_REDIS" "$@"
}

# the common head of every nginx config: $1 name (pid and error log)
bench_conf_head() {
    cat <<EOF
pid $tmp/$1.pid;
error_log $tmp/$1.err ${BENCH_ERROR_LOG_LEVEL:-warn};
worker_processes 1;
events { worker_connections 8192; }
EOF
}

bench_temps() {
    echo "client_body_temp_path $tmp/temp/cb; proxy_temp_path $tmp/temp/px;"
    echo "fastcgi_temp_path $tmp/temp/fc; uwsgi_temp_path $tmp/temp/uw;"
    echo "scgi_temp_path $tmp/temp/sc; access_log off;"
}

bench_start_upstream() {
    {
        bench_conf_head up
        cat <<EOF
http {
    $(bench_temps)
    server {
        listen 127.0.0.1:$PORT_UP backlog=4096;
        keepalive_requests 1000000;
        client_body_buffer_size 128k;
        client_max_body_size 1m;
        location / { return 200 '{"ok":true}'; }
    }
}
EOF
    } > "$tmp/up.conf"

    "$NGINX" -p "$tmp" -c "$tmp/up.conf" -e "$tmp/up.err" \
        || bench_die "upstream nginx did not start: $(tail -3 "$tmp/up.err")"
    bench_wait_port "$PORT_UP" || bench_die "upstream nginx does not listen"
}

# the front nginx: $1 config name, $2 variant (plain, lua, module, tls),
# $3 the module's extra location directives; $4 extra main-level lines
# (master_process off; daemon off; for callgrind)
bench_front_conf() {
    local name=$1 variant=$2 extra=${3:-} main=${4:-}
    local load="" http="" loc=""

    case $variant in
    plain)
        ;;
    lua)
        load="load_module $LUA_MODULES/ndk_http_module.so;
load_module $LUA_MODULES/ngx_http_lua_module.so;
env BENCH_REDIS_PORT;"
        http="lua_package_path '$bench_here/?.lua;;';
    init_by_lua_block { package.loaded.peer = dofile('$PEER_LUA') }"
        loc="access_by_lua_block { require('peer').access() }
            log_by_lua_block { require('peer').log() }"
        ;;
    module)
        load="load_module $MODULE_SO;"
        http="webhook_redis 127.0.0.1:$PORT_REDIS;"
        loc="webhook_lock whatsapp;
            webhook_lock_ttl 5s;
            $extra"
        ;;
    tls)
        load="load_module $MODULE_SO;"
        http="webhook_redis rediss://127.0.0.1:$PORT_REDIS_TLS
                            tls_ca=$tmp/pki/ca.pem;"
        loc="webhook_lock whatsapp;
            webhook_lock_ttl 5s;
            $extra"
        ;;
    *)
        bench_die "unknown variant $variant"
        ;;
    esac

    {
        echo "$load"
        echo "$main"
        bench_conf_head "$name"
        cat <<EOF
http {
    $(bench_temps)
    $http

    upstream chatwoot { server 127.0.0.1:$PORT_UP; keepalive 64; }

    server {
        listen 127.0.0.1:$PORT_FRONT backlog=4096;
        keepalive_requests 1000000;
        client_body_buffer_size 128k;
        client_max_body_size 1m;

        location ~ ^/webhooks/whatsapp/(?<inbox>[^/]+)\$ {
            $loc
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://chatwoot;
        }

        location = /bench_status { stub_status; }
    }
}
EOF
    } > "$tmp/$name.conf"
}

# nginx -t on a config: prints the first complaint and fails
bench_conf_test() {
    local out

    if out=$("$NGINX" -t -q -p "$tmp" -c "$tmp/$1.conf" -e "$tmp/$1.err" \
             2>&1); then
        return 0
    fi

    echo "$out" | grep -m1 -E 'emerg|alert|error' \
        | sed -e 's/^nginx: \[[a-z]*\] //' \
              -e "s#$tmp/##g"
    return 1
}

bench_start_front() {
    "$NGINX" -p "$tmp" -c "$tmp/$1.conf" -e "$tmp/$1.err" || return 1
    bench_wait_port "$PORT_FRONT" || return 1
}

bench_stop_front() {
    bench_stop_pidfile "$tmp/$1.pid" QUIT
}

# the worker of the master in pid file $1 (its first child)
bench_worker_pid() {
    local master pid i

    master=$(cat "$1")

    for ((i = 0; i < 50; i++)); do
        pid=$(cat "/proc/$master/task/$master/children" 2>/dev/null \
              | awk '{ print $1 }')
        [ -n "$pid" ] || pid=$(ps -o pid= --ppid "$master" 2>/dev/null \
                               | awk 'NR == 1 { print $1 }')
        [ -n "$pid" ] && break
        sleep 0.05
    done

    [ -n "$pid" ] || bench_die "no worker process under pid $master"
    echo "$pid"
}

# user + system CPU ticks of a process so far
bench_cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# busy and total ticks of the whole machine
bench_machine_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i;
                   print t - $5 - $6 - $9, t }' /proc/stat
}

# requests the front nginx has counted so far (stub_status, this one too)
bench_requests() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ARGV[0]",
                                      Timeout => 10) or exit 1;
        print $s "GET /bench_status HTTP/1.0\r\n\r\n";
        local $/;
        my $r = <$s> // "";
        print "$1\n" if $r =~ /^\s*\d+\s+\d+\s+(\d+)\s*$/m;' "$PORT_FRONT"
}

# wrk "$@" (give it a -d as a bound) until the front nginx has counted $1
# requests, polling stub_status every $2 seconds, then SIGINT: wrk stops
# at once and prints its summary.  Output in $tmp/wrk.out; sets
# bench_polls to the status requests made.
bench_wrk_until() {
    local target=$1 every=$2 pid n

    shift 2
    bench_polls=0

    wrk "$@" > "$tmp/wrk.out" 2>&1 &
    pid=$!
    bench_pids+=("$pid")

    while ! bench_gone "$pid"; do
        sleep "$every"
        n=$(bench_requests || true)
        bench_polls=$((bench_polls + 1))

        if [ "${n:-0}" -ge "$target" ]; then
            kill -INT "$pid" 2>/dev/null || true
            break
        fi
    done

    wait "$pid" || true
    bench_forget "$pid"
}

bench_rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

bench_machine() {
    echo "- module: ${MODULE_SO#"$bench_repo"/}, built $(date -u -r "$MODULE_SO" \
          '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?'), source" \
         "$bench_rev when the run started"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo \
        | sed 's/.*: //'), $(awk '/MemTotal/ { printf "%.0f GB RAM", \
        $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "- $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'),"\
         "$(redis-server --version | awk '{ print "Redis " $3 }' \
            | sed 's/v=//'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'),"\
         "hiredis $(dpkg-query -W -f='${Version}' libhiredis-dev \
            2>/dev/null || echo '?'), cJSON $(dpkg-query -W \
            -f='${Version}' libcjson-dev 2>/dev/null || echo '?'),"\
         "lua-nginx-module $(dpkg-query -W -f='${Version}' \
            libnginx-mod-http-lua 2>/dev/null || echo 'absent')"
}
