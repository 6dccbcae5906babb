#!/bin/sh
# The gateway scenario of issue #16 (bench/gateway.lua), about 3 minutes; BENCH_QUICK=1 for a short run.
#   sh bench/gateway.sh compare   only the gateway path against the bare proxy (about 1 minute)
#   sh bench/gateway.sh cost   CPU time per request, gateway path against bare proxy (bench/gateway_cost.lua)
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4 luajit >/dev/null
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;$PWD/?.lua;;" LUA_CPATH="$PWD/build/5.4/?.so;;"
export LIMITRY_TEST_TMP="${LIMITRY_TEST_TMP:-$PWD/.test-tmp}"
mkdir -p "$LIMITRY_TEST_TMP"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
ulimit -n 65536 2>/dev/null || true
if [ "${1:-}" = cost ]; then exec lua5.4 bench/gateway_cost.lua; fi
if [ "${1:-}" = compare ]; then exec lua5.4 bench/gateway.lua compare; fi
exec lua5.4 bench/gateway.lua ${BENCH_QUICK:+quick}
