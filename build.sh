#!/usr/bin/env bash
# Builds, tests and demonstrates ngx_http_webhook_lock_module.
#
#   ./build.sh [build]    the dynamic module, build/ngx_http_webhook_lock_module.so
#   ./build.sh deps       install the Debian packages it needs (root), or
#                         print the apt-get line
#   ./build.sh test       deps, build, then prove -r t/
#   ./build.sh demo       a live album burst through the gate (--keep: all
#                         stays up until Ctrl-C)
#   ./build.sh lint       line width, tabs and trailing blanks in src/, config
#   ./build.sh bench      deps (and wrk, the Lua module), build, then
#                         t/bench/run.sh: plain proxy_pass, an OpenResty
#                         peer and the module side by side, under 3 minutes;
#                         the table goes to build/bench/results.md
#   ./build.sh install    copy the module into nginx's modules directory
#                         (MODULE_SO=/path: that one, without building)
#   ./build.sh asan       the suite against an AddressSanitizer and
#                         UndefinedBehaviorSanitizer build (build/asan)
#   ./build.sh valgrind   the suite with nginx under valgrind memcheck
#   ./build.sh fuzz [S]   each libFuzzer target of t/fuzz for S seconds (10)
#
# NGINX_SRC=/path builds against another nginx source tree (a release or a
# checkout of nginx's repository), with the configure arguments of the
# nginx that TEST_NGINX_BINARY names, if set; BUILD_DIR moves the build;
# CC_OPT and LD_OPT add compiler and linker flags.

set -euo pipefail

repo=$(cd "$(dirname "$0")" && pwd)
build=${BUILD_DIR:-$repo/build}
nginx_src=${NGINX_SRC:-/usr/share/nginx/src}
so=ngx_http_webhook_lock_module.so

packages="nginx-core nginx-dev libhiredis-dev libcjson-dev redis-server
          redis-tools openssl libssl-dev libpcre2-dev zlib1g-dev gcc make
          perl"

missing_packages() {
    local p missing=""

    for p in $packages "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q "install ok installed" || missing="$missing $p"
    done

    echo $missing
}

deps() {
    local missing

    missing=$(missing_packages "$@")
    [ -n "$missing" ] || return 0

    if [ "$(id -u)" != 0 ]; then
        echo "missing packages; run:" >&2
        echo "    sudo apt-get install -y $missing" >&2
        exit 1
    fi

    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

configure() {
    local flags

    if [ -f "$nginx_src/conf_flags" ]; then
        # Debian's nginx-dev: the flags the packaged binary was built with
        flags=$(. "$nginx_src/conf_flags" && printf '%q ' "${NGX_CONF_FLAGS[@]}")

    elif [ -n "${TEST_NGINX_BINARY:-}" ]; then
        # the nginx the module is for: its own configure arguments, so
        # that both agree on --with-debug and the modules compiled in
        flags="--with-compat $("$TEST_NGINX_BINARY" -V 2>&1 \
                               | sed -n 's/^configure arguments: //p')"

    else
        flags="--with-compat"
    fi

    mkdir -p "$build/nginx"
    for f in auto src; do
        ln -sfn "$nginx_src/$f" "$build/nginx/$f"
    done

    # a release has ./configure, a checkout of nginx's repository
    # auto/configure
    if [ -f "$nginx_src/configure" ]; then
        ln -sfn "$nginx_src/configure" "$build/nginx/configure"
    else
        ln -sfn "$nginx_src/auto/configure" "$build/nginx/configure"
    fi

    if [ -f "$build/nginx/objs/Makefile" ] \
       && [ "$build/nginx/objs/Makefile" -nt "$repo/config" ] \
       && [ "$(cat "$build/cc_opt" 2>/dev/null)" = "${CC_OPT:-}" ]
    then
        return 0
    fi

    echo "${CC_OPT:-}" > "$build/cc_opt"

    (cd "$build/nginx" \
     && eval ./configure $flags \
            --with-cc-opt="'-Wall -Wextra -Werror ${CC_OPT:-}'" \
            --with-ld-opt="'${LD_OPT:-}'" \
            --add-dynamic-module="$repo" > "$build/configure.log" 2>&1) \
    || { tail -20 "$build/configure.log"; exit 1; }
}

build() {
    configure
    make -s -C "$build/nginx" -f objs/Makefile modules
    cp -p "$build/nginx/objs/$so" "$build/$so.tmp"
    mv -f "$build/$so.tmp" "$build/$so"
    echo "built $build/$so"
}

lint() {
    local rc=0 files

    files=$(ls "$repo"/src/*.[ch] "$repo/config")

    if grep -nE '.{81,}' $files; then
        echo "lint: lines over 80 columns" >&2; rc=1
    fi

    if grep -nP '\t' $files; then
        echo "lint: tabs" >&2; rc=1
    fi

    if grep -nE '[[:space:]]+$' $files; then
        echo "lint: trailing blanks" >&2; rc=1
    fi

    [ $rc = 0 ] && echo "lint: clean"
    return $rc
}

# as Debian's libnginx-mod-* packages: the module, a load file in
# modules-available, enabled by a link in modules-enabled; DESTDIR=/root
# installs under another root; MODULE_SO=/path installs that module, built
# already, instead of building one
install_module() {
    local root=${DESTDIR:-}
    local modules=/usr/lib/nginx/modules
    local available=/usr/share/nginx/modules-available
    local enabled=/etc/nginx/modules-enabled
    local load=mod-http-webhook-lock.conf
    local module=${MODULE_SO:-$build/$so}

    [ -n "${MODULE_SO:-}" ] || build
    mkdir -p "$root$modules" "$root$available" "$root$enabled"
    install -m 644 "$module" "$root$modules/$so"
    echo "load_module modules/$so;" > "$root$available/$load"
    ln -sfn "$available/$load" "$root$enabled/50-$load"
    echo "installed $root$modules/$so"
    echo "enabled by $root$enabled/50-$load (nginx -s reload to load it)"
}

run_bench() {
    deps wrk libnginx-mod-http-lua lua-cjson
    build
    MODULE_SO="$build/$so" BENCH_OUT="${BENCH_OUT:-$build/bench/results.md}" \
        exec "$repo/t/bench/run.sh" "$@"
}

run_tests() {
    deps
    build
    prove_with -- "$@"
}

# ASan and UBSan in the module only: Debian's nginx is not instrumented,
# so the harness preloads the runtime (TEST_NGINX_PRELOAD).  -z nodelete
# keeps the module mapped after nginx's dlclose() at exit, for LeakSanitizer
# and valgrind to name its functions in their reports.

asan() {
    local san="-fsanitize=address,undefined"

    build=${BUILD_DIR:-$repo/build/asan}

    deps
    CC_OPT="$san -fno-omit-frame-pointer -O1 ${CC_OPT:-}" \
    LD_OPT="$san -Wl,-z,nodelete ${LD_OPT:-}" \
        build

    prove_with TEST_NGINX_PRELOAD="$(readlink -f \
                   "$(${CC:-gcc} -print-file-name=libasan.so)")" -- "$@"
}

# Every file unless named: the suite waits on conditions, not on time,
# so valgrind's slowness only makes it longer (about 12 minutes).

valgrind_tests() {
    build=${BUILD_DIR:-$repo/build/valgrind}

    deps valgrind
    LD_OPT="-Wl,-z,nodelete ${LD_OPT:-}" build

    TEST_JOBS=${TEST_JOBS:-1} \
        prove_with TEST_NGINX_VALGRIND=1 -- "$@"
}


# prove, with the module just built and these variables: VAR=value ... --

prove_with() {
    local env=()

    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift

    cd "$repo"
    env "${env[@]}" TEST_NGINX_MODULE="$build/$so" \
        prove -j"${TEST_JOBS:-2}" -r "${@:-t/}"
}

# libFuzzer targets: the payload code against t/fuzz/ngx_shim.c, a shim of
# the nginx core functions it calls; nginx's configure writes the headers.
# New inputs go to build/fuzz/corpus, crashes to build/fuzz/crash-*.
# CJSON_SRC=/path/cJSON.c (the version Debian ships) builds cJSON into the
# targets, instrumented, instead of linking the system library.

fuzz_targets="path extract form signature"

fuzz() {
    local seconds=${1:-10} out t srcs cjson="-lcjson" rc=0

    [ $# -gt 0 ] && shift

    deps clang libclang-rt-dev
    configure

    out=$build/fuzz
    mkdir -p "$out"

    if [ -n "${CJSON_SRC:-}" ]; then
        mkdir -p "$out/cjson/cjson"
        ln -sfn "$(dirname "$(readlink -f "$CJSON_SRC")")/cJSON.h" \
            "$out/cjson/cjson/cJSON.h"
        cjson="-I $out/cjson $CJSON_SRC"
    fi

    for t in ${@:-$fuzz_targets}; do
        # the signature target includes the file it tests

        srcs="$repo/src/ngx_http_webhook_lock_payload.c"
        [ "$t" = extract ] \
            && srcs="$srcs $repo/src/ngx_http_webhook_lock_formats.c"

        ${FUZZ_CC:-clang} -g -O1 -fsanitize=fuzzer,address,undefined \
            -fno-sanitize-recover=undefined -Wall -Wno-unused-parameter \
            -I "$build/nginx/objs" -I "$repo/src" -I "$repo/t/fuzz" \
            $(for d in core event os/unix http http/modules \
                       http/v2; do echo "-I $nginx_src/src/$d"; done) \
            "$repo/t/fuzz/fuzz_$t.c" "$repo/t/fuzz/ngx_shim.c" $srcs \
            $cjson -lcrypto -o "$out/fuzz_$t"

        mkdir -p "$out/corpus/$t"

        # the seeds, regressions among them, run first, then new inputs

        "$out/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
            -max_len=65536 -print_final_stats=1 \
            -dict="$repo/t/fuzz/$t.dict" -artifact_prefix="$out/crash-$t-" \
            "$out/corpus/$t" "$repo/t/fuzz/corpus/$t" \
            > "$out/$t.log" 2>&1 \
        || { rc=1; tail -40 "$out/$t.log"; }

        echo "fuzz $t: $(grep -o 'stat::number_of_executed_units: [0-9]*' \
                          "$out/$t.log" | cut -d' ' -f2) runs," \
             "$(grep -Eo 'cov: [0-9]+' "$out/$t.log" | tail -1) edges," \
             "$(ls "$out/corpus/$t" | wc -l) inputs in $out/corpus/$t"
    done

    return $rc
}

cmd=${1:-build}
[ $# -gt 0 ] && shift

case "$cmd" in
    deps)     deps "$@" ;;
    build)    build ;;
    test)     run_tests "$@" ;;
    lint)     lint ;;
    install)  install_module ;;
    asan)     asan "$@" ;;
    valgrind) valgrind_tests "$@" ;;
    fuzz)     fuzz "$@" ;;
    demo)     deps; build; exec perl "$repo/t/demo/album.pl" "$build/$so" "$@" ;;
    bench)    run_bench "$@" ;;
    *)        sed -n '2,25p' "$0"; exit 2 ;;
esac
