#!/usr/bin/env bash
# Builds, tests and demonstrates ngx_http_webhook_lock_module.
#
#   ./build.sh [build]    the dynamic module, build/ngx_http_webhook_lock_module.so
#   ./build.sh deps       install the Debian packages it needs (root), or
#                         print the apt-get line
#   ./build.sh test       deps, build, then prove -r t/
#   ./build.sh demo       a live album burst through the gate (--keep to stay)
#   ./build.sh lint       line width, tabs and trailing blanks in src/, config
#   ./build.sh install    copy the module into nginx's modules directory
#
# NGINX_SRC=/path builds against another nginx source tree; BUILD_DIR moves
# the build; CC_OPT adds compiler flags (the sanitizer builds use it).

set -euo pipefail

repo=$(cd "$(dirname "$0")" && pwd)
build=${BUILD_DIR:-$repo/build}
nginx_src=${NGINX_SRC:-/usr/share/nginx/src}
so=ngx_http_webhook_lock_module.so

packages="nginx-core nginx-dev libhiredis-dev libcjson-dev redis-server
          libssl-dev libpcre2-dev zlib1g-dev gcc make perl"

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

    else
        flags="--with-compat"
    fi

    mkdir -p "$build/nginx"
    for f in auto src configure; do
        ln -sfn "$nginx_src/$f" "$build/nginx/$f"
    done

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

install_module() {
    local modules=/usr/lib/nginx/modules conf=/usr/share/nginx/modules-available

    build
    install -m 644 "$build/$so" "$modules/$so"
    mkdir -p "$conf"
    echo "load_module modules/$so;" > "$conf/mod-http-webhook-lock.conf"
    ln -sfn "$conf/mod-http-webhook-lock.conf" \
        /etc/nginx/modules-enabled/50-mod-http-webhook-lock.conf
    echo "installed $modules/$so"
    echo "enabled by /etc/nginx/modules-enabled/50-mod-http-webhook-lock.conf"
}

run_tests() {
    deps
    build
    cd "$repo"
    TEST_NGINX_MODULE="$build/$so" prove -j"${TEST_JOBS:-2}" -r "${@:-t/}"
}

cmd=${1:-build}
[ $# -gt 0 ] && shift

case "$cmd" in
    deps)     deps "$@" ;;
    build)    build ;;
    test)     run_tests "$@" ;;
    lint)     lint ;;
    install)  install_module ;;
    demo)     deps; build; exec perl "$repo/t/demo/album.pl" "$build/$so" "$@" ;;
    *)        sed -n '2,14p' "$0"; exit 2 ;;
esac
