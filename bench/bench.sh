#!/bin/sh
# make bench: builds limitry.core (Lua 5.4, LuaJIT) and the C reference loops, then runs
# bench/bench.lua, which prints one markdown table. BENCH_QUICK=1 for a smoke run (under a minute).
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4 luajit
mkdir -p build/bench
for prog in curl_loop multi_loop; do
  cc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -pedantic -o "build/bench/$prog" "bench/$prog.c" -lcurl
done
# Proxies from the environment must not reroute loopback traffic.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
exec lua5.4 bench/bench.lua
