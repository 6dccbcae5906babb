#!/bin/sh
# Runs bench/client.lua on Lua 5.4 and LuaJIT against a local server with the sample data.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh 5.4 luajit
DIR="$(pwd)/.test-tmp/bench-client"
mkdir -p "$DIR"
eval "$(lua5.4 server/limitry-local start --dir "$DIR")"
export LIMITRY_BASE_URL LIMITRY_API_KEY
trap 'lua5.4 server/limitry-local stop --dir "$DIR" >/dev/null' EXIT
for v in 5.4 luajit; do
  lua=lua$v; [ "$v" = luajit ] && lua=luajit
  LUA_PATH="$(pwd)/lua/?.lua;$(pwd)/lua/?/init.lua;;" LUA_CPATH="$(pwd)/build/$v/?.so;;" $lua bench/client.lua
  echo
done
