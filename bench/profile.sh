#!/bin/sh
# make profile: callgrind of 2,000 sequential limitry calls and of 2,000 async calls at 64 in flight
# on Lua 5.4 (CALLS=N for another count); the top 30 functions of each, inclusive and exclusive, go
# to build/bench/profile.txt (see bench/profile.lua).
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4
mkdir -p build/bench
# A lua5.4 whose functions callgrind can name (bench/luahost.c); plain lua5.4 when the static
# library is missing.
LUA_A=/usr/lib/x86_64-linux-gnu/liblua5.4.a
if [ -f "$LUA_A" ]; then
  cc -std=c99 -O2 -g -Wall -Wextra -Werror -I/usr/include/lua5.4 -o build/bench/luahost bench/luahost.c \
    -Wl,-E "$LUA_A" -lm -ldl
fi
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
exec lua5.4 bench/profile.lua
