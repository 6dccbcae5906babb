#!/bin/sh
# Gateway throughput in real nginx (see bench/openresty.lua): cosocket vs a raw ngx.socket.tcp GET
# vs the worker-thread transport, 200 concurrent requests, Limitry answering in 100 ms.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
sh tools/build.sh luajit
LUA_PATH="$(pwd)/lua/?.lua;$(pwd)/lua/?/init.lua;;" lua5.4 bench/openresty.lua
